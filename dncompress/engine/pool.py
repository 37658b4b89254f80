"""Pooling and resampling kernels with Darknet's padding conventions."""
from __future__ import annotations

import numpy as np

from ..threads import parallel
from .activations import cache_blocks
from .conv import pad_constant


# elements per thread below which splitting a maxpool costs more in handoff than it saves; a split by a
# fixed channel count left a pruned model's 12-channel 416x416 maxpool on one thread (16 channels: two)
MIN_ELEMENTS_PER_THREAD = 1 << 15


def channels_per_thread(x: np.ndarray) -> int:
    """The fewest channels of x (N, C, H, W) worth a thread of their own."""
    return max(1, MIN_ELEMENTS_PER_THREAD // max(1, x.shape[0] * x.shape[2] * x.shape[3]))


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
    n, c, h, w = x.shape
    ho, wo = maxpool_output_size(h, kernel, stride, padding), maxpool_output_size(w, kernel, stride, padding)
    if 1 < kernel == stride and padding // 2 == 0 and (h, w) == (ho * kernel, wo * kernel):
        return _tiled_maxpool(x, kernel)
    xp, _, span_h, span_w = maxpool_padded(x, kernel, stride, padding)
    out = np.empty((n, c, (span_h - 1) // stride + 1, (span_w - 1) // stride + 1), dtype=x.dtype)

    def part(sl: slice) -> None:
        """The channels sl, split over the engine's threads."""
        rows = xp[:, sl, 0:span_h:stride].copy()
        for dy in range(1, kernel):
            np.maximum(rows, xp[:, sl, dy:dy + span_h:stride], out=rows)
        np.copyto(out[:, sl], rows[..., 0:span_w:stride])
        for dx in range(1, kernel):
            np.maximum(out[:, sl], rows[..., dx:dx + span_w:stride], out=out[:, sl])
    parallel(part, c, channels_per_thread(x))
    return out


def _tiled_maxpool(x: np.ndarray, kernel: int) -> np.ndarray:
    """maxpool2d of k x k windows that tile x exactly (yolov3-tiny's 2x2/2): the max over each window's
    rows (contiguous), then over its columns, in cache-sized blocks (~1.8x faster than whole-array passes)."""
    n, c, h, w = x.shape
    ho, wo = h // kernel, w // kernel
    out = np.empty((n, c, ho, wo), dtype=x.dtype)
    x5 = x.reshape(n, c, ho, kernel, w)

    def part(sl: slice) -> None:
        for i, cs, rs in cache_blocks(n, sl, ho, kernel * w):
            rows = x5[i, cs, rs, 0].copy()
            for dy in range(1, kernel):
                np.maximum(rows, x5[i, cs, rs, dy], out=rows)
            best = np.maximum(rows[..., 0::kernel], rows[..., 1::kernel], out=out[i, cs, rs])
            for dx in range(2, kernel):
                np.maximum(best, rows[..., dx::kernel], out=best)
    parallel(part, c, channels_per_thread(x))
    return out


def upsample_nearest(x: np.ndarray, stride: int) -> np.ndarray:
    """x: (N, C, H, W) -> (N, C, H*s, W*s), each value repeated in an s x s block."""
    n, c, h, w = x.shape
    big = np.broadcast_to(x[:, :, :, None, :, None], (n, c, h, stride, w, stride))
    return big.reshape(n, c, h * stride, w * stride)


def global_avgpool(x: np.ndarray) -> np.ndarray:
    """x: (N, C, H, W) -> (N, C, 1, 1)."""
    return x.mean(axis=(2, 3), keepdims=True, dtype=np.float32)
