"""Backward kernels next to the forward ones: pure functions on NCHW arrays of any float dtype, so
gradient checks can run them in float64."""
from __future__ import annotations

import numpy as np

from ..threads import parallel
from numpy.lib.stride_tricks import as_strided

from .activations import cache_blocks
from .conv import COLUMN_BLOCK, MIN_CHANNELS_PER_THREAD, banded_rows, conv_output_size, pad_constant
from .pool import maxpool_padded


def col2im(cols: np.ndarray, shape: tuple[int, int, int, int], kernel: int, stride: int, pad: int) -> np.ndarray:
    """Adjoint of im2col: cols (N, C*k*k, Ho*Wo), or a (N, C, k, k, Ho, Wo) view of any strides, summed back
    into (N, C, H, W), one strided add per tap."""
    n, c, h, w = shape
    ho, wo = conv_output_size(h, kernel, stride, pad), conv_output_size(w, kernel, stride, pad)
    cols = cols.reshape(n, c, kernel, kernel, ho, wo)
    out = np.zeros((n, c, h + 2 * pad + stride, w + 2 * pad + stride), dtype=cols.dtype)
    span_h, span_w = (ho - 1) * stride + 1, (wo - 1) * stride + 1
    for ky in range(kernel):
        for kx in range(kernel):
            out[:, :, ky:ky + span_h:stride, kx:kx + span_w:stride] += cols[:, :, ky, kx]
    return out[:, :, pad:pad + h, pad:pad + w]


def batch_columns(x: np.ndarray, kernel: int, stride: int, pad: int) -> np.ndarray:
    """x: (N, C, H, W) -> im2col with the images side by side: (C*k*k, N*Ho*Wo), one copy."""
    n, c, h, w = x.shape
    ho, wo = conv_output_size(h, kernel, stride, pad), conv_output_size(w, kernel, stride, pad)
    xp = pad_constant(x, pad, pad, pad, pad)
    sn, sc, sh, sw = xp.strides
    view = as_strided(xp, (c, kernel, kernel, n, ho, wo), (sc, sh, sw, sn, sh * stride, sw * stride),
                      writeable=False)
    return np.ascontiguousarray(view).reshape(c * kernel * kernel, n * ho * wo)


