"""QDQ ONNX for quantized networks: integer weight initializers with DequantizeLinear (per output
channel), and QuantizeLinear/DequantizeLinear on each quantized conv's input; other layers stay float."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..engine.quantize import affine_params, channel_max_abs, quantize, signed_range, symmetric_scale, unsigned_range
from ..errors import DncompressError
from ..export.onnx import GraphBuilder, build_onnx
from ..network import Network


def _int_initializer(g: GraphBuilder, hint: str, values: np.ndarray, bits: int) -> str:
    """int8 storage, or packed INT4 where the opset has it (21+) and the values fit."""
    name = g.name(hint)
    if bits <= 4 and g.opset >= 21:
        g.initializers.append(helper.make_tensor(name, TensorProto.INT4, values.shape,
                                                 values.astype(np.int8).reshape(-1).tolist()))
    else:
        g.initializers.append(numpy_helper.from_array(values.astype(np.int8), name))
    return name


def qdq_conv_hook(g: GraphBuilder, layer, x: str, weights: np.ndarray):
    """Weights: integers * per-channel scale; input: fake quantization over [act_min, act_max]."""
    if layer.type != "quantize_convolutional":
        return None
    if layer.method != "affine":
        raise DncompressError(f"layer {layer.index}: DoReFa [quantize_convolutional] has no QDQ export; "
                              "re-quantize with `dncompress quantize`")
    if layer.bitw > 8 or layer.bita > 8:
        raise DncompressError(f"layer {layer.index}: QDQ export handles up to 8 bits")
    scale = symmetric_scale(channel_max_abs(weights, layer.per_channel), layer.bitw)
    q = quantize(weights, scale, 0, *signed_range(layer.bitw))
    per_channel = np.broadcast_to(scale.reshape(-1), (layer.filters,)).astype(np.float32)
    zero_name = _int_initializer(g, "w_zero", np.zeros(layer.filters, np.int8), layer.bitw)
    w_name = g.op("DequantizeLinear", [_int_initializer(g, f"conv{layer.index}_wq", q, layer.bitw),
                                       g.const("w_scale", per_channel), zero_name], f"conv{layer.index}_w", axis=0)
    if layer.bita:
        a_scale, a_zero = affine_params(*layer.act_range, layer.bita)
        qmin, qmax = unsigned_range(layer.bita)
        if qmax < 255:
            # fewer than 8 bits in a uint8 container: clip to the representable range first
            x = g.op("Clip", [x, g.const("lo", np.float32((qmin - a_zero) * a_scale)),
                              g.const("hi", np.float32((qmax - a_zero) * a_scale))])
        s, z = g.const("a_scale", np.float32(a_scale)), g.const("a_zero", np.uint8(a_zero))
        x = g.op("DequantizeLinear", [g.op("QuantizeLinear", [x, s, z]), s, z], f"conv{layer.index}_in")
    return x, w_name


def build_qdq_onnx(net: Network, opset: int = 13, **kwargs) -> onnx.ModelProto:
    """build_onnx with quantized convs expressed as QDQ."""
    return build_onnx(net, opset, conv_hook=qdq_conv_hook, **kwargs)
