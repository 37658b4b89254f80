"""ONNX writer: one emitter per layer type (like the layer registry), BN folded into Conv, optional
YOLO decode and NonMaxSuppression in the graph. onnxruntime runs the result as a detect/eval backend."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..detect import decode_image
from ..errors import DncompressError
from ..fsutil import atomic_write
from ..layers import Layer
from ..network import Network


class GraphBuilder:
    """Collects nodes and initializers with unique names. `conv_hook(builder, layer, x, weights)` returns
    a conv's (input name, weight name) given its input name and folded weights array, or None to keep
    the float defaults (quantization inserts QuantizeLinear/DequantizeLinear there); or (input name,
    weight name, bias name or None, output(y) -> the layer's output name, activation included)."""

    def __init__(self, opset: int, conv_hook: Callable | None = None):
        self.opset = opset
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.conv_hook = conv_hook
        self._count = 0

    def name(self, hint: str) -> str:
        self._count += 1
        return f"{hint}_{self._count}"

    def const(self, hint: str, value) -> str:
        name = self.name(hint)
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, op_type: str, inputs: list[str], hint: str | None = None, **attrs) -> str:
        out = self.name(hint or op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out


def emit_activation(g: GraphBuilder, x: str, activation: str) -> str:
    if activation == "linear":
        return x
    if activation == "leaky":
        return g.op("LeakyRelu", [x], alpha=0.1)
    if activation == "relu":
        return g.op("Relu", [x])
    if activation == "logistic":
        return g.op("Sigmoid", [x])
    if activation == "mish":
        return g.op("Mul", [x, g.op("Tanh", [g.op("Softplus", [x])])], "mish")
    if activation == "swish":
        return g.op("Mul", [x, g.op("Sigmoid", [x])], "swish")
    if activation == "relu6":
        return g.op("Clip", [x, g.const("lo", np.float32(0)), g.const("hi", np.float32(6))], "relu6")
    if activation == "ramp":
        return g.op("Add", [g.op("Relu", [x]), g.op("Mul", [x, g.const("k", np.float32(0.1))])], "ramp")
    if activation == "hard_mish":
        gate = g.op("Clip", [g.op("Add", [x, g.const("two", np.float32(2))]), g.const("lo", np.float32(0)),
                             g.const("hi", np.float32(2))])
        return g.op("Mul", [x, g.op("Mul", [gate, g.const("half", np.float32(0.5))])], "hard_mish")
    if activation == "tanh":
        return g.op("Tanh", [x])
    raise DncompressError(f"activation '{activation}' has no ONNX export")


def emit_conv(g: GraphBuilder, layer: Layer, xs: list[str]) -> str:
    w, b = layer.folded()
    if getattr(layer, "xnor", False):       # binarized input: +1 where x > 0, else -1
        xs = [g.op("Where", [g.op("Greater", [xs[0], g.const("zero", np.float32(0))]),
                             g.const("one", np.float32(1)), g.const("minus_one", np.float32(-1))], "xnor")]
    hooked = g.conv_hook(g, layer, xs[0], w) if g.conv_hook is not None else None
    if hooked is None and getattr(layer, "bita", 0):
        raise DncompressError(f"layer {layer.index} [quantize_convolutional] quantizes its input, which a float "
                              "export cannot express; export quantized networks as QDQ (quantize --format onnx)")
    # a hook returns (x, w) or (x, w, bias, output): bias None = float; output(y) emits what follows the
    # conv (activation included) and names the layer's output
    x, w_name, b_name, output = (*(hooked or (xs[0], g.const(f"conv{layer.index}_w", w))), None, None)[:4]
    d = getattr(layer, "dilation", 1)      # Darknet pads a dilated conv by pad * dilation
    y = g.op("Conv", [x, w_name, b_name or g.const(f"conv{layer.index}_b", b)], f"conv{layer.index}",
             kernel_shape=[layer.size] * 2, strides=[layer.stride] * 2, pads=[layer.pad * d] * 4, group=layer.groups,
             **({"dilations": [d, d]} if d > 1 else {}))
    return output(y) if output else emit_activation(g, y, layer.activation)


def emit_summax(g: GraphBuilder, layer: Layer, xs: list[str]) -> str:
    """[summax_convolutional] from standard ops: the k*k strided Slices of the -inf (+inf) padded input
    concatenated into im2col columns, plus W+ (W-), ReduceMax (ReduceMin) over the taps; then BN and bias
    as Mul/Add. Materializes (N, filters, C/groups*k*k, Ho, Wo) sums: fine for small layers only."""
    (c, _, _), (o, ho, wo), k, s, p = layer.in_shapes[0], layer.out_shape, layer.size, layer.stride, layer.pad
    groups, taps = layer.groups, c // layer.groups * k * k
    name = f"summax{layer.index}"
    halves = []
    for fill, weights, reduce in ((-np.inf, "weights_max", "ReduceMax"), (np.inf, "weights_min", "ReduceMin")):
        x = g.op("Pad", [xs[0], g.const("pads", np.array([0, 0, p, p, 0, 0, p, p])),
                         g.const("fill", np.float32(fill))], f"{name}_pad") if p else xs[0]
        shifted = [g.op("Unsqueeze", [g.op("Slice", [x, g.const("starts", np.array([dy, dx])),
                                                     g.const("ends", np.array([dy + (ho - 1) * s + 1,
                                                                               dx + (wo - 1) * s + 1])),
                                                     g.const("axes", np.array([2, 3])),
                                                     g.const("steps", np.array([s, s]))]),
                                  g.const("axes", np.array([2]))])
                   for dy in range(k) for dx in range(k)]
        cols = g.op("Reshape", [g.op("Concat", shifted, f"{name}_taps", axis=2),
                                g.const("shape", np.array([0, groups, 1, taps, ho, wo]))])
        w = layer.params[weights].astype(np.float32).reshape(1, groups, o // groups, taps, 1, 1)
        sums = g.op("Add", [cols, g.const(f"{name}_{weights}", w)])
        if g.opset >= 18:
            extreme = g.op(reduce, [sums, g.const("axes", np.array([3]))], keepdims=0)
        else:
            extreme = g.op(reduce, [sums], axes=[3], keepdims=0)
        halves.append(extreme)
    y = g.op("Reshape", [g.op("Add", halves, name), g.const("shape", np.array([0, o, ho, wo]))])
    scale, shift = (v.astype(np.float32).reshape(1, o, 1, 1) for v in layer.output_affine())
    if layer.batch_normalize:
        y = g.op("Mul", [y, g.const(f"{name}_scale", scale)])
    return emit_activation(g, g.op("Add", [y, g.const(f"{name}_shift", shift)]), layer.activation)


def emit_maxpool(g: GraphBuilder, layer: Layer, xs: list[str]) -> str:
    """Darknet's padding as explicit asymmetric pads: padding//2 before, the rest (if needed) after."""
    _, h, w = layer.in_shapes[0]
    _, ho, wo = layer.out_shape
    before = layer.padding // 2
    after_h = max(0, (ho - 1) * layer.stride + layer.size - h - before)
    after_w = max(0, (wo - 1) * layer.stride + layer.size - w - before)
    x, pads = xs[0], [before, before, after_h, after_w]
    if max(pads) >= layer.size:
        # onnxruntime rejects MaxPool pads >= kernel (Darknet allows them, e.g. size=1 padding=1):
        # pad with -inf first, as the engine does
        x = g.op("Pad", [x, g.const("pads", np.array([0, 0, before, before, 0, 0, after_h, after_w])),
                         g.const("neg_inf", np.float32(-np.inf))], f"maxpool{layer.index}_pad")
        pads = [0, 0, 0, 0]
    return g.op("MaxPool", [x], f"maxpool{layer.index}", kernel_shape=[layer.size] * 2,
                strides=[layer.stride] * 2, pads=pads)


def emit_upsample(g: GraphBuilder, layer: Layer, xs: list[str]) -> str:
    scales = g.const("scales", np.array([1, 1, layer.stride, layer.stride], np.float32))
    y = g.op("Resize", [xs[0], "", scales], f"upsample{layer.index}", mode="nearest",
             coordinate_transformation_mode="asymmetric", nearest_mode="floor")
    return g.op("Mul", [y, g.const("scale", np.float32(layer.scale))]) if layer.scale != 1.0 else y


def emit_route(g: GraphBuilder, layer: Layer, xs: list[str]) -> str:
    parts = []
    for x, shape, sl in zip(xs, layer.in_shapes, layer.channel_slices()):
        if sl.stop - sl.start == shape[0]:
            parts.append(x)
        else:
            parts.append(g.op("Slice", [x, g.const("starts", np.array([sl.start])), g.const("ends", np.array([sl.stop])),
                                        g.const("axes", np.array([1]))], f"route{layer.index}_slice"))
    return parts[0] if len(parts) == 1 else g.op("Concat", parts, f"route{layer.index}", axis=1)




def emit_identity(g: GraphBuilder, layer: Layer, xs: list[str]) -> str:
    return xs[0]


def emit_avgpool(g: GraphBuilder, layer: Layer, xs: list[str]) -> str:
    return g.op("GlobalAveragePool", xs, f"avgpool{layer.index}")


# --- Darknet-world layers (issue 18): shortcut of other shapes, classifier, reorg, attention, local ---
def emit_shortcut(g: GraphBuilder, layer: Layer, xs: list[str]) -> str:
    """Same shapes: Add. Otherwise each `from` input's leading flat values, zero-padded to the output size,
    as Shortcut.forward (Darknet's shortcut_multilayer_cpu)."""
    out = layer.out_shape
    size = int(np.prod(out))
    terms = [xs[0]]
    for x, shape, m in zip(xs[1:], layer.in_shapes[1:], layer.added_values()):
        if tuple(shape) == tuple(out):
            terms.append(x)
            continue
        flat = g.op("Flatten", [x], axis=1)
        if m < int(np.prod(shape)):
            flat = g.op("Slice", [flat, g.const("starts", np.array([0])), g.const("ends", np.array([m])),
                                  g.const("axes", np.array([1]))])
        if m < size:
            flat = g.op("Pad", [flat, g.const("pads", np.array([0, 0, 0, size - m]))])
        terms.append(g.op("Reshape", [flat, g.const("shape", np.array([-1, *out]))]))
    y = terms[0]
    for term in terms[1:]:
        y = g.op("Add", [y, term], f"shortcut{layer.index}")
    return emit_activation(g, y, layer.activation)


def emit_softmax(g: GraphBuilder, layer: Layer, xs: list[str]) -> str:
    """Softmax over each group's C*H*W values, as Darknet's softmax_cpu."""
    x = g.op("Reshape", [xs[0], g.const("shape", np.array([0, layer.groups, -1]))])
    if layer.temperature != 1.0:
        x = g.op("Div", [x, g.const("temperature", np.float32(layer.temperature))])
    y = g.op("Softmax", [x], f"softmax{layer.index}", axis=2)
    return g.op("Reshape", [y, g.const("shape", np.array([0, *layer.out_shape]))])


def emit_connected(g: GraphBuilder, layer: Layer, xs: list[str]) -> str:
    w, b = layer.folded()
    y = g.op("Gemm", [g.op("Flatten", [xs[0]], axis=1), g.const(f"fc{layer.index}_w", w),
                      g.const(f"fc{layer.index}_b", b)], f"connected{layer.index}", transB=1)
    y = emit_activation(g, y, layer.activation)
    return g.op("Reshape", [y, g.const("shape", np.array([0, layer.filters, 1, 1]))])


def emit_crop(g: GraphBuilder, layer: Layer, xs: list[str]) -> str:
    y = g.op("Slice", [xs[0], g.const("starts", np.array([layer.top, layer.left])),
                       g.const("ends", np.array([layer.top + layer.crop_h, layer.left + layer.crop_w])),
                       g.const("axes", np.array([2, 3]))], f"crop{layer.index}")
    if layer.scale == 1.0 and layer.shift == 0.0:
        return y
    return g.op("Add", [g.op("Mul", [y, g.const("scale", np.float32(layer.scale))]),
                        g.const("shift", np.float32(layer.shift))])


def emit_batchnorm(g: GraphBuilder, layer: Layer, xs: list[str]) -> str:
    scale, shift = (v.astype(np.float32).reshape(1, -1, 1, 1) for v in layer.output_affine())
    return g.op("Add", [g.op("Mul", [xs[0], g.const("bn_scale", scale)]), g.const("bn_shift", shift)],
                f"batchnorm{layer.index}")


def emit_reorg(g: GraphBuilder, layer: Layer, xs: list[str]) -> str:
    """Reshape, Transpose, Reshape: the same index maps as Reorg/Reorg3d.forward."""
    (c, h, w), s = layer.in_shapes[0], layer.stride
    view = [0, c // (s * s), h, s, w, s] if layer.type == "reorg" else [0, c, h // s, s, w // s, s]
    y = g.op("Transpose", [g.op("Reshape", [xs[0], g.const("shape", np.array(view))])], perm=[0, 3, 5, 1, 2, 4])
    return g.op("Reshape", [y, g.const("shape", np.array([0, *layer.out_shape]))], f"reorg{layer.index}")


def emit_attention(g: GraphBuilder, layer: Layer, xs: list[str]) -> str:
    """[sam] and [scale_channels]: features * attention (broadcast over H, W or C)."""
    return emit_activation(g, g.op("Mul", xs, f"{layer.type}{layer.index}"), layer.activation)


def emit_local(g: GraphBuilder, layer: Layer, xs: list[str]) -> str:
    """Patches from k*k strided Slices, then one Einsum with per-location filters."""
    (c, _, _), (n, ho, wo), k, s, p = layer.in_shapes[0], layer.out_shape, layer.size, layer.stride, layer.pad
    x = g.op("Pad", [xs[0], g.const("pads", np.array([0, 0, p, p, 0, 0, p, p]))]) if p else xs[0]
    taps = [g.op("Unsqueeze", [g.op("Slice", [x, g.const("starts", np.array([dy, dx])),
                                              g.const("ends", np.array([dy + (ho - 1) * s + 1, dx + (wo - 1) * s + 1])),
                                              g.const("axes", np.array([2, 3])), g.const("steps", np.array([s, s]))]),
                               g.const("axes", np.array([2]))])
            for dy in range(k) for dx in range(k)]
    cols = g.op("Reshape", [g.op("Concat", taps, axis=2), g.const("shape", np.array([0, c * k * k, ho * wo]))])
    w = layer.params["weights"].reshape(ho * wo, n, -1).astype(np.float32)
    y = g.op("Einsum", [g.const(f"local{layer.index}_w", w), cols], equation="lnk,bkl->bnl")
    y = g.op("Add", [g.op("Reshape", [y, g.const("shape", np.array([0, n, ho, wo]))]),
                     g.const(f"local{layer.index}_b", layer.params["biases"].reshape(1, n, ho, wo).astype(np.float32))])
    return emit_activation(g, y, layer.activation)


def emit_local_avgpool(g: GraphBuilder, layer: Layer, xs: list[str]) -> str:
    _, h, w = layer.in_shapes[0]
    _, ho, wo = layer.out_shape
    before = layer.padding // 2
    after_h = max(0, (ho - 1) * layer.stride + layer.size - h - before)
    after_w = max(0, (wo - 1) * layer.stride + layer.size - w - before)
    return g.op("AveragePool", xs, f"local_avgpool{layer.index}", kernel_shape=[layer.size] * 2,
                strides=[layer.stride] * 2, pads=[before, before, after_h, after_w], count_include_pad=0)


DARKNET_EMITTERS = {
    "shortcut": emit_shortcut, "softmax": emit_softmax, "cost": emit_identity, "detection": emit_identity,
    "contrastive": emit_identity, "connected": emit_connected, "crop": emit_crop, "batchnorm": emit_batchnorm,
    "reorg": emit_reorg, "reorg3d": emit_reorg, "sam": emit_attention, "scale_channels": emit_attention,
    "local": emit_local, "local_avgpool": emit_local_avgpool, "gaussian_yolo": emit_identity,
}


# --- recurrent layers (issue 18): one time step from the zero state, as Network.forward runs them ---
def emit_recurrent_part(g: GraphBuilder, layer: Layer, name: str, x: str | None) -> str:
    """Sub-layer `name` of a recurrent layer on x (None: the zero state -> a constant, broadcast over the
    batch): Gemm on the flattened input ([rnn]/[gru]/[lstm]) or Conv ([crnn]), then its activation."""
    if x is None:
        return g.const(f"{layer.type}{layer.index}_{name}_zero", layer.zero_input_output(name))
    w, b = layer.folded(name)
    activation = layer.part(name)[2]
    hint = f"{layer.type}{layer.index}_{name}"
    if layer.type == "crnn":
        y = g.op("Conv", [x, g.const(f"{hint}_w", w), g.const(f"{hint}_b", b)], hint,
                 kernel_shape=[layer.size] * 2, pads=[layer.pad] * 4, group=layer.groups)
    else:
        y = g.op("Gemm", [g.op("Flatten", [x], axis=1), g.const(f"{hint}_w", w), g.const(f"{hint}_b", b)],
                 hint, transB=1)
    if activation == "loggy":           # 2 sigmoid(x) - 1
        return g.op("Sub", [g.op("Mul", [g.op("Sigmoid", [y]), g.const("two", np.float32(2))]),
                            g.const("one", np.float32(1))])
    return emit_activation(g, y, activation)


def emit_recurrent(g: GraphBuilder, layer: Layer, xs: list[str]) -> str:
    """[rnn]/[crnn]: output(input(x) + self(0)); [gru]: (1 - z) h~ (z h vanishes); [lstm]: o tanh(i g)."""
    def part(name: str, x: str | None) -> str:
        return emit_recurrent_part(g, layer, name, x)

    def gate(state: str, inp: str, squash: str) -> str:
        return g.op(squash, [g.op("Add", [part(inp, xs[0]), part(state, None)])])
    if layer.type in ("rnn", "crnn"):
        y = part("output", g.op("Add", [part("input", xs[0]), part("self", None)]))
    elif layer.type == "gru":
        z = gate("state_z", "input_z", "Sigmoid")
        y = g.op("Mul", [g.op("Sub", [g.const("one", np.float32(1)), z]), gate("state_h", "input_h", "Sigmoid")])
    else:
        cell = g.op("Mul", [gate("wi", "ui", "Sigmoid"), gate("wg", "ug", "Tanh")])
        y = g.op("Mul", [gate("wo", "uo", "Sigmoid"), g.op("Tanh", [cell])])
    return g.op("Reshape", [y, g.const("shape", np.array([0, *layer.out_shape]))], f"{layer.type}{layer.index}")


def _slice(g: GraphBuilder, x: str, start: int, stop: int, axis: int) -> str:
    return g.op("Slice", [x, g.const("starts", np.array([start])), g.const("ends", np.array([stop])),
                          g.const("axes", np.array([axis]))])


def emit_decode_gaussian(g: GraphBuilder, layer: Layer, raw: str) -> tuple[str, str]:
    """[Gaussian_yolo] as detect.decode_gaussian_yolo: channels per anchor x, ux, y, uy, w, uw, h, uh,
    objectness, classes; boxes from the means, scores = objectness * sigmoid(class) * (1 - mean of the
    four sigmoid uncertainties)."""
    a, k = len(layer.anchors), layer.classes
    _, h, w = layer.in_shapes[0]
    t = g.op("Reshape", [raw, g.const("shape", np.array([-1, a, 9 + k, h * w]))], f"head{layer.index}")
    sig = g.op("Sigmoid", [t])
    rows, cols = np.meshgrid(np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32), indexing="ij")
    grid = np.stack([cols.ravel(), rows.ravel()])[None, None]          # (1, 1, 2, H*W)
    xy = g.op("Concat", [_slice(g, sig, 0, 1, 2), _slice(g, sig, 2, 3, 2)], axis=2)
    xy = g.op("Div", [g.op("Add", [xy, g.const("grid", grid)]),
                      g.const("cells", np.array([w, h], np.float32).reshape(1, 1, 2, 1))])
    anchors = (layer.anchors / np.array(layer.net_size, np.float32)).astype(np.float32).reshape(1, a, 2, 1)
    twh = g.op("Concat", [_slice(g, t, 4, 5, 2), _slice(g, t, 6, 7, 2)], axis=2)
    wh = g.op("Mul", [g.op("Exp", [twh]), g.const("anchors", anchors)])
    box = g.op("Concat", [xy, wh], axis=2)
    box = g.op("Reshape", [g.op("Transpose", [box], perm=[0, 1, 3, 2]), g.const("shape", np.array([-1, a * h * w, 4]))])
    sigmas = g.op("Concat", [_slice(g, sig, c, c + 1, 2) for c in (1, 3, 5, 7)], axis=2)
    if g.opset >= 18:
        mean = g.op("ReduceMean", [sigmas, g.const("axes", np.array([2]))], keepdims=1)
    else:
        mean = g.op("ReduceMean", [sigmas], axes=[2], keepdims=1)
    certainty = g.op("Sub", [g.const("one", np.float32(1)), mean])
    scores = g.op("Mul", [g.op("Mul", [_slice(g, sig, 8, 9, 2), _slice(g, sig, 9, 9 + k, 2)]), certainty])
    scores = g.op("Reshape", [g.op("Transpose", [scores], perm=[0, 1, 3, 2]), g.const("shape", np.array([-1, a * h * w, k]))])
    return box, scores


def emit_decode_detection(g: GraphBuilder, layer: Layer, raw: str) -> tuple[str, str]:
    """YOLOv1 [detection] as detect.decode_detection: boxes (N, side*side*num, 4), scores = confidence *
    class probability (softmax'd with softmax=1)."""
    if layer.coords != 4:
        raise layer.error(f"coords={layer.coords}: boxes of [detection] are decoded with coords=4 only", "coords")
    side, n, k = layer.side, layer.num, layer.classes
    cells = side * side
    flat = g.op("Flatten", [raw], f"head{layer.index}", axis=1)
    probs = g.op("Reshape", [_slice(g, flat, 0, cells * k, 1), g.const("shape", np.array([-1, cells, 1, k]))])
    if layer.softmax:
        probs = g.op("Softmax", [probs], axis=3)
    confidence = g.op("Reshape", [_slice(g, flat, cells * k, cells * (k + n), 1),
                                  g.const("shape", np.array([-1, cells, n, 1]))])
    t = g.op("Reshape", [_slice(g, flat, cells * (k + n), cells * (k + 5 * n), 1),
                         g.const("shape", np.array([-1, cells, n, 4]))])
    row, col = np.divmod(np.arange(cells, dtype=np.float32), side)
    grid = np.stack([col, row], axis=1).reshape(1, cells, 1, 2)
    xy = g.op("Div", [g.op("Add", [_slice(g, t, 0, 2, 3), g.const("grid", grid)]), g.const("side", np.float32(side))])
    wh = _slice(g, t, 2, 4, 3)
    if layer.sqrt:
        wh = g.op("Mul", [wh, wh])
    box = g.op("Reshape", [g.op("Concat", [xy, wh], axis=3), g.const("shape", np.array([-1, cells * n, 4]))])
    scores = g.op("Reshape", [g.op("Mul", [confidence, probs]), g.const("shape", np.array([-1, cells * n, k]))])
    return box, scores


DARKNET_DECODERS = {"gaussian_yolo": emit_decode_gaussian, "detection": emit_decode_detection}


RECURRENT_EMITTERS = {"rnn": emit_recurrent, "gru": emit_recurrent, "lstm": emit_recurrent, "crnn": emit_recurrent}
# --- end of the Darknet-world block ---


EMITTERS: dict[str, Callable[[GraphBuilder, Layer, list[str]], str]] = {
    "convolutional": emit_conv, "quantize_convolutional": emit_conv, "maxpool": emit_maxpool,
    "upsample": emit_upsample, "route": emit_route, "shortcut": emit_shortcut, "dropout": emit_identity,
    "avgpool": emit_avgpool, "yolo": emit_identity, "region": emit_identity, "summax_convolutional": emit_summax,
    **DARKNET_EMITTERS, **RECURRENT_EMITTERS,
}


def emit_decode(g: GraphBuilder, layer: Layer, raw: str) -> tuple[str, str]:
    """Raw head (N, A*(5+K), H, W) -> boxes (N, A*H*W, 4) cx cy w h relative to the input, and scores
    (N, A*H*W, K) = objectness * class score; the same order and formulas as detect.decode_yolo/region."""
    if layer.type in DARKNET_DECODERS:
        return DARKNET_DECODERS[layer.type](g, layer, raw)
    if getattr(layer, "tree", "") or getattr(layer, "class_map", ""):
        raise layer.error("this head has no ONNX decode (tree= hierarchical softmax); export without --decode")
    a, k = len(layer.anchors), layer.classes
    _, h, w = layer.in_shapes[0]
    t = g.op("Reshape", [raw, g.const("shape", np.array([-1, a, 5 + k, h * w]))], f"head{layer.index}")

    def part(start: int, stop: int) -> str:
        return g.op("Slice", [t, g.const("starts", np.array([start])), g.const("ends", np.array([stop])),
                              g.const("axes", np.array([2]))])

    rows, cols = np.meshgrid(np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32), indexing="ij")
    grid = np.stack([cols.ravel(), rows.ravel()])[None, None]          # (1, 1, 2, H*W)
    scale = getattr(layer, "scale_x_y", 1.0)
    new_coords = getattr(layer, "new_coords", False)    # logistic already applied by the conv

    def act(x: str) -> str:
        return x if new_coords else g.op("Sigmoid", [x])
    xy = act(part(0, 2))
    if scale != 1.0:
        xy = g.op("Sub", [g.op("Mul", [xy, g.const("s", np.float32(scale))]), g.const("o", np.float32((scale - 1) / 2))])
    xy = g.op("Div", [g.op("Add", [xy, g.const("grid", grid)]), g.const("cells", np.array([w, h], np.float32).reshape(1, 1, 2, 1))])
    norm = np.array(layer.net_size if layer.type == "yolo" else (w, h), np.float32)
    anchors = (layer.anchors / norm).astype(np.float32).reshape(1, a, 2, 1)
    if new_coords:
        twh = part(2, 4)
        wh = g.op("Mul", [g.op("Mul", [twh, twh]), g.const("anchors", 4 * anchors)])
    else:
        wh = g.op("Mul", [g.op("Exp", [part(2, 4)]), g.const("anchors", anchors)])
    box = g.op("Concat", [xy, wh], axis=2)
    box = g.op("Reshape", [g.op("Transpose", [box], perm=[0, 1, 3, 2]), g.const("shape", np.array([-1, a * h * w, 4]))])
    logits = part(5, 5 + k)
    probs = g.op("Softmax", [logits], axis=2) if layer.type == "region" and layer.softmax else act(logits)
    scores = g.op("Mul", [act(part(4, 5)), probs])
    scores = g.op("Reshape", [g.op("Transpose", [scores], perm=[0, 1, 3, 2]), g.const("shape", np.array([-1, a * h * w, k]))])
    return box, scores


def build_onnx(net: Network, opset: int = 13, decode: bool = False, nms: bool = False,
               dynamic_batch: bool = False, conv_hook: Callable | None = None,
               nms_iou: float = 0.45, nms_score: float = 0.25, nms_max_per_class: int = 100) -> onnx.ModelProto:
    """The network as an ONNX model. Outputs: the raw head tensors (like Network.forward), or with
    `decode` boxes + scores, and with `nms` also NonMaxSuppression's selected indices."""
    if nms and not decode:
        raise DncompressError("--nms needs --decode (NMS runs on decoded boxes)")
    if not 13 <= opset <= 21:
        raise DncompressError(f"opset {opset} is not supported; choose 13..21 (Resize, Slice and Softmax "
                              "as used here need 13)")
    for layer in net.layers:
        if layer.param_shapes() and not layer.params:
            raise DncompressError(f"layer {layer.index} [{layer.type}] has no weights loaded", net.file)
    g = GraphBuilder(opset, conv_hook)
    batch = "batch" if dynamic_batch else 1
    c, h, w = net.input_shape
    inputs = [helper.make_tensor_value_info("images", TensorProto.FLOAT, [batch, c, h, w])]
    names: dict[int, str] = {}
    for layer in net.layers:
        emitter = EMITTERS.get(layer.type)
        if emitter is None:
            raise DncompressError(f"layer {layer.index} [{layer.type}] has no ONNX export", net.file)
        names[layer.index] = emitter(g, layer, [names[i] if i >= 0 else "images" for i in layer.inputs])
    heads = net.heads
    if decode and not heads:
        raise DncompressError("the cfg has no [yolo] or [region] layer, so there is nothing to decode", net.file)
    if decode:
        decoded = [emit_decode(g, head, names[head.index]) for head in heads]
        boxes = g.op("Concat", [b for b, _ in decoded], "boxes", axis=1)
        scores = g.op("Concat", [s for _, s in decoded], "scores", axis=1)
        out_names = [("boxes", boxes, [batch, None, 4]), ("scores", scores, [batch, None, heads[0].classes])]
        if nms:
            selected = g.op("NonMaxSuppression", [boxes, g.op("Transpose", [scores], perm=[0, 2, 1]),
                                                  g.const("max", np.array([nms_max_per_class])),
                                                  g.const("iou", np.array([nms_iou], np.float32)),
                                                  g.const("score", np.array([nms_score], np.float32))],
                            "selected", center_point_box=1)
            out_names.append(("selected_indices", selected, [None, 3]))
    else:
        out_names = [(f"head{hd.index}", names[hd.index], [batch, *hd.in_shapes[0]]) for hd in heads] or \
            [("output", names[len(net.layers) - 1], [batch, *net.layers[-1].out_shape])]
    outputs = []
    for public, internal, shape in out_names:
        g.nodes.append(helper.make_node("Identity", [internal], [public], name=f"out_{public}"))
        elem = TensorProto.INT64 if public == "selected_indices" else TensorProto.FLOAT
        outputs.append(helper.make_tensor_value_info(public, elem, shape))
    graph = helper.make_graph(g.nodes, Path(net.file or "network").stem, inputs, outputs, g.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="dncompress")
    model.ir_version = min(model.ir_version, 8 if opset <= 17 else 10)
    onnx.checker.check_model(model)
    return model


def save_onnx(model: onnx.ModelProto, path: str | Path) -> None:
    atomic_write(path, model.SerializeToString())


def onnx_forward(model: onnx.ModelProto | str | Path, threads: int = 0) -> Callable[[np.ndarray], list[np.ndarray]]:
    """An onnxruntime session as a forward callable: x (N, C, H, W) float32 -> list of outputs."""
    import onnxruntime as ort
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name

    def forward(x: np.ndarray) -> list[np.ndarray]:
        return session.run(None, {input_name: np.ascontiguousarray(x, np.float32)})
    return forward


# onnxruntime and the engine sum in different orders: float32 round-off grows with depth and with the
# output scale (YOLOv4's heads reach |x| ~ 10-40: 4e-4 absolute), so the check is relative to the output's
# largest magnitude; a real export bug (padding, order of channels) differs by a fraction of that scale.
PARITY_RTOL = 1e-4


def parity(net: Network, model: onnx.ModelProto, decode: bool = False, batch: int = 1) -> float:
    """Largest |onnxruntime - numpy engine| on a random batch, relative to max(1, largest |output| of the
    engine) per output tensor; inf when either side has a non-finite value (NaN never compares unequal)."""
    x = np.random.default_rng(0).random((batch, *net.input_shape), dtype=np.float32)
    ours = net.forward(x)
    if decode:
        decoded = [decode_image(net.heads, [o[i] for o in ours]) for i in range(batch)]
        ours = [np.stack([d[0] for d in decoded]), np.stack([d[1][:, None] * d[2] for d in decoded])]
    theirs = onnx_forward(model)(x)
    worst = 0.0
    for a, b in zip(ours, theirs):
        if not (np.isfinite(a).all() and np.isfinite(b).all()):
            return float("inf")
        worst = max(worst, float(np.abs(a - b).max()) / max(float(np.abs(a).max()), 1.0))
    return worst


def check_parity(net: Network, model: onnx.ModelProto, output: str | Path, decode: bool = False,
                 batch: int = 1) -> float:
    """parity(), raising DncompressError (nothing written) above PARITY_RTOL or on non-finite outputs."""
    diff = parity(net, model, decode, batch)
    if not np.isfinite(diff):
        raise DncompressError("the model gives non-finite outputs (NaN/inf weights?); not written", str(output))
    if diff > PARITY_RTOL:
        raise DncompressError(f"onnxruntime differs from the numpy engine by {diff:.3g} of the output scale "
                              f"(> {PARITY_RTOL:g}); not written", str(output))
    return diff
