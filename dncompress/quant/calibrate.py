"""Ranges for weights (per channel or tensor) and activations (per tensor) by min-max, percentile or MSE."""
from __future__ import annotations

import numpy as np

from ..engine.quantize import affine_params, fake_quantize, signed_range, symmetric_scale, unsigned_range
from ..errors import DncompressError

METHODS = ("minmax", "percentile", "mse")
CLIP_RATIOS = np.linspace(0.3, 1.0, 36)
PERCENTILE = 99.99


def weight_clip(weights: np.ndarray, bits: int, per_channel: bool, method: str) -> np.ndarray:
    """Clipping magnitude per output channel (O,) or for the tensor (1,)."""
    flat = np.abs(weights.reshape(len(weights), -1) if per_channel else weights.reshape(1, -1)).astype(np.float64)
    top = flat.max(axis=1)
    if method == "minmax":
        return top
    if method == "percentile":
        return np.maximum(np.percentile(flat, PERCENTILE, axis=1), 1e-12)
    if method == "mse":
        qmin, qmax = signed_range(bits)
        errors = []
        for ratio in CLIP_RATIOS:
            scale = symmetric_scale(top * ratio, bits)[:, None]
            errors.append(((fake_quantize(flat, scale, 0, qmin, qmax) - flat) ** 2).sum(axis=1))
        return top * CLIP_RATIOS[np.argmin(np.array(errors), axis=0)]
    raise DncompressError(f"unknown calibration method '{method}'; use {', '.join(METHODS)}")


def activation_range(values: np.ndarray, bits: int, method: str, sample: int = 50_000,
                     seed: int = 0) -> tuple[float, float]:
    """(low, high) for an activation tensor seen on calibration images."""
    flat = values.reshape(-1).astype(np.float64)
    if flat.size > sample:
        flat = np.random.default_rng(seed).choice(flat, sample, replace=False)
    low, high = float(flat.min()), float(flat.max())
    if method == "minmax":
        return low, high
    if method == "percentile":
        return float(np.percentile(flat, 100 - PERCENTILE)), float(np.percentile(flat, PERCENTILE))
    if method == "mse":
        qmin, qmax = unsigned_range(bits)
        best, best_error = (low, high), np.inf
        for ratio in CLIP_RATIOS:
            scale, zero_point = affine_params(low * ratio, high * ratio, bits)
            error = float(((fake_quantize(flat, scale, zero_point, qmin, qmax) - flat) ** 2).mean())
            if error < best_error:
                best, best_error = (low * ratio, high * ratio), error
        return best
    raise DncompressError(f"unknown calibration method '{method}'; use {', '.join(METHODS)}")
