"""Bias correction: remove the expected output shift that weight quantization introduces."""
from __future__ import annotations

import numpy as np


def output_shift(w: np.ndarray, w_quantized: np.ndarray, input_mean: np.ndarray, groups: int = 1) -> np.ndarray:
    """E[W_q x] - E[W x] = sum over (c, ky, kx) of (W_q - W) * E[x_c], per output channel: (O,).
    w, w_quantized: (O, C/groups, K, K); input_mean: (C,). Border zero padding is ignored."""
    out, per_group = w.shape[:2]
    delta = (w_quantized.astype(np.float64) - w).sum(axis=(2, 3)).reshape(groups, out // groups, per_group)
    mean = np.asarray(input_mean, np.float64).reshape(groups, per_group, 1)
    return np.einsum("goc,gcx->go", delta, mean).reshape(out)


def corrected_bias(bias: np.ndarray, w: np.ndarray, w_quantized: np.ndarray, input_mean: np.ndarray,
                   groups: int = 1) -> np.ndarray:
    """The (folded) bias minus the output shift, so the quantized conv keeps the float conv's mean."""
    return (bias - output_shift(w, w_quantized, input_mean, groups)).astype(np.float32)
