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


def gamma_summary(net: Network) -> dict:
    """|gamma| of all prunable BN layers: count, fraction below NEAR_ZERO, histogram over HISTOGRAM_EDGES."""
    gammas = [np.abs(net.layers[i].params["scales"]) for i in prunable_bn_layers(net)]
    values = np.concatenate(gammas) if gammas else np.zeros(0)
    counts, _ = np.histogram(values, bins=np.array(HISTOGRAM_EDGES))
    return {"count": int(values.size), "near_zero": float(np.mean(values < NEAR_ZERO)) if values.size else 0.0,
            "histogram": counts.tolist(), "edges": list(HISTOGRAM_EDGES)}


def format_gamma_summary(summary: dict) -> str:
    edges = summary["edges"]
    bins = " ".join(f"[{lo:g},{hi:g}):{n}" for lo, hi, n in zip(edges, edges[1:], summary["histogram"]))
    return f"|gamma| < {NEAR_ZERO}: {summary['near_zero']:.1%} of {summary['count']}; {bins}"
