"""QDQ ONNX for quantized networks: integer weight initializers with DequantizeLinear (per output
channel), and QuantizeLinear/DequantizeLinear on each quantized conv's input; other layers stay float.
A conv with a quantized output (`bito`, written for integer runtimes) also gets its bias as int32 on the
input x weight scale grid and Q/DQ on its output before the activation: the pattern onnxruntime fuses into
QLinearConv, so the graph runs on integer kernels and still computes what the engine computes."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..engine.quantize import affine_params, channel_max_abs, quantize, signed_range, symmetric_scale, unsigned_range
from ..errors import DncompressError
from ..export.onnx import GraphBuilder, build_onnx, emit_activation
from ..network import Network
from .apply import bias_scale


def _int_initializer(g: GraphBuilder, hint: str, values: np.ndarray, bits: int) -> str:
    """int8 storage, or packed INT4 where the opset has it (21+) and the values fit."""
    name = g.name(hint)
    if bits <= 4 and g.opset >= 21:
        g.initializers.append(helper.make_tensor(name, TensorProto.INT4, values.shape,
                                                 values.astype(np.int8).reshape(-1).tolist()))
    else:
        g.initializers.append(numpy_helper.from_array(values.astype(np.int8), name))
    return name


def qdq_conv_hook(g: GraphBuilder, layer, x: str, weights: np.ndarray, after: dict | None = None):
    """Weights: integers * per-channel scale; input: fake quantization over [act_min, act_max]; with bito,
    int32 bias, Q/DQ on the output and (where `after` names the grid of every reader) after the activation."""
    if not layer.is_quantized:
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
        x = qdq(g, x, a_scale, a_zero, f"conv{layer.index}_in")
    if not getattr(layer, "bito", 0):
        return x, w_name
    if not layer.bita:
        raise DncompressError(f"layer {layer.index}: a quantized conv output (bito) needs a quantized input (bita)")
    return x, w_name, int32_bias(g, layer, a_scale), lambda y: output_qdq(g, layer, y, (after or {}).get(layer.index))


def int32_bias(g: GraphBuilder, layer, act_scale: float) -> str:
    """DequantizeLinear of the int32 bias on the grid quantize_network snapped it to (scale s_x * s_w)."""
    w, b = layer.folded()
    scale = bias_scale(w, layer.bitw, layer.per_channel, act_scale).astype(np.float32)
    q = np.round(b.astype(np.float64) / scale).astype(np.int32)
    return g.op("DequantizeLinear", [g.const(f"conv{layer.index}_bq", q), g.const("b_scale", scale),
                                     g.const("b_zero", np.zeros(layer.filters, np.int32))], f"conv{layer.index}_b",
                axis=0)


def output_qdq(g: GraphBuilder, layer, y: str, after: tuple[float, int] | None) -> str:
    """Q/DQ of the conv output before the activation over [out_min, out_max], the activation, and Q/DQ on
    the grid of its readers when they all share one: onnxruntime then runs the activation (and maxpool,
    upsample, concat) on uint8 too. Exact: these layers are monotone, so quantizing before them equals
    quantizing after them, which is where the engine quantizes (at the next conv's input)."""
    if layer.bito != 8:
        raise DncompressError(f"layer {layer.index}: QDQ export quantizes conv outputs to 8 bits only")
    y = qdq(g, y, *affine_params(*layer.out_range, layer.bito), f"conv{layer.index}_out")
    y = emit_activation(g, y, layer.activation)
    return qdq(g, y, *after, f"conv{layer.index}_act") if after else y


def qdq(g: GraphBuilder, x: str, scale: float, zero: int, hint: str) -> str:
    s, z = g.const(f"{hint}_scale", np.float32(scale)), g.const(f"{hint}_zero", np.uint8(zero))
    return g.op("DequantizeLinear", [g.op("QuantizeLinear", [x, s, z]), s, z], hint)


PASS_THROUGH = ("maxpool", "max", "route")   # monotone per element: quantizing before or after them is the same


def reader_grids(net: Network) -> dict[int, tuple[float, int]]:
    """For each conv with a quantized output: the uint8 (scale, zero point) that every reader of its output
    quantizes it to, when all readers (through maxpool, route, unscaled upsample) are convs with 8-bit
    inputs over one range; convs with any other reader are left out."""
    readers: dict[int, list] = {}
    for layer in net.layers:
        for i in layer.inputs:
            readers.setdefault(i, []).append(layer)

    def grids(index: int) -> set | None:
        found = set()
        for reader in readers.get(index, []):
            if reader.is_quantized and reader.bita == 8 and reader.act_range:
                found.add(affine_params(*reader.act_range, 8))
            elif reader.type in PASS_THROUGH or (reader.type == "upsample" and reader.scale == 1.0):
                more = grids(reader.index)
                if more is None:
                    return None
                found |= more
            else:
                return None
        return found

    out = {}
    for layer in net.layers:
        if getattr(layer, "bito", 0):
            found = grids(layer.index)
            if found and len(found) == 1:
                out[layer.index] = found.pop()
    return out


def build_qdq_onnx(net: Network, opset: int = 13, **kwargs) -> onnx.ModelProto:
    """build_onnx with quantized convs expressed as QDQ."""
    after = reader_grids(net)
    return build_onnx(net, opset, conv_hook=lambda g, layer, x, w: qdq_conv_hook(g, layer, x, w, after), **kwargs)
