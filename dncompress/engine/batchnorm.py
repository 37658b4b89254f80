"""Batchnorm in training mode as Darknet computes it (blas.c mean_cpu/variance_cpu): batch mean, variance
with the unbiased 1/(N*H*W - 1), normalized with the same eps as inference."""
from __future__ import annotations

import numpy as np

# Darknet's forward_batchnorm_layer blends the running statistics .99 old / .01 new (pjreddie and AlexeyAB CPU).
ROLLING_MOMENTUM = 0.99


def batchnorm_train(z: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """z: (N, C, H, W), normalized in place (callers pass their own conv output; this saves an array the
    size of the layer's output) -> (z normalized, batch mean (C,), unbiased batch variance (C,))."""
    count = z.shape[0] * z.shape[2] * z.shape[3]
    mean = z.mean(axis=(0, 2, 3))
    z -= mean.astype(z.dtype, copy=False).reshape(1, -1, 1, 1)
    var = np.einsum("nchw,nchw->c", z, z) / max(count - 1, 1)
    inv = (1 / np.sqrt(var + eps)).astype(z.dtype)
    z *= inv.reshape(1, -1, 1, 1)
    return z, mean, var


def batchnorm_train_backward(d_norm: np.ndarray, norm: np.ndarray, var: np.ndarray, eps: float) -> np.ndarray:
    """Gradient w.r.t. z of batchnorm_train's normalized output, given d_norm and norm (N, C, H, W)."""
    count = norm.shape[0] * norm.shape[2] * norm.shape[3]
    inv = (1 / np.sqrt(var + eps)).astype(norm.dtype).reshape(1, -1, 1, 1)
    mean_d = d_norm.mean(axis=(0, 2, 3)).reshape(1, -1, 1, 1)
    proj = (np.einsum("nchw,nchw->c", d_norm, norm) / max(count - 1, 1)).reshape(1, -1, 1, 1)
    return inv * (d_norm - mean_d - norm * proj)
