"""Sum-and-Max (SAM) convolution: o = max_i(x_i + W+_i) + min_i(x_i + W-_i) over each receptive field,
additions and comparisons instead of multiplications. Padded cells are -inf for the max and +inf for
the min, so they never win; dtype-generic (float64 for gradient checks)."""
from __future__ import annotations

import numpy as np

from .backward import col2im
from .conv import conv_output_size, im2col

# floats of one (N, G, filters, C/G*k*k, Ho*Wo) chunk of sums; bounds the scratch memory
CHUNK_ELEMENTS = 1 << 22


def summax_columns(x: np.ndarray, kernel: int, stride: int, pad: int, groups: int,
                   value: float) -> np.ndarray:
    """im2col of x (N, C, H, W) padded with `value`, as (N, groups, C/groups*k*k, Ho*Wo)."""
    cols = im2col(x, kernel, stride, pad, value)
    return cols.reshape(cols.shape[0], groups, -1, cols.shape[2])


def extreme_taps(cols: np.ndarray, w: np.ndarray, largest: bool,
                 with_index: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """cols (N, G, K, P), w (G, F/G, K) -> max (or min) over K of cols + w: (N, G, F/G, P), and the
    winning tap index (first on ties) when `with_index`. Chunked over filters to bound memory."""
    n, groups, taps, positions = cols.shape
    per_group = w.shape[1]
    values = np.empty((n, groups, per_group, positions), dtype=np.result_type(cols, w))
    index = np.empty(values.shape, dtype=np.intp) if with_index else None
    chunk = max(1, CHUNK_ELEMENTS // (n * groups * taps * positions))
    # argmax/argmin along a strided axis is 2-3x slower than along the contiguous one (max is not), so
    # the index pass puts the taps last
    cols_last = np.ascontiguousarray(cols.transpose(0, 1, 3, 2)) if with_index else None
    for start in range(0, per_group, chunk):
        part = slice(start, start + chunk)
        if with_index:
            sums = cols_last[:, :, None] + w[None, :, part, None, :]
            index[:, :, part] = sums.argmax(axis=4) if largest else sums.argmin(axis=4)
            values[:, :, part] = np.take_along_axis(sums, index[:, :, part, :, None], axis=4)[..., 0]
        else:
            sums = cols[:, :, None] + w[None, :, part, :, None]
            (np.max if largest else np.min)(sums, axis=3, out=values[:, :, part])
    return values, index


def summax2d(x: np.ndarray, w_max: np.ndarray, w_min: np.ndarray, stride: int, pad: int, groups: int = 1,
             with_index: bool = False):
    """x: (N, C, H, W), w_max, w_min: (O, C/groups, k, k) -> (N, O, Ho, Wo); with `with_index` also the
    argmax and argmin taps, each (N, groups, O/groups, Ho*Wo), that summax2d_backward needs."""
    n, _, h, w = x.shape
    out_c, _, kernel, _ = w_max.shape
    ho, wo = conv_output_size(h, kernel, stride, pad), conv_output_size(w, kernel, stride, pad)
    y, arg_max = extreme_taps(summax_columns(x, kernel, stride, pad, groups, -np.inf),
                              w_max.reshape(groups, out_c // groups, -1), True, with_index)
    low, arg_min = extreme_taps(summax_columns(x, kernel, stride, pad, groups, np.inf),
                                w_min.reshape(groups, out_c // groups, -1), False, with_index)
    y += low
    y = y.reshape(n, out_c, ho, wo)
    return (y, arg_max, arg_min) if with_index else y


def scatter_taps(index: np.ndarray, grad: np.ndarray, taps: int) -> tuple[np.ndarray, np.ndarray]:
    """index, grad: (N, G, F/G, P) -> (d cols (N, G, K, P), d w (G, F/G, K)): each output's gradient goes
    to the one tap that won it."""
    n, groups, per_group, positions = index.shape
    ni, gi, fi, pi = np.ogrid[:n, :groups, :per_group, :positions]
    flat = grad.ravel()
    d_cols = np.bincount((((ni * groups + gi) * taps + index) * positions + pi).ravel(), flat,
                         minlength=n * groups * taps * positions)
    d_w = np.bincount(((gi * per_group + fi) * taps + index).ravel(), flat, minlength=groups * per_group * taps)
    return (d_cols.reshape(n, groups, taps, positions).astype(grad.dtype),
            d_w.reshape(groups, per_group, taps).astype(grad.dtype))


def summax2d_backward(x_shape: tuple[int, int, int, int], arg_max: np.ndarray, arg_min: np.ndarray,
                      grad: np.ndarray, kernel: int, stride: int, pad: int
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of summax2d for grad (N, O, Ho, Wo): (d input (N, C, H, W), d w_max, d w_min (O, C/g, k, k))."""
    n, c = x_shape[:2]
    groups, per_group = arg_max.shape[1:3]
    taps = c // groups * kernel * kernel
    g = grad.reshape(n, groups, per_group, -1)
    d_cols_max, d_w_max = scatter_taps(arg_max, g, taps)
    d_cols_min, d_w_min = scatter_taps(arg_min, g, taps)
    d_cols = (d_cols_max + d_cols_min).reshape(n, c * kernel * kernel, -1)
    shape = (groups * per_group, c // groups, kernel, kernel)
    return col2im(d_cols, x_shape, kernel, stride, pad), d_w_max.reshape(shape), d_w_min.reshape(shape)
