"""Network Slimming: an L1 penalty on the BN scaling factors (gammas) of prunable convs, and its log."""
from __future__ import annotations

import numpy as np

from ..network import Network

NEAR_ZERO = 0.01
HISTOGRAM_EDGES = (0.0, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, np.inf)


def prunable_bn_layers(net: Network) -> list[int]:
    """Indices of BN convs whose output does not feed a [yolo]/[region] head (those keep every channel)."""
    return [layer.index for layer in net.layers
            if getattr(layer, "batch_normalize", False) and not net.graph.feeds_head(layer.index)]


def add_l1_subgradient(net: Network, grads: dict[int, dict[str, np.ndarray]], strength: float, batch: int) -> None:
    """grads (summed over `batch` images) += batch * strength * sign(gamma): S*sign(gamma) per image on average."""
    for index in prunable_bn_layers(net):
        if index in grads:
            grads[index]["scales"] = grads[index]["scales"] + batch * strength * np.sign(net.layers[index].params["scales"])


def prunable_gammas(net: Network) -> np.ndarray:
    """|gamma| of all prunable BN layers, in one array."""
    gammas = [np.abs(net.layers[i].params["scales"]) for i in prunable_bn_layers(net)]
    return np.concatenate(gammas) if gammas else np.zeros(0)


def gamma_summary(net: Network) -> dict:
    """|gamma| of all prunable BN layers: count, fraction below NEAR_ZERO, histogram over HISTOGRAM_EDGES."""
    values = prunable_gammas(net)
    counts, _ = np.histogram(values, bins=np.array(HISTOGRAM_EDGES))
    return {"count": int(values.size), "near_zero": float(np.mean(values < NEAR_ZERO)) if values.size else 0.0,
            "histogram": counts.tolist(), "edges": list(HISTOGRAM_EDGES)}


def format_gamma_summary(summary: dict) -> str:
    edges = summary["edges"]
    bins = " ".join(f"[{lo:g},{hi:g}):{n}" for lo, hi, n in zip(edges, edges[1:], summary["histogram"]))
    return f"|gamma| < {NEAR_ZERO}: {summary['near_zero']:.1%} of {summary['count']}; {bins}"


def l1_reach(schedule, strength: float, updates: int) -> float:
    """How far the L1 term alone moves a gamma over `updates` updates of a new run (batch numbers 1..updates)
    under Darknet's SGD (v = m v - S; w += rate v): S * sum_k rate(k) * (1 - m^k) / (1 - m). Other gradients
    can hold a gamma up; nothing in the update moves it further than this."""
    k = np.arange(1, updates + 1)
    rates = np.array([schedule.rate(int(i)) for i in k])
    m = schedule.momentum
    build_up = k.astype(float) if m == 1 else (1 - m ** k) / (1 - m)
    return float(strength * np.sum(rates * build_up))


def sparsity_advice(net: Network, schedule, strength: float, updates: int) -> str | None:
    """A warning when --sparsity can push a typical gamma to zero by itself in this run (what collapsed
    yolov3-tiny in docs/pruning.md), a note when it can move hardly any gamma; None in between."""
    gammas = prunable_gammas(net)
    if not strength or not gammas.size or updates < 1:
        return None
    median = float(np.median(gammas))
    reach = l1_reach(schedule, strength, updates)
    tail = f"over {updates} updates the L1 term alone moves each |gamma| by up to {reach:.3g} (median |gamma| " \
           f"{median:.3g})"
    if reach > median:
        return (f"warning: --sparsity {strength:g}: {tail}, enough to zero most channels before the loss can "
                f"hold them: the model may collapse (docs/pruning.md); about {strength * 0.5 * median / reach:.2g} "
                "moves them by half the median")
    if reach < 0.05 * median:
        return (f"note: --sparsity {strength:g}: {tail}, too little to bring channels near zero in this run; "
                "raise it, the epochs or --lr")
    return None
