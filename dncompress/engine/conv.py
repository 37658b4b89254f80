"""Convolution as one BLAS matmul per image: W (O, C*k*k) @ im2col(x) (C*k*k, Ho*Wo)."""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided


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


def im2col(x: np.ndarray, kernel: int, stride: int, pad: int) -> np.ndarray:
    """x: (N, C, H, W) -> (N, C*k*k, Ho*Wo), rows ordered (c, ky, kx) like Darknet's weights."""
    n, c, h, w = x.shape
    ho, wo = conv_output_size(h, kernel, stride, pad), conv_output_size(w, kernel, stride, pad)
    xp = pad_constant(x, pad, pad, pad, pad)
    sn, sc, sh, sw = xp.strides
    view = as_strided(xp, (n, c, kernel, kernel, ho, wo), (sn, sc, sh, sw, sh * stride, sw * stride),
                      writeable=False)
    return view.reshape(n, c * kernel * kernel, ho * wo)


def conv2d(x: np.ndarray, weights: np.ndarray, bias: np.ndarray | None, stride: int, pad: int,
           groups: int = 1) -> np.ndarray:
    """x: (N, C, H, W), weights: (O, C/groups, k, k), bias: (O,) -> (N, O, Ho, Wo) float32."""
    n, c, h, w = x.shape
    out_c, _, kernel, _ = weights.shape
    ho, wo = conv_output_size(h, kernel, stride, pad), conv_output_size(w, kernel, stride, pad)
    if kernel == 1 and stride == 1 and pad == 0:
        cols = x.reshape(n, c, h * w)
    else:
        cols = im2col(x, kernel, stride, pad)
    if groups == 1:
        y = np.matmul(weights.reshape(out_c, -1), cols)
    else:
        ci, co = c // groups, out_c // groups
        cols = cols.reshape(n, groups, ci * kernel * kernel, ho * wo)
        y = np.matmul(weights.reshape(groups, co, ci * kernel * kernel), cols)
    y = y.reshape(n, out_c, ho, wo)
    if bias is not None:
        y += bias.reshape(1, out_c, 1, 1)
    return y
