"""GPTQ weight rounding (Frantar et al. 2023, IST-DASLab/gptq `fasterquant`): quantize a layer's weight
columns one at a time and move each column's rounding error onto the columns not yet quantized, weighted
by the inverse Hessian H = X X^T of the layer's inputs, so that the layer *output* error ||(W - Q) X||
stays small rather than the weight error. For a conv, columns are the im2col rows (C*k*k) and X holds
sampled input positions.

The grid is the per-output-channel symmetric grid of snap_to_grid: each row's largest-magnitude weight is
pinned to +-qmax, so scale = max|q| / qmax and re-snapping the stored weights changes nothing.
"""
from __future__ import annotations

import numpy as np

from ..engine.conv import conv_output_size, pad_constant
from ..engine.quantize import signed_range


def sample_columns(x: np.ndarray, kernel: int, stride: int, pad: int, count: int,
                   rng: np.random.Generator) -> np.ndarray:
    """Im2col columns at `count` random output positions per image: x (N, C, H, W) -> (N * count, C*k*k),
    rows ordered (c, ky, kx) like the weights; all positions when there are no more than `count`."""
    n, c, h, w = x.shape
    ho, wo = conv_output_size(h, kernel, stride, pad), conv_output_size(w, kernel, stride, pad)
    xp = pad_constant(x, pad, pad, pad, pad)
    positions = ho * wo
    picks = np.arange(positions) if positions <= count else rng.choice(positions, count, replace=False)
    ys, xs = (picks // wo) * stride, (picks % wo) * stride
    taps = np.arange(kernel)
    rows = ys[:, None, None] + taps[None, :, None]             # (P, k, 1)
    cols = xs[:, None, None] + taps[None, None, :]             # (P, 1, k)
    patches = xp[:, :, rows, cols]                             # (N, C, P, k, k)
    return np.ascontiguousarray(patches.transpose(0, 2, 1, 3, 4).reshape(n * len(picks), c * kernel * kernel))


def inverse_hessian_factor(hessian: np.ndarray, damp: float) -> np.ndarray:
    """Upper Cholesky factor U of (H + damp * mean(diag H) * I)^-1 (U^T U = H^-1), float64 (K, K).
    Inputs that are always zero (diag 0) get a unit diagonal: their weights are rounded to nearest.
    With J the reversal, J H J = L L^T gives H^-1 = (J L^-1 J)^T (J L^-1 J), and J L^-1 J is upper
    triangular: one Cholesky and one inverse instead of two of each."""
    h = np.array(hessian, np.float64)
    diag = np.diag(h).copy()
    diag[diag == 0] = 1.0
    h[np.diag_indices_from(h)] = diag + damp * diag.mean()
    lower = np.linalg.cholesky(h[::-1, ::-1])
    return np.triu(np.linalg.inv(lower)[::-1, ::-1])


def gptq_round(weights: np.ndarray, hessian: np.ndarray, scale: np.ndarray, bits: int, block: int = 128,
               damp: float = 0.01, act_order: bool = True, pinned: np.ndarray | None = None) -> np.ndarray:
    """Integers Q (O, K) for weights (O, K) on the grid scale (O,) * [-qmax, qmax] minimizing
    ||(W - Q * scale) X|| given hessian = X X^T (K, K). `act_order` quantizes columns with the largest
    input energy first (the reference's --act-order). Rows in `pinned` (O,) bool, default all, keep their
    largest-magnitude weight at +-qmax."""
    qmin, qmax = signed_range(bits)
    w = np.array(weights, np.float64)
    scale = np.asarray(scale, np.float64).reshape(-1, 1)
    rows = np.arange(len(w))
    pin_column = np.abs(w).argmax(axis=1)
    pin_value = np.where(w[rows, pin_column] < 0, qmin, qmax)
    order = np.argsort(-np.diag(hessian), kind="stable") if act_order else np.arange(w.shape[1])
    w = w[:, order]
    pin_position = np.argsort(order)[pin_column]               # pinned column of each row after reordering
    if pinned is not None:
        pin_position[~np.asarray(pinned)] = -1
    factor = inverse_hessian_factor(np.asarray(hessian)[np.ix_(order, order)], damp)
    q = np.empty(w.shape, np.int32)
    for start in range(0, w.shape[1], block):
        stop = min(start + block, w.shape[1])
        w_block, f_block = w[:, start:stop], factor[start:stop, start:stop]
        errors = np.empty_like(w_block)
        for i in range(stop - start):
            column = np.clip(np.round(w_block[:, i:i + 1] / scale), qmin, qmax)[:, 0]
            pinned = pin_position == start + i
            column[pinned] = pin_value[pinned]
            q[:, start + i] = column
            error = (w_block[:, i] - column * scale[:, 0]) / f_block[i, i]
            w_block[:, i:] -= error[:, None] * f_block[i, i:][None, :]
            errors[:, i] = error
        w[:, stop:] -= errors @ factor[start:stop, stop:]
    return q[:, np.argsort(order)]


def obq_round_reference(weights: np.ndarray, hessian: np.ndarray, scale: np.ndarray, bits: int,
                        damp: float = 0.01) -> np.ndarray:
    """The same greedy, fixed-order optimal-brain-quantization update written directly (float64, one row
    at a time, explicit inverse downdates, natural column order): a slow reference for tests."""
    qmin, qmax = signed_range(bits)
    h = np.array(hessian, np.float64)
    diag = np.diag(h).copy()
    diag[diag == 0] = 1.0
    h[np.diag_indices_from(h)] = diag + damp * diag.mean()
    q = np.empty(weights.shape, np.int32)
    for r, (row, s) in enumerate(zip(np.array(weights, np.float64), np.asarray(scale, np.float64).reshape(-1))):
        pin = np.abs(row).argmax()
        pin_value = qmax if row[pin] >= 0 else qmin
        inverse = np.linalg.inv(h)
        for i in range(len(row)):
            value = pin_value if i == pin else np.clip(np.round(row[i] / s), qmin, qmax)
            q[r, i] = value
            row -= (row[i] - value * s) / inverse[i, i] * inverse[i]
            inverse -= np.outer(inverse[:, i], inverse[i]) / inverse[i, i]
    return q
