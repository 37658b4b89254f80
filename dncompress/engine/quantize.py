"""Uniform quantizers as pure functions: affine (scale, zero point) per tensor or per output channel,
and DoReFa (the convention of public [quantize_convolutional] projects). Rounding is half-to-even,
as in onnxruntime's QuantizeLinear."""
from __future__ import annotations

import numpy as np


def signed_range(bits: int) -> tuple[int, int]:
    """Symmetric signed integer range, e.g. 8 bits -> (-127, 127) (zero is exact, no -128)."""
    top = 2 ** (bits - 1) - 1
    return -top, top


def unsigned_range(bits: int) -> tuple[int, int]:
    return 0, 2 ** bits - 1


def symmetric_scale(max_abs: np.ndarray, bits: int) -> np.ndarray:
    """Scale mapping [-max_abs, max_abs] onto the signed range; never zero."""
    return np.maximum(np.asarray(max_abs, np.float64), 1e-12) / signed_range(bits)[1]


def affine_params(low: float, high: float, bits: int) -> tuple[float, int]:
    """(scale, zero point) mapping [low, high] (widened to include 0) onto 0..2^bits-1."""
    low, high = min(float(low), 0.0), max(float(high), 0.0)
    qmin, qmax = unsigned_range(bits)
    scale = max(high - low, 1e-12) / (qmax - qmin)
    zero_point = int(np.clip(np.round(qmin - low / scale), qmin, qmax))
    return scale, zero_point


def quantize(x: np.ndarray, scale, zero_point, qmin: int, qmax: int) -> np.ndarray:
    """Integers clip(round(x / scale) + zero_point); scale/zero_point broadcast against x."""
    return np.clip(np.round(np.asarray(x, np.float64) / scale) + zero_point, qmin, qmax).astype(np.int32)


def dequantize(q: np.ndarray, scale, zero_point) -> np.ndarray:
    return ((np.asarray(q, np.float64) - zero_point) * scale).astype(np.float32)


def fake_quantize(x: np.ndarray, scale, zero_point, qmin: int, qmax: int) -> np.ndarray:
    """x as its quantized-then-dequantized float32 value."""
    return dequantize(quantize(x, scale, zero_point, qmin, qmax), scale, zero_point)


def fake_quantize_float32(x: np.ndarray, scale: float, zero_point: int, qmin: int, qmax: int) -> np.ndarray:
    """Activation fake quantization in float32 arithmetic, step for step as onnxruntime's QuantizeLinear
    then DequantizeLinear (x / scale rounded half-to-even), so the QDQ export reproduces the engine
    even on rounding ties (letterbox grey 0.5 / (1/255) = 127.5)."""
    s = np.float32(scale)
    q = np.clip(np.round(x.astype(np.float32) / s) + np.float32(zero_point), qmin, qmax)
    return (q - np.float32(zero_point)) * s


def channel_max_abs(weights: np.ndarray, per_channel: bool) -> np.ndarray:
    """max |w| per output channel (O, 1, 1, 1) or for the tensor, shaped to broadcast against weights."""
    if per_channel:
        return np.abs(weights).reshape(len(weights), -1).max(axis=1).reshape(-1, *([1] * (weights.ndim - 1)))
    return np.abs(weights).max().reshape([1] * weights.ndim)


def snap_to_grid(weights: np.ndarray, bits: int, per_channel: bool) -> np.ndarray:
    """Symmetric min-max fake quantization: scale = max|w| / qmax per channel (or tensor). Applied to its
    own output it changes nothing, so on-grid weights survive any number of write/read cycles exactly."""
    scale = symmetric_scale(channel_max_abs(weights, per_channel), bits)
    return fake_quantize(weights, scale, 0, *signed_range(bits))


def quantize_levels(x: np.ndarray, bits: int) -> np.ndarray:
    """DoReFa's q_k: round(x * (2^k - 1)) / (2^k - 1) for x in [0, 1]."""
    n = 2 ** bits - 1
    return np.round(x * n) / n


def dorefa_weights(weights: np.ndarray, bits: int) -> np.ndarray:
    """DoReFa weights: k=1 -> sign(w) * mean|w|; else t = tanh(w), t = t / (2 max|t|) + 0.5,
    w_q = 2 q_k(t) - 1 (one scale per tensor)."""
    w = weights.astype(np.float64)
    if bits == 1:
        return (np.sign(w) * np.abs(w).mean()).astype(np.float32)
    t = np.tanh(w)
    t = t / (2 * max(np.abs(t).max(), 1e-12)) + 0.5
    return (2 * quantize_levels(t, bits) - 1).astype(np.float32)


def dorefa_activations(x: np.ndarray, bits: int) -> np.ndarray:
    """DoReFa activations as in the public projects: q_k(clamp(0.1 x, 0, 1))."""
    return quantize_levels(np.clip(0.1 * x.astype(np.float64), 0, 1), bits).astype(np.float32)
