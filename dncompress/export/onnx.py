"""Network -> ONNX graph, one emitter per layer type (like the layer registry), BN folded into Conv.
Raw head tensors come out in the same order as `Network.forward`; `decode=True` appends the
yolo/region decode (and optionally NonMaxSuppression) from export/decode.py."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..engine.pool import maxpool_output_size
from ..errors import DncompressError
from ..fsutil import atomic_write
from ..layers import HEAD_TYPES, Layer
from ..network import Network

INPUT_NAME = "images"


class GraphBuilder:
    """Collects nodes and initializers; every method returns the name of the tensor it made.
    `conv_hook(builder, layer, x, w) -> (x, w)` may rewrite each conv's input and weight tensor names
    (e.g. insert QuantizeLinear/DequantizeLinear) before the Conv node is made."""

    def __init__(self, conv_hook: ConvHook | None = None):
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.conv_hook = conv_hook
        self._names: set[str] = set()

    def fresh(self, base: str) -> str:
        name, n = base, 1
        while name in self._names:
            n += 1
            name = f"{base}_{n}"
        self._names.add(name)
        return name

    def const(self, base: str, value) -> str:
        """An initializer (float arrays stay float32, integer lists become int64)."""
        array = np.asarray(value)
        array = array.astype(np.int64 if array.dtype.kind in "iu" else np.float32)
        name = self.fresh(base)
        self.initializers.append(numpy_helper.from_array(array, name))
        return name

    def node(self, op: str, inputs: list[str], base: str, outputs: int = 1, **attrs) -> str | list[str]:
        names = [self.fresh(base if outputs == 1 else f"{base}_{i}") for i in range(outputs)]
        self.nodes.append(helper.make_node(op, inputs, names, name=names[0], **attrs))
        return names[0] if outputs == 1 else names


ConvHook = Callable[[GraphBuilder, Layer, str, str], tuple[str, str]]
Emitter = Callable[[GraphBuilder, Layer, list[str]], str]
EMITTERS: dict[str, Emitter] = {}


def emits(*types: str):
    """Register an emitter `(builder, layer, input names) -> output name` for section types."""
    def add(fn):
        for t in types:
            EMITTERS[t] = fn
        return fn
    return add


def activation(b: GraphBuilder, name: str, x: str, base: str) -> str:
    """Darknet activation `name` applied to tensor x."""
    if name == "linear":
        return x
    if name == "leaky":
        return b.node("LeakyRelu", [x], base, alpha=0.1)
    if name == "relu":
        return b.node("Relu", [x], base)
    if name == "logistic":
        return b.node("Sigmoid", [x], base)
    if name == "mish":
        soft = b.node("Softplus", [x], f"{base}_softplus")
        return b.node("Mul", [x, b.node("Tanh", [soft], f"{base}_tanh")], base)
    if name == "swish":
        return b.node("Mul", [x, b.node("Sigmoid", [x], f"{base}_sigmoid")], base)
    raise DncompressError(f"activation '{name}' has no ONNX export")


@emits("convolutional", "quantize_convolutional")
def emit_conv(b: GraphBuilder, layer: Layer, xs: list[str]) -> str:
    weights, bias = layer.folded()
    base = f"conv_{layer.index}"
    x, w = xs[0], b.const(f"{base}_weight", weights)
    if b.conv_hook is not None:
        x, w = b.conv_hook(b, layer, x, w)
    p = layer.pad
    y = b.node("Conv", [x, w, b.const(f"{base}_bias", bias)], base, kernel_shape=[layer.size] * 2,
               strides=[layer.stride] * 2, pads=[p, p, p, p], group=layer.groups)
    return activation(b, layer.activation, y, f"{base}_{layer.activation}")


@emits("maxpool")
def emit_maxpool(b: GraphBuilder, layer: Layer, xs: list[str]) -> str:
    """Darknet pads `padding // 2` before and whatever the output size needs after (often asymmetric)."""
    _, h, w = layer.in_shapes[0]
    k, s = layer.size, layer.stride
    before = layer.padding // 2
    after_h, after_w = (max(0, (maxpool_output_size(v, k, s, layer.padding) - 1) * s + k - v - before)
                        for v in (h, w))
    pads = [before, before, after_h, after_w]
    x = xs[0]
    if max(pads) >= k:
        # onnxruntime rejects MaxPool pads >= kernel: pad with -inf explicitly instead
        x = b.node("Pad", [x, b.const("pads", [0, 0, before, before, 0, 0, after_h, after_w]),
                           b.const("neg_inf", np.float32(-np.inf))], f"maxpool_{layer.index}_pad")
        pads = [0, 0, 0, 0]
    return b.node("MaxPool", [x], f"maxpool_{layer.index}", kernel_shape=[k, k], strides=[s, s], pads=pads)


@emits("avgpool")
def emit_avgpool(b, layer, xs):
    return b.node("GlobalAveragePool", xs, f"avgpool_{layer.index}")


@emits("upsample")
def emit_upsample(b, layer, xs):
    """Nearest neighbour, output cell i reads input floor(i / stride)."""
    scales = b.const("upsample_scales", [1.0, 1.0, float(layer.stride), float(layer.stride)])
    y = b.node("Resize", [xs[0], "", scales], f"upsample_{layer.index}", mode="nearest",
               coordinate_transformation_mode="asymmetric", nearest_mode="floor")
    if layer.scale != 1.0:
        y = b.node("Mul", [y, b.const("scale", np.float32(layer.scale))], f"upsample_{layer.index}_scale")
    return y


@emits("route")
def emit_route(b, layer, xs):
    """Concat; with groups, a Slice of channel group `group_id` of each input first."""
    parts = []
    for x, sl, shape in zip(xs, layer.channel_slices(), layer.in_shapes):
        if sl.stop - sl.start == shape[0]:
            parts.append(x)
        else:
            parts.append(b.node("Slice", [x, b.const("starts", [sl.start]), b.const("ends", [sl.stop]),
                                          b.const("axes", [1])], f"route_{layer.index}_slice"))
    if len(parts) == 1:
        return parts[0]
    return b.node("Concat", parts, f"route_{layer.index}", axis=1)


@emits("shortcut")
def emit_shortcut(b, layer, xs):
    y = b.node("Add", xs, f"shortcut_{layer.index}")
    return activation(b, layer.activation, y, f"shortcut_{layer.index}_{layer.activation}")


@emits("dropout", *HEAD_TYPES)
def emit_identity(b, layer, xs):
    return xs[0]


def emit_layers(b: GraphBuilder, net: Network, x: str) -> dict[int, str]:
    """Every layer's output tensor name, by layer index."""
    names: dict[int, str] = {}
    for layer in net.layers:
        emitter = EMITTERS.get(layer.type)
        if emitter is None:
            raise DncompressError(f"layer {layer.index} [{layer.type}] has no ONNX export", net.file)
        names[layer.index] = emitter(b, layer, [names[i] if i >= 0 else x for i in layer.inputs])
    return names


