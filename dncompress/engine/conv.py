"""Convolution as one BLAS matmul per image: W (O, C*k*k) @ im2col(x) (C*k*k, Ho*Wo)."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.lib.stride_tricks import as_strided

from ..threads import parallel
from .activations import in_blocks

# output channels per thread below which a split costs more in handoff than it saves
MIN_CHANNELS_PER_THREAD = 8
# Convs with at most this many im2col rows (C*k*k: yolov3-tiny's first three 3x3 layers) build their columns
# a band of output rows at a time, COLUMN_BLOCK elements (512 KB in float32) per band, which stays in cache
# from the copy to the GEMM: the whole-image columns went to memory and back, and at 3-32 input channels
# that traffic, not the multiplies, was the conv's time (layer 0 at batch 1: 8.9 -> 5.8 ms CPU). Wider
# reductions (more rows) make the GEMM dominate, and bands of few columns would slow it.
BLOCKED_MAX_ROWS = 512
# inference bands convs up to this many rows: a pruned 57 -> 113 conv at 52x52 (513 rows) took 4.5 ms
# through the whole-image GEMM, 3.9 ms banded (the unpruned 64 -> 128 the same either way); training's
# backward keeps BLOCKED_MAX_ROWS
FORWARD_MAX_ROWS = 1024
COLUMN_BLOCK = 1 << 17
# at most this many output pixels per band: with 27 rows (3 input channels) 512 KB of columns are ~4,800
# pixels, and OpenBLAS ran that GEMM at half the speed of one of ~2,000 (3 -> 16 conv at 416x416, 1 thread:
# 6.4 -> 5.4 ms)
BAND_PIXELS = 2048


def pad_constant(x: np.ndarray, top: int, bottom: int, left: int, right: int,
                 value: float = 0.0) -> np.ndarray:
    """x: (N, C, H, W) framed with `value`; one allocation and one copy (np.pad is several times slower)."""
    if not (top or bottom or left or right):
        return x
    n, c, h, w = x.shape
    out = np.empty((n, c, h + top + bottom, w + left + right), dtype=x.dtype)
    out[:, :, :top] = value
    out[:, :, h + top:] = value
    out[:, :, top:h + top, :left] = value
    out[:, :, top:h + top, w + left:] = value
    out[:, :, top:h + top, left:w + left] = x
    return out


def conv_output_size(size: int, kernel: int, stride: int, pad: int) -> int:
    return (size + 2 * pad - kernel) // stride + 1


def im2col(x: np.ndarray, kernel: int, stride: int, pad: int, value: float = 0.0) -> np.ndarray:
    """x: (N, C, H, W) -> (N, C*k*k, Ho*Wo), rows ordered (c, ky, kx) like Darknet's weights; padded
    cells hold `value`."""
    n, c, h, w = x.shape
    ho, wo = conv_output_size(h, kernel, stride, pad), conv_output_size(w, kernel, stride, pad)
    xp = pad_constant(x, pad, pad, pad, pad, value)
    sn, sc, sh, sw = xp.strides
    view = as_strided(xp, (n, c, kernel, kernel, ho, wo), (sn, sc, sh, sw, sh * stride, sw * stride),
                      writeable=False)
    return view.reshape(n, c * kernel * kernel, ho * wo)


def conv_columns(x: np.ndarray, kernel: int, stride: int, pad: int) -> tuple[np.ndarray, int, int]:
    """(im2col(x) (N, C*k*k, Ho*Wo), Ho, Wo); a 1x1 stride-1 conv's columns are x itself, reshaped."""
    n, c, h, w = x.shape
    ho, wo = conv_output_size(h, kernel, stride, pad), conv_output_size(w, kernel, stride, pad)
    if kernel == 1 and stride == 1 and pad == 0:
        return x.reshape(n, c, h * w), ho, wo
    return im2col(x, kernel, stride, pad), ho, wo


# OpenBLAS's sgemm is several times slower when a product's row count (our output channels, its N) leaves
# a remainder of 1-3 after multiples of 4 AND the reduction is short: 3 -> 11 channels at 416x416 (27 taps)
# took 7.1 ms, 3 -> 12 took 4.8 ms (a pruned model's first conv; measured, 1 thread)
GEMM_ROWS_MULTIPLE = 4


