"""The export self-check: onnxruntime against the numpy engine on the same random batch."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from ..detect import DECODERS
from ..network import Network
from .onnx import onnx_forward


def engine_outputs(net: Network, x: np.ndarray, decode: bool) -> list[np.ndarray]:
    """What the exported model should return for x: raw heads, or the three decoded tensors
    (boxes (N, M, 4), objectness (N, M), class scores (N, M, K)) via detect's decoders."""
    raw = net.forward(x)
    if not decode:
        return raw
    per_image = [[DECODERS[h.type](h, out[n]) for h, out in zip(net.heads, raw)] for n in range(len(x))]
    return [np.stack([np.concatenate([d[i] for d in heads]) for heads in per_image]) for i in range(3)]


def max_abs_difference(net: Network, model: onnx.ModelProto | str | Path, decode: bool = False,
                       batch: int = 1, seed: int = 0) -> float:
    """Largest |onnxruntime - engine| over all compared outputs on a seeded uniform [0, 1) batch."""
    x = np.random.default_rng(seed).random((batch, *net.input_shape), dtype=np.float32)
    got = onnx_forward(model)(x)[:3 if decode else None]
    want = engine_outputs(net, x, decode)
    return max(float(np.abs(g - w).max()) for g, w in zip(got, want))
