"""Uniform affine quantizers (pure functions on arrays) and the DoReFa quantizer of the public projects."""
from __future__ import annotations

import numpy as np


def signed_range(bits: int) -> tuple[int, int]:
    """Symmetric restricted range for weights: (-(2^(b-1)-1), 2^(b-1)-1), e.g. -7..7 at 4 bits."""
    top = (1 << (bits - 1)) - 1
    return -top, top


def unsigned_range(bits: int) -> tuple[int, int]:
    """Range for activations: 0..2^b-1."""
    return 0, (1 << bits) - 1


def quantize(x: np.ndarray, scale, zero_point, qmin: int, qmax: int) -> np.ndarray:
    """Integers clamp(round(x / scale) + zero_point, qmin, qmax), rounding half to even like ONNX
    QuantizeLinear; computed in float32 as onnxruntime does. Returns int32."""
    x = np.asarray(x, np.float32)
    q = np.round(x / np.asarray(scale, np.float32)) + np.asarray(zero_point, np.float32)
    return np.clip(q, qmin, qmax).astype(np.int32)


def dequantize(q: np.ndarray, scale, zero_point=0) -> np.ndarray:
    """(q - zero_point) * scale in float32, the value DequantizeLinear and the packed reader produce."""
    return (np.asarray(q, np.int32) - np.asarray(zero_point, np.int32)).astype(np.float32) \
        * np.asarray(scale, np.float32)


def fake_quantize(x: np.ndarray, scale, zero_point, qmin: int, qmax: int) -> np.ndarray:
    return dequantize(quantize(x, scale, zero_point, qmin, qmax), scale, zero_point)


def channel_view(values: np.ndarray, per_channel: bool) -> np.ndarray:
    """Broadcastable per output channel (axis 0) of a (O, ...) tensor, or a scalar array."""
    return values.reshape(-1, *([1] * 3)) if per_channel else values.reshape(())


def weight_scale(w: np.ndarray, bits: int, per_channel: bool, clip: np.ndarray | None = None) -> np.ndarray:
    """Symmetric scale: (O,) per output channel or () per tensor, max|w| (or `clip`) / qmax.
    w: (O, C, K, K). A zero channel gets scale 1 so that it quantizes to zeros."""
    top = signed_range(bits)[1]
    absmax = np.abs(w).reshape(len(w), -1).max(axis=1) if per_channel else np.array(np.abs(w).max())
    if clip is not None:
        absmax = np.asarray(clip, np.float64)
    scale = (absmax / top).astype(np.float32)
    return np.where(scale > 0, scale, np.float32(1.0))


def quantize_weights(w: np.ndarray, bits: int, per_channel: bool,
                     clip: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(integers like w, scale (O,) or ()) with symmetric affine quantization. w: (O, C, K, K)."""
    scale = weight_scale(w, bits, per_channel, clip)
    return quantize(w, channel_view(scale, per_channel), 0, *signed_range(bits)), scale


def activation_params(lo: float, hi: float, bits: int) -> tuple[np.float32, int]:
    """(scale, zero_point) for an unsigned grid covering [lo, hi] with 0 exactly representable
    (zero padding must stay zero)."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    qmin, qmax = unsigned_range(bits)
    scale = np.float32((hi - lo) / (qmax - qmin)) if hi > lo else np.float32(1.0)
    zero_point = int(np.clip(np.round(qmin - lo / float(scale)), qmin, qmax))
    return scale, zero_point


def fake_quantize_activation(x: np.ndarray, lo: float, hi: float, bits: int) -> np.ndarray:
    scale, zero_point = activation_params(lo, hi, bits)
    return fake_quantize(x, scale, zero_point, *unsigned_range(bits))


def dorefa_level(x: np.ndarray, bits: int) -> np.ndarray:
    """q_k(x) = round(x * (2^k - 1)) / (2^k - 1), x in [0, 1]."""
    n = float((1 << bits) - 1)
    return np.round(x * n) / n


def dorefa_weights(w: np.ndarray, bits: int) -> np.ndarray:
    """DoReFa weights as the public projects compute them (one scale per tensor); float32 out."""
    w = np.asarray(w, np.float64)
    if bits == 1:
        return (np.sign(w) * np.abs(w).mean()).astype(np.float32)
    t = np.tanh(w)
    t = t / (2 * np.abs(t).max()) + 0.5
    return (2 * dorefa_level(t, bits) - 1).astype(np.float32)


def dorefa_activation(x: np.ndarray, bits: int) -> np.ndarray:
    """a_q = q_k(clamp(0.1 * x, 0, 1)), the conv input the public projects use; float32 out."""
    return dorefa_level(np.clip(np.float32(0.1) * np.asarray(x, np.float32), 0, 1), bits).astype(np.float32)
