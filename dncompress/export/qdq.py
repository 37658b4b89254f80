"""QDQ ONNX: QuantizeLinear/DequantizeLinear around the convs of [quantize_convolutional] layers, so
onnxruntime runs the quantized model (int8 weight initializers per output channel; int4 at opset 21)."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from ..errors import DncompressError
from ..network import Network
from ..quant.quantizers import activation_params, unsigned_range
from .onnx import GraphBuilder, build_onnx

INT4_OPSET = 21


def weight_initializer(g: GraphBuilder, hint: str, q: np.ndarray, int4: bool) -> str:
    """The integer weights as an int8 initializer, or int4 (packed by onnx) when `int4`."""
    name = g.name(hint)
    if int4:
        g.initializers.append(helper.make_tensor(name, TensorProto.INT4, q.shape, q.reshape(-1).tolist()))
    else:
        g.initializers.append(onnx.numpy_helper.from_array(q.astype(np.int8), name))
    return name


def qdq_weights(g: GraphBuilder, layer, int4: bool) -> str:
    q, scale = layer.weight_codes()
    int4 = int4 and layer.bitw <= 4
    zero = np.zeros(scale.shape, np.int8)
    zero_name = weight_initializer(g, f"conv{layer.index}_wzp", zero, int4)
    q_name = weight_initializer(g, f"conv{layer.index}_wq", q, int4)
    return g.op("DequantizeLinear", [q_name, g.const(f"conv{layer.index}_ws", scale.astype(np.float32)), zero_name],
                f"conv{layer.index}_w", axis=0)


def qdq_activation(g: GraphBuilder, layer, x: str) -> str:
    """Clip to the b-bit grid's ends, then uint8 Quantize/DequantizeLinear with the b-bit scale."""
    scale, zero_point = activation_params(*layer.act_range, layer.bita)
    qmin, qmax = unsigned_range(layer.bita)
    if layer.bita < 8:
        x = g.op("Clip", [x, g.const("lo", np.float32((qmin - zero_point) * scale)),
                          g.const("hi", np.float32((qmax - zero_point) * scale))])
    s, z = g.const("act_scale", np.float32(scale)), g.const("act_zp", np.uint8(zero_point))
    return g.op("DequantizeLinear", [g.op("QuantizeLinear", [x, s, z]), s, z], f"conv{layer.index}_x")


def qdq_hook(int4: bool):
    """A GraphBuilder conv_hook: affine [quantize_convolutional] layers get QDQ weights and inputs."""
    def hook(g: GraphBuilder, layer, x: str, w_name: str) -> tuple[str, str]:
        if layer.type != "quantize_convolutional":
            return x, w_name
        if layer.quant_weights != "affine" or (layer.bita and layer.act_range is None):
            raise DncompressError(f"layer {layer.index}: DoReFa quantization has no QDQ export "
                                  "(only quant_weights=affine with act_min/act_max)")
        # the float copy emit_conv made is replaced by the integer one
        g.initializers = [t for t in g.initializers if t.name != w_name]
        if layer.bita:
            x = qdq_activation(g, layer, x)
        return x, qdq_weights(g, layer, int4)
    return hook


def build_qdq_onnx(net: Network, opset: int = 13, int4: bool = False, **options) -> onnx.ModelProto:
    """build_onnx with QDQ quantized convs; int4 weights (bitw <= 4) need opset 21."""
    if int4 and opset < INT4_OPSET:
        raise DncompressError(f"int4 weights need opset >= {INT4_OPSET}")
    return build_onnx(net, opset, conv_hook=qdq_hook(int4), **options)