def build_onnx(net: Network, opset: int = 13, decode: bool = False, nms: bool = False,
               dynamic_batch: bool = False, conv_hook: ConvHook | None = None,
               thresh: float = 0.25, iou: float = 0.45, max_boxes: int = 100) -> onnx.ModelProto:
    """The network as a checked ONNX model with input `images` (N, C, H, W). Outputs: the raw head
    tensors (Network.forward order) or, with `decode`, boxes/objectness/class_scores (+ NMS indices)."""
    from .decode import emit_decode  # decode builds on this module's GraphBuilder
    if nms and not decode:
        raise DncompressError("--nms needs --decode (NMS runs on decoded boxes)")
    if not 13 <= opset <= 21:
        raise DncompressError(f"opset {opset} is not supported; choose 13..21")
    for layer in net.layers:
        if layer.param_shapes() and not layer.params:
            raise DncompressError(f"layer {layer.index} [{layer.type}] has no weights loaded", net.file)
    b = GraphBuilder(conv_hook)
    b.fresh(INPUT_NAME)
    names = emit_layers(b, net, INPUT_NAME)
    batch = "N" if dynamic_batch else 1
    if decode:
        outputs = emit_decode(b, net, [names[h.index] for h in net.heads], batch, nms, thresh, iou, max_boxes)
    else:
        outputs = []
        for head in net.heads:
            out = b.node("Identity", [names[head.index]], f"{head.type}_{head.index}")
            outputs.append(helper.make_tensor_value_info(out, TensorProto.FLOAT, [batch, *head.out_shape]))
    graph = helper.make_graph(b.nodes, Path(net.file or "darknet").stem,
                              [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT,
                                                             [batch, *net.input_shape])],
                              outputs, b.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="dncompress")
    model.ir_version = min(model.ir_version, 8 if opset <= 17 else 9)
    onnx.checker.check_model(model, full_check=True)
    return model


def save_onnx(model: onnx.ModelProto, path: str | Path) -> None:
    """Write atomically (temp file + rename)."""
    atomic_write(path, model.SerializeToString())


def onnx_forward(model_or_path: onnx.ModelProto | str | Path, threads: int | None = None):
    """An onnxruntime session as `x: (N, C, H, W) float32 -> [outputs]` (raw heads in Network.forward
    order for a model built without decode)."""
    import onnxruntime as ort
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    source = model_or_path.SerializeToString() if isinstance(model_or_path, onnx.ModelProto) \
        else str(model_or_path)
    session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name

    def forward(x: np.ndarray) -> list[np.ndarray]:
        return session.run(None, {input_name: np.ascontiguousarray(x, dtype=np.float32)})
    return forward
