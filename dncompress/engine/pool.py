"""Pooling and resampling kernels with Darknet's padding conventions."""
from __future__ import annotations

import numpy as np

from ..threads import parallel
from .conv import pad_constant


def maxpool_output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """Darknet: (size + padding - kernel) / stride + 1, padding defaulting to kernel - 1."""
    return (size + padding - kernel) // stride + 1


def maxpool_padded(x: np.ndarray, kernel: int, stride: int, padding: int) -> tuple[np.ndarray, int, int, int]:
    """x framed with -inf as Darknet's windows need: (padded x, top/left pad, row span, column span), where
    window tap (dy, dx) of every output is xp[:, :, dy:dy + span_h:stride, dx:dx + span_w:stride]."""
    n, c, h, w = x.shape
    ho, wo = maxpool_output_size(h, kernel, stride, padding), maxpool_output_size(w, kernel, stride, padding)
    before = padding // 2
    after_h = max(0, (ho - 1) * stride + kernel - h - before)
    after_w = max(0, (wo - 1) * stride + kernel - w - before)
    xp = pad_constant(x, before, after_h, before, after_w, value=-np.inf)
    return xp, before, (ho - 1) * stride + 1, (wo - 1) * stride + 1


def maxpool2d(x: np.ndarray, kernel: int, stride: int, padding: int) -> np.ndarray:
    """x: (N, C, H, W). Darknet maxpool: windows start at -padding/2; out-of-image cells never win.
    Separable running max: over the k row-shifted strided slices, then the k column-shifted ones
    (2k passes instead of k*k; sliding_window_view + max is ~17x slower)."""
    xp, _, span_h, span_w = maxpool_padded(x, kernel, stride, padding)
    n, c = x.shape[:2]
    out = np.empty((n, c, (span_h - 1) // stride + 1, (span_w - 1) // stride + 1), dtype=x.dtype)

    def part(sl: slice) -> None:
        """The channels sl, split over the engine's threads."""
        rows = xp[:, sl, 0:span_h:stride].copy()
        for dy in range(1, kernel):
            np.maximum(rows, xp[:, sl, dy:dy + span_h:stride], out=rows)
        np.copyto(out[:, sl], rows[..., 0:span_w:stride])
        for dx in range(1, kernel):
            np.maximum(out[:, sl], rows[..., dx:dx + span_w:stride], out=out[:, sl])
    parallel(part, c, 8)
    return out


def upsample_nearest(x: np.ndarray, stride: int) -> np.ndarray:
    """x: (N, C, H, W) -> (N, C, H*s, W*s), each value repeated in an s x s block."""
    n, c, h, w = x.shape
    big = np.broadcast_to(x[:, :, :, None, :, None], (n, c, h, stride, w, stride))
    return big.reshape(n, c, h * stride, w * stride)


def global_avgpool(x: np.ndarray) -> np.ndarray:
    """x: (N, C, H, W) -> (N, C, 1, 1)."""
    return x.mean(axis=(2, 3), keepdims=True, dtype=np.float32)
