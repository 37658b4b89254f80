"""Channel importance scores, one per channel of every conv: higher = more important."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..errors import DncompressError
from ..network import Network


def bn_gamma(net: Network, **_) -> dict[int, np.ndarray]:
    """Network slimming: |BN gamma|. Convs without BN (in the usual cfgs only the detection heads, which
    are never pruned) fall back to |bias| so every conv has a score."""
    return {layer.index: np.abs(layer.params["scales"] if layer.batch_normalize else layer.params["biases"])
            for layer in net.layers if layer.is_conv}


def _weight_norm(net: Network, order: int) -> dict[int, np.ndarray]:
    """Norm of each filter of the folded conv (BN scale included, so filters compare across layers
    only through what they actually output)."""
    return {layer.index: np.linalg.norm(layer.folded()[0].reshape(layer.filters, -1), ord=order, axis=1)
            for layer in net.layers if layer.is_conv}


def l1_norm(net: Network, **_) -> dict[int, np.ndarray]:
    return _weight_norm(net, 1)


def l2_norm(net: Network, **_) -> dict[int, np.ndarray]:
    return _weight_norm(net, 2)


def activation_mean(net: Network, calib: np.ndarray | None = None, **_) -> dict[int, np.ndarray]:
    """Mean |output| of each channel over calibration images (N, C, H, W)."""
    if calib is None:
        raise DncompressError("--criterion activation needs calibration images (--calib DIR)")
    convs = [layer.index for layer in net.layers if layer.is_conv]
    outputs = net.forward(calib, keep=set(convs))
    return {i: np.abs(out).mean(axis=(0, 2, 3)) for i, out in zip(sorted(convs), outputs)}


def random_scores(net: Network, seed: int = 0, **_) -> dict[int, np.ndarray]:
    """A baseline: random importance (a pruning method should beat it)."""
    rng = np.random.default_rng(seed)
    return {layer.index: rng.random(layer.filters)
            for layer in net.layers if layer.is_conv}


CRITERIA: dict[str, Callable[..., dict[int, np.ndarray]]] = {
    "bn": bn_gamma, "l1": l1_norm, "l2": l2_norm, "activation": activation_mean, "random": random_scores,
}