def gemm_rows(w_mat: np.ndarray) -> np.ndarray:
    """w_mat (O, K) with zero rows appended up to a multiple of GEMM_ROWS_MULTIPLE (itself if O is one)."""
    extra = -len(w_mat) % GEMM_ROWS_MULTIPLE
    if not extra:
        return w_mat
    return np.concatenate([w_mat, np.zeros((extra, w_mat.shape[1]), w_mat.dtype)])


def banded_rows(channels: int, kernel: int, groups: int, ho: int, wo: int, max_rows: int | None = None) -> int:
    """Output rows per band when a conv of these shapes is banded (up to `max_rows` im2col rows, default
    BLOCKED_MAX_ROWS; conv2d passes FORWARD_MAX_ROWS), else 0."""
    rows = channels * kernel * kernel
    max_rows = BLOCKED_MAX_ROWS if max_rows is None else max_rows
    if groups != 1 or kernel == 1 or rows > max_rows or rows * ho * wo <= 2 * COLUMN_BLOCK:
        return 0
    return band_height(rows, wo)


def band_height(rows: int, wo: int) -> int:
    """Output rows per band of conv2d_banded: COLUMN_BLOCK elements of columns, at most BAND_PIXELS pixels."""
    return max(1, min(COLUMN_BLOCK // rows, BAND_PIXELS) // wo)


def conv2d(x: np.ndarray, weights: np.ndarray, bias: np.ndarray | None, stride: int, pad: int,
           groups: int = 1, activation: Callable[[np.ndarray], np.ndarray] | None = None) -> np.ndarray:
    """x: (N, C, H, W), weights: (O, C/groups, k, k), bias: (O,) -> (N, O, Ho, Wo) in x's dtype, with
    `activation` (in place) applied. Ungrouped convs split the GEMM, bias and activation by output channel
    over the engine's threads (threads.parallel)."""
    n, c, h, w = x.shape
    out_c, _, kernel, _ = weights.shape
    ho, wo = conv_output_size(h, kernel, stride, pad), conv_output_size(w, kernel, stride, pad)
    if banded_rows(c, kernel, groups, ho, wo, FORWARD_MAX_ROWS):
        return conv2d_banded(x, weights, bias, stride, pad, activation)
    if uses_kn2row(c, out_c, kernel, stride, groups):
        return conv2d_kn2row(x, weights, bias, pad, activation)
    cols, ho, wo = conv_columns(x, kernel, stride, pad)
    if groups != 1:
        ci, co = c // groups, out_c // groups
        cols = cols.reshape(n, groups, ci * kernel * kernel, ho * wo)
        y = np.matmul(weights.reshape(groups, co, ci * kernel * kernel), cols).reshape(n, out_c, ho, wo)
        if bias is not None:
            y += bias.reshape(1, out_c, 1, 1)
        return activation(y) if activation else y
    w_mat = weights.reshape(out_c, -1)
    y = np.empty((n, out_c, ho * wo), dtype=np.result_type(x, weights))

    def part(sl: slice) -> None:
        out = y[:, sl]
        np.matmul(w_mat[sl], cols, out=out)
        if bias is not None:
            out += bias[sl].reshape(1, -1, 1)
        if activation:
            in_blocks(activation, out)
    parallel(part, out_c, MIN_CHANNELS_PER_THREAD, align=GEMM_ROWS_MULTIPLE)
    return y.reshape(n, out_c, ho, wo)


def conv2d_banded(x: np.ndarray, weights: np.ndarray, bias: np.ndarray | None, stride: int, pad: int,
                  activation: Callable[[np.ndarray], np.ndarray] | None = None) -> np.ndarray:
    """conv2d (ungrouped) with the columns of one band of output rows at a time (see BLOCKED_MAX_ROWS);
    the (image, band) pairs are split over the engine's threads, each with its own band buffer. The bias
    rides in the GEMM (a row of ones under the band's columns) and the activation runs on the band's
    product while it is in cache: the output is written once, not read and written again by each pass
    (a 3 -> 11 conv at 416x416: 5.4 -> 4.5 ms, 16 -> 32 at 208x208: 9.8 -> 7.1 ms; 1 thread)."""
    n, c, h, w = x.shape
    out_c, _, kernel, _ = weights.shape
    ho, wo = conv_output_size(h, kernel, stride, pad), conv_output_size(w, kernel, stride, pad)
    rows = c * kernel * kernel
    band = band_height(rows, wo)
    bands = -(-ho // band)
    xp = pad_constant(x, pad, pad, pad, pad)
    _, sc, sh, sw = xp.strides
    w_mat = weights.reshape(out_c, rows)
    if bias is not None:
        w_mat = np.concatenate([w_mat, bias.reshape(out_c, 1).astype(w_mat.dtype)], axis=1)
    w_mat = gemm_rows(w_mat)
    depth = w_mat.shape[1]  # rows, and the ones row when there is a bias
    dtype = np.result_type(x, weights)
    y = np.empty((n, out_c, ho * wo), dtype=dtype)

    def part(sl: slice) -> None:
        buffer = np.empty(depth * band * wo, dtype=dtype)
        product = np.empty((len(w_mat), band * wo), dtype=dtype)
        for job in range(sl.start, sl.stop):
            i, r0 = divmod(job, bands)
            r0 *= band
            r1 = min(ho, r0 + band)
            size = (r1 - r0) * wo
            view = as_strided(xp[i, :, r0 * stride:], (c, kernel, kernel, r1 - r0, wo),
                              (sc, sh, sw, sh * stride, sw * stride), writeable=False)
            cols = buffer[:depth * size].reshape(depth, size)
            np.copyto(cols[:rows].reshape(view.shape), view)
            cols[rows:] = 1
            out = np.matmul(w_mat, cols, out=product[:, :size])[:out_c]
            if activation:
                activation(out)
            np.copyto(y[i, :, r0 * wo:r1 * wo], out)
    parallel(part, n * bands)
    return y.reshape(n, out_c, ho, wo)


def uses_kn2row(channels: int, out_channels: int, kernel: int, stride: int, groups: int) -> bool:
    """conv2d goes through conv2d_kn2row: stride-1 k x k convs with at most a quarter as many outputs as
    inputs (a pruned model's narrowed last convs: 384 -> 51 at 26x26 took 3.7 ms with im2col, 2.2 ms so)."""
    return kernel > 1 and stride == 1 and groups == 1 and 4 * out_channels <= channels


def conv2d_kn2row(x: np.ndarray, weights: np.ndarray, bias: np.ndarray | None, pad: int,
                  activation: Callable[[np.ndarray], np.ndarray] | None = None) -> np.ndarray:
    """Stride-1 conv2d as one GEMM of all k*k taps' weights (k*k*O, C) with the padded input, flattened
    (C, Hp*Wp), then for each tap its product shifted by the tap's offset summed into the output: the
    im2col copy (k*k*C rows) is replaced by k*k*O rows of sums, cheaper when O is small beside C. Outputs
    are computed over the padded width and cropped. GEMM rows and output channels split over the threads."""
    n, c, h, w = x.shape
    out_c, _, kernel, _ = weights.shape
    ho, wo = conv_output_size(h, kernel, 1, pad), conv_output_size(w, kernel, 1, pad)
    xp = pad_constant(x, pad, pad + 1, pad, pad)  # a spare row: the last taps' flat slices stay inside
    hp, wp = xp.shape[2:]
    span = ho * wp
    taps = np.ascontiguousarray(weights.transpose(2, 3, 0, 1)).reshape(kernel * kernel * out_c, c)
    dtype = np.result_type(x, weights)
    y = np.empty((n, out_c, ho, wo), dtype=dtype)
    z = np.empty((kernel * kernel * out_c, hp * wp), dtype=dtype)
    for i in range(n):
        flat = xp[i].reshape(c, hp * wp)

        def gemm_part(sl: slice) -> None:
            np.matmul(taps[sl], flat, out=z[sl])
        parallel(gemm_part, len(taps), MIN_CHANNELS_PER_THREAD)

        def sum_part(sl: slice) -> None:
            acc = z[sl, :span].copy()
            for tap in range(1, kernel * kernel):
                ky, kx = divmod(tap, kernel)
                offset = ky * wp + kx
                acc += z[tap * out_c + sl.start:tap * out_c + sl.stop, offset:offset + span]
            out = acc.reshape(-1, ho, wp)[:, :, :wo]
            if bias is not None:
                out += bias[sl].reshape(-1, 1, 1)
            if activation:
                activation(out)
            y[i, sl] = out
        parallel(sum_part, out_c, MIN_CHANNELS_PER_THREAD)
    return y


# Winograd F(2x2, 3x3) (Lavin & Gray 2016): 16 multiplies per 2x2 outputs instead of 36, and a 4x (not 9x)
# expansion of the input, so both the GEMMs and the memory traffic shrink. Transform entries are 0, +-1
# and +-1/2, so float32 error stays at the 1e-7 level.
WINOGRAD_G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]])


