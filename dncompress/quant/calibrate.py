"""Ranges for weights (per channel or tensor) and activations (per tensor) by min-max, percentile or MSE.
With calibration inputs, "mse" minimizes the layer's *output* error (clipping a weight that multiplies a
large input costs more than the weight error says); without them, the weight error."""
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


def output_error_clip(weights: np.ndarray, input_energy: np.ndarray, bits: int) -> np.ndarray:
    """Clip (O,) per row of weights (O, K) minimizing sum_k E[x_k^2] (w_k - q(w_k))^2, the output error
    when input errors are uncorrelated; input_energy (O, K) is diag(X X^T) for each row's inputs."""
    w = np.asarray(weights, np.float64)
    top = np.abs(w).max(axis=1)
    qmin, qmax = signed_range(bits)
    errors = [(input_energy * (fake_quantize(w, symmetric_scale(top * r, bits)[:, None], 0, qmin, qmax) - w) ** 2)
              .sum(axis=1) for r in CLIP_RATIOS]
    return top * CLIP_RATIOS[np.argmin(np.array(errors), axis=0)]


def output_error_range(columns: np.ndarray, weights: np.ndarray, low: float, high: float, bits: int, groups: int,
                       rows: int = 1024, seed: int = 0) -> tuple[float, float]:
    """Input range (low, high) minimizing ||(q(X) - X) W^T||^2 over up to `rows` sampled im2col rows
    X (P, C*k*k) of a conv with weights (O, C/g*k*k)."""
    if len(columns) > rows:
        columns = columns[np.random.default_rng(seed).choice(len(columns), rows, replace=False)]
    out, width = len(weights) // groups, weights.shape[1]
    w = np.asarray(weights, np.float32)
    qmin, qmax = unsigned_range(bits)
    best, best_error = (low, high), np.inf
    for ratio in CLIP_RATIOS[CLIP_RATIOS >= 0.5]:
        scale, zero_point = affine_params(low * ratio, high * ratio, bits)
        e = fake_quantize(columns, scale, zero_point, qmin, qmax) - columns
        error = sum(float(np.square(e[:, g * width:(g + 1) * width] @ w[g * out:(g + 1) * out].T).sum())
                    for g in range(groups))
        if error < best_error:
            best, best_error = (low * ratio, high * ratio), error
    return best
