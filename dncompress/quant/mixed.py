"""Mixed precision: per-conv sensitivity (how much the heads move when that conv alone has its weights
rounded to b bits) and a greedy choice of widths under an average-bits budget (weighted by weights)."""
from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from ..errors import DncompressError
from ..network import Network
from .apply import QuantConfig, layer_bits, quantize_layer

WIDTHS = (2, 3, 4, 5, 6, 8)


@dataclasses.dataclass
class Sensitivity:
    """errors[index][bits]: relative squared head error, sum ||dy||^2 / sum ||y||^2 over the images."""
    weights: dict[int, int]                  # weight count per conv
    errors: dict[int, dict[int, float]]


def float_outputs(net: Network, image: np.ndarray) -> dict[int, np.ndarray]:
    """Every layer's output for one image (1, C, H, W), the image itself under -1."""
    outputs = {-1: image}
    for layer in net.layers:
        outputs[layer.index] = layer.forward([outputs[i] for i in layer.inputs])
    return outputs


def suffix_outputs(net: Network, outputs: dict[int, np.ndarray], replaced) -> list[np.ndarray]:
    """Head outputs with `replaced` running in place of its layer: the layers before it keep their float
    `outputs` (nothing upstream changes), so only the layers from it on run again."""
    outs = dict(outputs)
    for layer in net.layers[replaced.index:]:
        runner = replaced if layer.index == replaced.index else layer
        outs[layer.index] = runner.forward([outs[i] for i in layer.inputs])
    return [outs[i] for i in net.output_indices]


def sensitivity(net: Network, calib: np.ndarray, widths=WIDTHS,
                progress: Callable[[str], None] | None = None) -> Sensitivity:
    """Each conv alone at each width (round-to-nearest weights, float activations) on calib (N, C, H, W):
    the float outputs of every image are computed once, then only the layers from the rounded conv on run
    again (the layers before it are unchanged)."""
    convs = sorted(layer_bits(net, QuantConfig()))
    outputs = [float_outputs(net, np.ascontiguousarray(calib[n:n + 1], dtype=np.float32)) for n in range(len(calib))]
    references = [[o[i] for i in net.output_indices] for o in outputs]
    total = sum(float(np.square(r).sum()) for reference in references for r in reference)
    errors = {}
    for index in convs:
        errors[index] = {}
        for b in widths:
            rounded = quantize_layer(net, net.layers[index], b, QuantConfig(b, None), None, None)
            squared = sum(float(np.square(o - r).sum()) for out, reference in zip(outputs, references)
                          for o, r in zip(suffix_outputs(net, out, rounded), reference))
            errors[index][b] = squared / total
        if progress:
            progress(f"sensitivity layer {index}: " + " ".join(f"{b}b {e:.2e}" for b, e in errors[index].items()))
    weights = {i: int(np.prod(net.layers[i].param_shapes()["weights"])) for i in convs}
    return Sensitivity(weights, errors)


def allocate(sens: Sensitivity, budget: float, fixed: dict[int, int] | None = None) -> dict[int, int]:
    """Widths per conv with weighted average <= `budget` bits: start at the widest, then repeatedly narrow
    the conv whose next step down adds the least error per bit saved (errors taken as additive), then give
    back what that left under the budget (`give_back`)."""
    fixed = fixed or {}
    widths = {i: max(e) for i, e in sens.errors.items()}
    widths.update(fixed)
    total = sum(sens.weights.values())

    def average() -> float:
        return sum(widths[i] * n for i, n in sens.weights.items()) / total

    floor = sum((fixed.get(i) or min(e)) * sens.weights[i] for i, e in sens.errors.items()) / total
    if budget < floor:
        raise DncompressError(f"--budget-bits {budget:g} is below the narrowest allocation ({floor:.2f} average "
                              "bits with the first/last convs kept)")
    while average() > budget:
        best, best_cost = None, np.inf
        for i, e in sens.errors.items():
            narrower = [b for b in e if b < widths[i]]
            if i in fixed or not narrower:
                continue
            step = max(narrower)
            cost = (e[step] - e[widths[i]]) / ((widths[i] - step) * sens.weights[i])
            if cost < best_cost:
                best, best_cost = (i, step), cost
        widths[best[0]] = best[1]
    return give_back(sens, widths, budget, fixed)


def give_back(sens: Sensitivity, widths: dict[int, int], budget: float, fixed: dict[int, int]) -> dict[int, int]:
    """Spend what the narrowing left under the budget (one step on a conv holding half the weights moves the
    average by half a bit): repeatedly widen, by one step, the conv whose step removes the most error per bit
    added among those that still fit, until none fits."""
    total = sum(sens.weights.values())
    spare = budget * total - sum(widths[i] * n for i, n in sens.weights.items())
    while True:
        best, best_gain = None, 0.0
        for i, e in sens.errors.items():
            wider = [b for b in e if b > widths[i]]
            if i in fixed or not wider:
                continue
            step = min(wider)
            added = (step - widths[i]) * sens.weights[i]
            gain = (e[widths[i]] - e[step]) / added
            if added <= spare + 1e-9 * total and gain > best_gain:
                best, best_gain = (i, step, added), gain
        if best is None:
            return widths
        widths[best[0]], spare = best[1], spare - best[2]
