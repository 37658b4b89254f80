"""Per-group sensitivity: prune one channel group at a time at several ratios and measure accuracy."""
from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from ..network import Network
from ..progress import Progress, sink
from .apply import prune_network
from .groups import ChannelGroup, channel_groups
from .plan import position_scores


def keep_for_one_group(groups: list[ChannelGroup], target: ChannelGroup, scores, ratio: float) -> set:
    """Keep everything except the lowest-scoring `ratio` of `target`'s positions (at least one stays)."""
    keep = {ch for g in groups if g is not target for pos in g.positions for ch in pos}
    s = position_scores(target, scores)
    count = max(1, len(s) - int(ratio * len(s)))
    for p in np.argsort(-s, kind="stable")[:count]:
        keep.update(target.positions[p])
    return keep


def sensitivity(net: Network, scores, ratios: list[float], measure: Callable[[Network], float],
                progress: Progress | bool | None = None) -> dict[int, list[float]]:
    """{first conv of each prunable group: [accuracy at each ratio]} with every other group untouched."""
    groups = channel_groups(net)
    prunable = [g for g in groups if g.prunable]
    table = {}
    report, done = sink(progress), 0
    for group in prunable:
        row = []
        for ratio in ratios:
            row.append(measure(prune_network(net, keep_for_one_group(groups, group, scores, ratio))))
            done += 1
            report("sensitivity", done, len(prunable) * len(ratios))
        table[group.convs[0]] = row
    return table


def plot_sensitivity(table: dict[int, list[float]], ratios: list[float], baseline: float,
                     width: int = 800, height: int = 500) -> np.ndarray:
    """A BGR line chart: accuracy vs pruning ratio, one line per group, baseline dashed."""
    img = np.full((height, width, 3), 255, np.uint8)
    left, right, top, bottom = 60, 150, 20, 50
    top_value = max([baseline, *[v for row in table.values() for v in row]]) or 1.0

    def point(ratio: float, value: float) -> tuple[int, int]:
        x = left + (width - left - right) * ratio
        y = height - bottom - (height - top - bottom) * value / top_value
        return int(round(x)), int(round(y))

    cv2.rectangle(img, (left, top), (width - right, height - bottom), (0, 0, 0), 1)
    for ratio in ratios:
        x, y = point(ratio, 0)
        cv2.putText(img, f"{ratio:g}", (x - 10, y + 20), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)
    cv2.putText(img, "pruning ratio of one group", (left + 150, height - 10), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                (0, 0, 0), 1)
    cv2.putText(img, f"{top_value:.3f}", (5, top + 10), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)
    for x in range(left, width - right, 12):
        cv2.line(img, (x, point(0, baseline)[1]), (x + 6, point(0, baseline)[1]), (120, 120, 120), 1)
    for n, (conv, row) in enumerate(sorted(table.items())):
        hue = (n * 37) % 180
        color = cv2.cvtColor(np.uint8([[[hue, 230, 200]]]), cv2.COLOR_HSV2BGR)[0, 0].tolist()
        points = [point(r, v) for r, v in zip([0.0, *ratios], [baseline, *row])]
        for a, b in zip(points, points[1:]):
            cv2.line(img, a, b, color, 2)
        cv2.putText(img, f"layer {conv}", (width - right + 10, top + 15 + 16 * n), cv2.FONT_HERSHEY_SIMPLEX,
                    0.45, color, 1)
    return img
