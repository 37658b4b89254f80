"""Batchnorm in training mode as Darknet computes it (blas.c mean_cpu/variance_cpu): batch mean, variance
with the unbiased 1/(N*H*W - 1), normalized with the same eps as inference.

Training's per-channel passes (statistics, normalization, bias, activation and their gradients) run over
cache-sized blocks (`activations.cache_blocks`): each step of a block is done while it stays in cache, where whole-array
steps went to memory and back once each (~10 passes per direction over the 320x320 and 160x160 maps)."""
from __future__ import annotations

import numpy as np

from .activations import cache_blocks

# Darknet's forward_batchnorm_layer blends the running statistics .99 old / .01 new (pjreddie and AlexeyAB CPU).
ROLLING_MOMENTUM = 0.99
def batch_moments(z: np.ndarray, channels: slice) -> tuple[np.ndarray, np.ndarray]:
    """z: (N, C, H*W) -> float64 (mean, unbiased variance) of `channels` over images and positions, block
    by block: each block's mean and centred sum of squares in cache, merged with Chan's pairwise update."""
    n, _, positions = z.shape
    width = channels.stop - channels.start
    count = np.zeros(width)
    mean, m2 = np.zeros(width), np.zeros(width)
    for i, cs, ps in cache_blocks(n, channels, positions):
        block = z[i, cs, ps]
        size = block.shape[1]
        block_mean = block.sum(axis=1) / size
        centred = block - block_mean.reshape(-1, 1)
        block_m2 = np.einsum("ij,ij->i", centred, centred)
        at = slice(cs.start - channels.start, cs.stop - channels.start)
        total = count[at] + size
        delta = block_mean - mean[at]
        mean[at] += delta * (size / total)
        m2[at] += block_m2 + delta * delta * (count[at] * size / total)
        count[at] = total
    return mean, m2 / np.maximum(count - 1, 1)
