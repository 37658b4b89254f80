"""Backward kernels next to the forward ones: pure functions on NCHW arrays of any float dtype, so
gradient checks can run them in float64."""
from __future__ import annotations

import numpy as np

from .conv import conv_output_size, im2col
from .pool import maxpool_padded


def col2im(cols: np.ndarray, shape: tuple[int, int, int, int], kernel: int, stride: int, pad: int) -> np.ndarray:
    """Adjoint of im2col: cols (N, C*k*k, Ho*Wo) summed back into (N, C, H, W), one strided add per tap."""
    n, c, h, w = shape
    ho, wo = conv_output_size(h, kernel, stride, pad), conv_output_size(w, kernel, stride, pad)
    cols = cols.reshape(n, c, kernel, kernel, ho, wo)
    out = np.zeros((n, c, h + 2 * pad + stride, w + 2 * pad + stride), dtype=cols.dtype)
    span_h, span_w = (ho - 1) * stride + 1, (wo - 1) * stride + 1
    for ky in range(kernel):
        for kx in range(kernel):
            out[:, :, ky:ky + span_h:stride, kx:kx + span_w:stride] += cols[:, :, ky, kx]
    return out[:, :, pad:pad + h, pad:pad + w]


def conv2d_backward(x: np.ndarray, weights: np.ndarray, grad: np.ndarray, stride: int, pad: int,
                    groups: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Gradients of conv2d (no bias) for grad (N, O, Ho, Wo): (d input (N, C, H, W), d weights (O, C/g, k, k))."""
    n, c, h, w = x.shape
    out_c, _, kernel, _ = weights.shape
    ho, wo = grad.shape[2:]
    if kernel == 1 and stride == 1 and pad == 0:
        cols = x.reshape(n, c, h * w)
    else:
        cols = im2col(x, kernel, stride, pad)
    ci, co = c // groups, out_c // groups
    cols = cols.reshape(n, groups, ci * kernel * kernel, ho * wo)
    g = grad.reshape(n, groups, co, ho * wo)
    w_mat = weights.reshape(groups, co, ci * kernel * kernel)
    # per image cols (g, ci*k*k, HW) @ grad^T (g, HW, co): OpenBLAS is ~100x slower on the equivalent
    # grad @ cols^T when HW is large and co small (measured), so the product is formed transposed
    d_weights = np.matmul(cols, g.transpose(0, 1, 3, 2)).sum(axis=0).transpose(0, 2, 1).reshape(weights.shape)
    d_cols = np.matmul(w_mat.transpose(0, 2, 1), g).reshape(n, c * kernel * kernel, ho * wo)
    if kernel == 1 and stride == 1 and pad == 0:
        return d_cols.reshape(x.shape), d_weights
    return col2im(d_cols, x.shape, kernel, stride, pad), d_weights


def maxpool2d_backward(x: np.ndarray, grad: np.ndarray, kernel: int, stride: int, padding: int) -> np.ndarray:
    """d input (N, C, H, W) of Darknet's maxpool for grad (N, C, Ho, Wo); ties go to the first window cell
    in scan order (ky, then kx), as Darknet's strict `>`."""
    h, w = x.shape[2:]
    xp, before, span_h, span_w = maxpool_padded(x, kernel, stride, padding)
    best = xp[:, :, 0:span_h:stride, 0:span_w:stride].copy()
    winner = np.zeros(best.shape, dtype=np.int32)
    for tap in range(1, kernel * kernel):
        dy, dx = divmod(tap, kernel)
        cand = xp[:, :, dy:dy + span_h:stride, dx:dx + span_w:stride]
        better = cand > best
        np.copyto(best, cand, where=better)
        np.copyto(winner, tap, where=better)
    dxp = np.zeros(xp.shape, dtype=grad.dtype)
    for tap in range(kernel * kernel):
        dy, dx = divmod(tap, kernel)
        view = dxp[:, :, dy:dy + span_h:stride, dx:dx + span_w:stride]
        np.add(view, grad, out=view, where=winner == tap)
    return dxp[:, :, before:before + h, before:before + w]


def upsample_backward(grad: np.ndarray, stride: int) -> np.ndarray:
    """Adjoint of upsample_nearest: grad (N, C, H*s, W*s) -> (N, C, H, W), the sum of each s x s block."""
    n, c, hs, ws = grad.shape
    return grad.reshape(n, c, hs // stride, stride, ws // stride, stride).sum(axis=(3, 5))


def activation_grad(name: str, pre: np.ndarray, out: np.ndarray) -> np.ndarray:
    """d out / d pre for a Darknet activation, from its input `pre` and output `out` (same shape)."""
    if name == "linear":
        return np.ones_like(pre)
    if name == "leaky":
        return np.where(pre > 0, 1.0, 0.1).astype(pre.dtype)
    if name == "relu":
        return (pre > 0).astype(pre.dtype)
    if name == "logistic":
        return out * (1 - out)
    sig = 1 / (1 + np.exp(-pre))
    if name == "swish":
        return sig + pre * sig * (1 - sig)
    if name == "mish":
        tsp = np.tanh(np.logaddexp(pre, 0))
        return tsp + pre * (1 - tsp * tsp) * sig
    raise ValueError(f"no gradient for activation {name}")
