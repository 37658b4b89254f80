"""From channel scores to which channels each conv keeps: global or per-layer ratio, floors, rounding."""
from __future__ import annotations

import math

import numpy as np

from ..errors import DncompressError
from .groups import Channel, ChannelGroup


def position_scores(group: ChannelGroup, scores: dict[int, np.ndarray]) -> np.ndarray:
    """A position is as important as its most important member channel."""
    return np.array([max(scores[conv][c] for conv, c in position) for position in group.positions])


def kept_count(group: ChannelGroup, wanted: int, min_keep: float, multiple: int) -> int:
    """Apply the floor (fraction of positions, at least 1) and round up so every member conv's filter
    count is a multiple of `multiple`."""
    n = len(group.positions)
    keep = max(wanted, math.ceil(min_keep * n), 1)
    per_position = min(group.multiplicity(conv) for conv in group.convs)
    step = multiple // math.gcd(multiple, per_position)
    return min(n, math.ceil(keep / step) * step)


def plan_pruning(groups: list[ChannelGroup], scores: dict[int, np.ndarray], ratio: float,
                 scope: str = "global", min_keep: float = 0.1, multiple: int = 1) -> set[Channel]:
    """The set of conv channels to keep. `global`: prune the `ratio` lowest-scoring prunable channels
    network-wide (counting a coupled position as its member channels); `layer`: `ratio` of each group."""
    if not 0 <= ratio < 1:
        raise DncompressError(f"--ratio {ratio} must be in [0, 1)")
    if not 0 <= min_keep <= 1:
        raise DncompressError(f"--min-keep {min_keep} must be a fraction in [0, 1]")
    prunable = [g for g in groups if g.prunable]
    per_group = [position_scores(g, scores) for g in prunable]
    wanted: list[int] = []
    if scope == "global":
        flat = np.concatenate(per_group) if per_group else np.zeros(0)
        weights = np.concatenate([np.full(len(g.positions), len(g.positions[0])) for g in prunable]) \
            if prunable else np.zeros(0)
        order = np.argsort(flat, kind="stable")
        pruned_channels = np.cumsum(weights[order])
        cut = int(np.searchsorted(pruned_channels, ratio * weights.sum(), side="right"))
        threshold = flat[order[cut]] if cut < len(flat) else np.inf
        wanted = [int((s >= threshold).sum()) for s in per_group]
    elif scope == "layer":
        wanted = [len(g.positions) - int(ratio * len(g.positions)) for g in prunable]
    else:
        raise DncompressError(f"unknown scope '{scope}'; use global or layer")
    keep: set[Channel] = {ch for g in groups if not g.prunable for pos in g.positions for ch in pos}
    for group, s, want in zip(prunable, per_group, wanted):
        count = kept_count(group, want, min_keep, multiple)
        for p in np.argsort(-s, kind="stable")[:count]:
            keep.update(group.positions[p])
    return keep