def conv2d_backward(x: np.ndarray, weights: np.ndarray, grad: np.ndarray, stride: int, pad: int,
                    groups: int = 1, need_input: bool = True, need_weights: bool = True
                    ) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Gradients of conv2d (no bias) for grad (N, O, Ho, Wo): (d input (N, C, H, W), d weights (O, C/g, k, k)),
    each None when not needed (the network input; frozen weights). The images go side by side into one
    GEMM per gradient (batch_columns): per-image GEMMs with a reduction over Ho*Wo (100 at 10x10) ran
    slower, and the weight gradient summed an (N, C*k*k, O) stack of per-image products (150 MB for
    yolov3-tiny's 512->1024 conv at batch 8)."""
    n, c, h, w = x.shape
    out_c, _, kernel, _ = weights.shape
    ho, wo = grad.shape[2:]
    if banded_rows(c, kernel, groups, ho, wo):
        return conv2d_backward_banded(x, weights, grad, stride, pad, need_input, need_weights)
    ci, co = c // groups, out_c // groups
    rows, positions = ci * kernel * kernel, n * ho * wo
    g = grad.reshape(n, groups, co, ho * wo)
    d_weights = None
    if need_weights:
        cols = batch_columns(x, kernel, stride, pad).reshape(groups, rows, positions)
        # cols (g, ci*k*k, N*HW) @ grad^T (g, N*HW, co): OpenBLAS is ~100x slower on the equivalent
        # grad @ cols^T when HW is large and co small (measured), so the product is formed transposed;
        # split by output channel over the engine's threads
        g_t = np.ascontiguousarray(g.transpose(1, 0, 3, 2)).reshape(groups, positions, co)
        d_t = np.empty((groups, rows, co), dtype=np.result_type(x, grad))

        def weights_part(sl: slice) -> None:
            np.matmul(cols, g_t[:, :, sl], out=d_t[:, :, sl])
        parallel(weights_part, co, MIN_CHANNELS_PER_THREAD)
        d_weights = d_t.transpose(0, 2, 1).reshape(weights.shape)
        del cols, g_t
    if not need_input:
        return None, d_weights
    w_t = weights.reshape(groups, co, rows).transpose(0, 2, 1)
    g_rows = np.ascontiguousarray(g.transpose(1, 2, 0, 3)).reshape(groups, co, positions)
    d_cols = np.empty((groups, rows, positions), dtype=np.result_type(weights, grad))

    def input_part(sl: slice) -> None:
        np.matmul(w_t[:, sl], g_rows, out=d_cols[:, sl])
    parallel(input_part, rows, MIN_CHANNELS_PER_THREAD)
    # (C, k, k, N, Ho, Wo) viewed image-first for col2im
    d_cols = d_cols.reshape(c, kernel, kernel, n, ho, wo).transpose(3, 0, 1, 2, 4, 5)
    if kernel == 1 and stride == 1 and pad == 0:
        return np.ascontiguousarray(d_cols.reshape(n, c, h, w)), d_weights
    return col2im(d_cols, x.shape, kernel, stride, pad), d_weights


def conv2d_backward_banded(x: np.ndarray, weights: np.ndarray, grad: np.ndarray, stride: int, pad: int,
                           need_input: bool = True, need_weights: bool = True
                           ) -> tuple[np.ndarray | None, np.ndarray | None]:
    """conv2d_backward (ungrouped) a band of output rows at a time, as engine.conv.conv2d_banded: the
    band's columns (for the weight gradient) and column gradients (summed back into the input's
    gradient) stay in cache instead of whole-batch arrays going to memory and back. Images are split
    over the engine's threads (bands of one image overlap in the input gradient); each thread sums its
    own weight gradient."""
    n, c, h, w = x.shape
    out_c, _, kernel, _ = weights.shape
    ho, wo = grad.shape[2:]
    rows = c * kernel * kernel
    band = max(1, COLUMN_BLOCK // (rows * wo))
    dtype = np.result_type(x, weights, grad)
    g = grad.reshape(n, out_c, ho * wo)
    w_t = weights.reshape(out_c, rows).T
    xp = pad_constant(x, pad, pad, pad, pad) if need_weights else None
    dxp = np.zeros((n, c, h + 2 * pad + stride, w + 2 * pad + stride), dtype=dtype) if need_input else None
    partial_weights = []

    def part(sl: slice) -> None:
        buffer = np.empty(rows * band * wo, dtype=dtype)
        d_t = np.zeros((rows, out_c), dtype=dtype) if need_weights else None
        for i in range(sl.start, sl.stop):
            for r0 in range(0, ho, band):
                r1 = min(ho, r0 + band)
                g_band = g[i, :, r0 * wo:r1 * wo]
                cols = buffer[:rows * (r1 - r0) * wo].reshape(c, kernel, kernel, r1 - r0, wo)
                if need_weights:
                    _, sc, sh, sw = xp.strides
                    np.copyto(cols, as_strided(xp[i, :, r0 * stride:], cols.shape,
                                               (sc, sh, sw, sh * stride, sw * stride), writeable=False))
                    d_t += cols.reshape(rows, -1) @ g_band.T
                if need_input:
                    np.matmul(w_t, g_band, out=cols.reshape(rows, -1))
                    span_h, span_w = (r1 - r0 - 1) * stride + 1, (wo - 1) * stride + 1
                    for ky in range(kernel):
                        for kx in range(kernel):
                            top = r0 * stride + ky
                            dxp[i, :, top:top + span_h:stride, kx:kx + span_w:stride] += cols[:, ky, kx]
        if need_weights:
            partial_weights.append(d_t)
    parallel(part, n)
    d_weights = sum(partial_weights).T.reshape(weights.shape) if need_weights else None
    return (dxp[:, :, pad:pad + h, pad:pad + w] if need_input else None), d_weights


def maxpool2d_backward(x: np.ndarray, grad: np.ndarray, kernel: int, stride: int, padding: int,
                       out: np.ndarray | None = None) -> np.ndarray:
    """d input (N, C, H, W) of Darknet's maxpool for grad (N, C, Ho, Wo); ties go to the first window cell
    in scan order (ky, then kx), as Darknet's strict `>`. `out`, the forward's output, enables the fast
    path of windows that tile the input exactly (size = stride, no padding cells: yolov3-tiny's 2x2/2)."""
    h, w = x.shape[2:]
    ho, wo = grad.shape[2:]
    if out is not None and kernel == stride and padding // 2 == 0 and (h, w) == (ho * kernel, wo * kernel):
        return _tiled_maxpool_backward(x, grad, out, kernel)
    xp, before, span_h, span_w = maxpool_padded(x, kernel, stride, padding)
    best = xp[:, :, 0:span_h:stride, 0:span_w:stride].copy()
    winner = np.zeros(best.shape, dtype=np.uint8 if kernel * kernel < 256 else np.int32)
    for tap in range(1, kernel * kernel):
        dy, dx = divmod(tap, kernel)
        cand = xp[:, :, dy:dy + span_h:stride, dx:dx + span_w:stride]
        better = cand > best
        np.maximum(best, cand, out=best)
        winner[better] = tap
    del best
    dxp = np.zeros(xp.shape, dtype=grad.dtype)
    disjoint = stride >= kernel  # every input cell in at most one window: assign instead of accumulate
    for tap in range(kernel * kernel):
        dy, dx = divmod(tap, kernel)
        view = dxp[:, :, dy:dy + span_h:stride, dx:dx + span_w:stride]
        share = np.multiply(grad, winner == tap)
        if disjoint:
            view[...] = share
        else:
            view += share
    return dxp[:, :, before:before + h, before:before + w]


def _tiled_maxpool_backward(x: np.ndarray, grad: np.ndarray, out: np.ndarray, kernel: int) -> np.ndarray:
    """maxpool2d_backward for k x k windows tiling x exactly: the cells equal to their window's max, the
    first in scan order among ties, receive the window's grad. Tap by tap on strided views of x's own
    layout, in cache-sized blocks (~2x faster than whole-array passes; channels split over the engine's
    threads)."""
    n, c, h, w = x.shape
    ho, wo = h // kernel, w // kernel
    dx = np.empty_like(x, dtype=grad.dtype)
    x6, d6 = x.reshape(n, c, ho, kernel, wo, kernel), dx.reshape(n, c, ho, kernel, wo, kernel)

    def part(sl: slice) -> None:
        for i, cs, rs in cache_blocks(n, sl, ho, kernel * kernel * wo):
            best, g = out[i, cs, rs], grad[i, cs, rs]
            free = None
            for tap in range(kernel * kernel):
                ky, kx = divmod(tap, kernel)
                hit = np.equal(x6[i, cs, rs, ky, :, kx], best)
                if free is None:
                    free = ~hit
                else:
                    hit &= free
                    if tap < kernel * kernel - 1:
                        free &= ~hit
                np.multiply(g, hit, out=d6[i, cs, rs, ky, :, kx])
    parallel(part, c, 8)
    return dx


def upsample_backward(grad: np.ndarray, stride: int) -> np.ndarray:
    """Adjoint of upsample_nearest: grad (N, C, H*s, W*s) -> (N, C, H, W), the sum of each s x s block."""
    n, c, hs, ws = grad.shape
    return grad.reshape(n, c, hs // stride, stride, ws // stride, stride).sum(axis=(3, 5))


def activation_grad(name: str, pre: np.ndarray, out: np.ndarray) -> np.ndarray:
    """d out / d pre for a Darknet activation, from its input `pre` and output `out` (same shape); for
    linear, leaky, relu and logistic `pre` is not read and may be None."""
    if name == "linear":
        return np.ones_like(out)
    if name == "leaky":  # out > 0 exactly where pre > 0
        return np.where(out > 0, out.dtype.type(1), out.dtype.type(0.1))
    if name == "relu":
        return (out > 0).astype(out.dtype)
    if name == "logistic":
        return out * (1 - out)
    sig = 1 / (1 + np.exp(-pre))
    if name == "swish":
        return sig + pre * sig * (1 - sig)
    if name == "mish":
        tsp = np.tanh(np.logaddexp(pre, 0))
        return tsp + pre * (1 - tsp * tsp) * sig
    raise ValueError(f"no gradient for activation {name}")


# activations whose gradient activation_grad reads from the output alone
OUTPUT_ONLY_GRAD = frozenset({"linear", "leaky", "relu", "logistic"})


def activation_backward(name: str, grad: np.ndarray, pre: np.ndarray | None, out: np.ndarray,
                        into: np.ndarray | None = None) -> np.ndarray:
    """grad * d out / d pre, written to `into` (a new array if None; never to grad: callers may change the
    result in place while grad is shared, e.g. by both inputs of a shortcut)."""
    if into is None:
        into = np.empty_like(grad)
    if name == "linear":
        np.copyto(into, grad)
    elif name == "leaky":  # 0.9 * (out > 0) + 0.1 in place: ~3.5x faster than np.where or copyto(where=)
        one = out.dtype.type
        np.greater(out, 0, out=into, casting="unsafe")
        into *= one(0.9)
        into += one(0.1)
        into *= grad
    else:
        np.multiply(grad, activation_grad(name, pre, out), out=into)
    return into
