"""int8 ONNX models that onnxruntime runs on its integer kernels.

`engine_int8_onnx` (what `--format onnx-int8` writes): our QDQ writer on a network quantized with
`out_bits=8`. onnxruntime switches a Conv to its integer kernel (QLinearConv) only when the conv's input,
weights, int32 bias *and output* carry Q/DQ pairs, so the engine quantizes the same tensors: each conv's
input (the calibrated range), per-channel weights, the bias on the input x weight scale grid, and the
output before the activation (a range calibrated on the quantized network's own outputs). The convs
feeding the heads keep float outputs (8-bit logits would move boxes by whole percent). The file then
computes what the engine's quantized model computes, up to the summation order of the float parts
(`int8_agreement`), and runs 1.6-1.7x faster than fp32 (docs/quantization.md).

`onnxruntime_int8`: onnxruntime's own `quantize_static` on the same weights and images, kept as the
reference it was measured against: it quantizes every tensor with its own ranges (the logits too), so it
is a different model from the engine's.
"""
from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np
import onnx

from ..errors import DncompressError
from ..export.onnx import build_onnx, onnx_forward
from ..network import Network
from .apply import plain_convolutional
from .qdq import build_qdq_onnx

# mean |onnxruntime - engine| relative to mean |engine output| above which the file is refused: outputs
# differ where a float sum lands on the other side of a rounding boundary (measured ~0.3% on yolov3-tiny);
# a wrong scale, zero point or bias grid moves every output
INT8_TOLERANCE = 0.02


def engine_int8_onnx(quantized: Network, opset: int = 13) -> onnx.ModelProto:
    """The QDQ graph of a network quantized with out_bits=8 (dynamic batch)."""
    if not any(getattr(layer, "bito", 0) for layer in quantized.layers):
        raise DncompressError("the int8 ONNX export needs convs with quantized outputs (quantize with out_bits=8)")
    return build_qdq_onnx(quantized, opset, dynamic_batch=True)


def int8_agreement(quantized: Network, model: onnx.ModelProto, images: np.ndarray) -> float:
    """mean |onnxruntime - engine| / mean |engine| over the raw outputs for images (N, C, H, W)."""
    ours, theirs = quantized.forward(images), onnx_forward(model)(images)
    if not all(np.isfinite(t).all() for t in theirs):
        return float("inf")
    return float(sum(np.abs(a - b).sum() for a, b in zip(ours, theirs)) / sum(np.abs(a).sum() for a in ours))


def check_int8(quantized: Network, model: onnx.ModelProto, images: np.ndarray, output: str) -> float:
    """int8_agreement, raising DncompressError (nothing written) above INT8_TOLERANCE."""
    diff = int8_agreement(quantized, model, images)
    if not diff <= INT8_TOLERANCE:
        raise DncompressError(f"onnxruntime's int8 model differs from the engine's quantized model by {diff:.3g} "
                              f"of the mean output (> {INT8_TOLERANCE:g}); not written", output)
    return diff


def onnxruntime_int8(quantized: Network, calib: np.ndarray, opset: int = 13) -> bytes:
    """onnxruntime's quantize_static (QDQ, per-channel int8, min-max ranges) of a [quantize_convolutional]
    network's on-grid weights, calibrated on `calib` (N, C, H, W): serialized ONNX."""
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    if calib is None or not len(calib):
        raise DncompressError("the int8 ONNX export needs calibration images")
    float_model = build_onnx(plain_convolutional(quantized), opset, dynamic_batch=True)
    images = (calib[i:i + 1] for i in range(len(calib)))

    class Reader(CalibrationDataReader):
        def get_next(self):
            x = next(images, None)
            return None if x is None else {"images": x}

    with tempfile.TemporaryDirectory(prefix="dncompress-int8-") as folder:
        source, target = Path(folder) / "float.onnx", Path(folder) / "int8.onnx"
        source.write_bytes(float_model.SerializeToString())
        logging.disable(logging.WARNING)        # its advice to run a pre-processing script, on every call
        try:
            quantize_static(str(source), str(target), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8,
                            calibrate_method=CalibrationMethod.MinMax,
                            extra_options={"CalibTensorRangeSymmetric": False})
        finally:
            logging.disable(logging.NOTSET)
        return target.read_bytes()