def winograd_weights(weights: np.ndarray) -> np.ndarray:
    """weights: (O, C, 3, 3) -> U: (16, O, C) = G w G^T per filter, computed in float64."""
    # two tensordots (BLAS) over the taps: the one einsum over the 4-index product took ~1.8 s on a
    # 1024x512 layer (loaded machine), the first forward's cost
    rows = np.tensordot(weights.astype(np.float64), WINOGRAD_G, axes=([2], [1]))  # (O, C, kx, i)
    u = np.tensordot(rows, WINOGRAD_G, axes=([2], [1]))  # (O, C, i, j)
    return np.ascontiguousarray(u.transpose(2, 3, 0, 1).reshape(16, *weights.shape[:2]), dtype=np.float32)


def _input_transform(d0, d1, d2, d3):
    """B^T d along one axis: four shifted slices in, four transformed slices out."""
    return d0 - d2, d1 + d2, d2 - d1, d1 - d3


def conv3x3_winograd(x: np.ndarray, u: np.ndarray, bias: np.ndarray | None, pad: int,
                     activation: Callable[[np.ndarray], np.ndarray] | None = None) -> np.ndarray:
    """x: (N, C, H, W), u: winograd_weights(w) -> (N, O, Ho, Wo) for a 3x3 stride-1 convolution, in x's
    dtype, `activation` applied. The GEMM, output transform, bias and activation are split by output
    channel over the engine's threads."""
    n, c, h, w = x.shape
    out_c = u.shape[1]
    dtype = np.result_type(x, u)
    ho, wo = h + 2 * pad - 2, w + 2 * pad - 2
    th, tw = (ho + 1) // 2, (wo + 1) // 2
    xp = pad_constant(x, pad, 2 * th + 2 - h - pad, pad, 2 * tw + 2 - w - pad)
    v = np.empty((4, 4, c, n, th, tw), dtype=dtype)

    def transform(sl: slice) -> None:
        """B^T d B of the input channels sl, both axes."""
        rows = _input_transform(*(xp[:, sl, i:i + 2 * th:2] for i in range(4)))
        for i, row in enumerate(rows):
            for j, col in enumerate(_input_transform(*(row[..., k:k + 2 * tw:2] for k in range(4)))):
                v[i, j, sl] = col.transpose(1, 0, 2, 3)
    parallel(transform, c, MIN_CHANNELS_PER_THREAD)
    v = v.reshape(16, c, n * th * tw)
    y = np.empty((n, out_c, th, 2, tw, 2), dtype=dtype)

    def part(sl: slice) -> None:
        o = sl.stop - sl.start
        m = np.matmul(u[:, sl], v).reshape(4, 4, o, n, th, tw)
        out = y[:, sl]
        # A^T m A with A^T = [[1, 1, 1, 0], [0, 1, -1, -1]], first along rows then columns
        for a, t in enumerate((m[0] + m[1] + m[2], m[1] - m[2] - m[3])):
            out[:, :, :, a, :, 0] = (t[0] + t[1] + t[2]).transpose(1, 0, 2, 3)
            out[:, :, :, a, :, 1] = (t[1] - t[2] - t[3]).transpose(1, 0, 2, 3)
        if bias is not None:
            out += bias[sl].reshape(1, o, 1, 1, 1, 1)
        if activation:
            in_blocks(activation, out)
    parallel(part, out_c, MIN_CHANNELS_PER_THREAD)
    y = y.reshape(n, out_c, 2 * th, 2 * tw)
    if 2 * th != ho or 2 * tw != wo:
        y = np.ascontiguousarray(y[:, :, :ho, :wo])
    return y
