"""Classifier and old-Darknet layers: [softmax], [cost], [connected], [crop], [batchnorm], [detection].
Semantics follow AlexeyAB/darknet's forward_*_layer at inference (state.train = 0)."""
from __future__ import annotations

import numpy as np

from ..engine.activations import ACTIVATIONS
from .base import Layer, positive, register
from .conv import BN_EPS, activation_of


@register("softmax", "soft")
class Softmax(Layer):
    """Darknet's softmax_cpu: over the c*h*w values of each of `groups` consecutive slices, divided by
    temperature. For a (C, 1, 1) classifier output that is a softmax over classes (OpenCV's too)."""

    keys = frozenset({"groups", "temperature"})
    training_keys = frozenset({"spatial", "noloss"})
    unsupported_keys = {"tree": ()}  # softmax over a word tree (YOLO9000)

    def __init__(self, section, index, shapes, net):
        super().__init__(section, index, shapes, net)
        self.groups = positive(self, "groups", section.get_int("groups", 1))
        self.temperature = section.get_float("temperature", 1.0)
        if self.temperature <= 0:
            raise self.error(f"temperature={self.temperature} must be positive", "temperature")
        if "tree" in section.options:
            raise self.error("tree= (hierarchical softmax, yolo9000) is not supported", "tree")
        size = int(np.prod(self.out_shape))
        if size % self.groups:
            raise self.error(f"groups={self.groups} must divide the {size} inputs", "groups")

    def forward(self, xs):
        x = xs[0].reshape(len(xs[0]), self.groups, -1) / np.float32(self.temperature)
        e = np.exp(x - x.max(axis=2, keepdims=True))
        return (e / e.sum(axis=2, keepdims=True)).reshape(xs[0].shape)


@register("cost")
class Cost(Layer):
    """A training loss; identity at inference."""

    training_keys = frozenset({"type", "scale", "ratio", "noobject_scale", "thresh"})

    def forward(self, xs):
        return xs[0]


@register("detection")
class Detection(Layer):
    """YOLOv1 head: passes its input through (as the other heads; detect.decode_detection applies the class
    softmax Darknet's forward_detection_layer does). Input: side*side*((1 + coords)*num + classes) values,
    laid out as class probabilities per cell, then `num` confidences per cell, then `num` boxes per cell."""

    keys = frozenset({"classes", "coords", "num", "side", "softmax", "sqrt"})
    is_head, moves_data = True, False
    training_keys = frozenset({"rescore", "jitter", "random", "reorg", "forced", "max_boxes", "object_scale",
                               "noobject_scale", "class_scale", "coord_scale", "max", "resize"})

    def __init__(self, section, index, shapes, net):
        super().__init__(section, index, shapes, net)
        s = section
        # parse_detection's defaults
        self.classes = positive(self, "classes", s.get_int("classes", 1), 1 << 16)
        self.coords = positive(self, "coords", s.get_int("coords", 1), 64)
        self.num = positive(self, "num", s.get_int("num", 1), 1 << 10)
        self.side = positive(self, "side", s.get_int("side", 7), 1 << 10)
        self.softmax = bool(s.get_int("softmax", 0))
        self.sqrt = bool(s.get_int("sqrt", 0))
        self.net_size = (net.width, net.height)
        self.net_channels = net.channels  # images are read with this many channels (detect, eval)
        expected = self.side ** 2 * ((1 + self.coords) * self.num + self.classes)
        if int(np.prod(self.in_shapes[0])) != expected:
            raise self.error(f"input has {int(np.prod(self.in_shapes[0]))} values; side={self.side}, num={self.num}, "
                             f"coords={self.coords}, classes={self.classes} need side*side*((1 + coords)*num + "
                             f"classes) = {expected} (make_detection_layer's assert)")

    def forward(self, xs):
        return xs[0]


@register("connected", "conn")
class Connected(Layer):
    """Fully connected: y = act(BN(W x + b)) on the flattened (C*H*W) input -> (output, 1, 1).
    .weights: biases (output), weights (output, inputs), then with batch_normalize scales,
    rolling_mean, rolling_variance (load_connected_weights; not the conv order)."""

    keys = frozenset({"output", "activation", "batch_normalize"})

    param_names = ("biases", "weights", "scales", "rolling_mean", "rolling_variance")

    def __init__(self, section, index, shapes, net):
        super().__init__(section, index, shapes, net)
        self.inputs_count = int(np.prod(self.in_shapes[0]))
        self.filters = positive(self, "output", section.get_int("output", 1), 1 << 20)
        self.batch_normalize = bool(section.get_int("batch_normalize", 0))
        self.activation = activation_of(self)
        self.size, self.stride, self.groups = 1, 1, 1
        self.out_shape = (self.filters, 1, 1)

    def param_shapes(self):
        n = self.filters
        shapes = {"biases": (n,), "weights": (n, self.inputs_count)}
        if self.batch_normalize:
            shapes.update(scales=(n,), rolling_mean=(n,), rolling_variance=(n,))
        return shapes

    def macs(self) -> int:
        """Darknet prints 2 * inputs * outputs / 1e9 BFLOPs."""
        return self.inputs_count * self.filters

    def kernel_output(self, x):
        return (x.reshape(len(x), -1) @ self.params["weights"].T).reshape(len(x), -1, 1, 1)

    def output_affine(self) -> tuple[np.ndarray, np.ndarray]:
        """(scale, shift) per output, float64, as ConvKeys.output_affine."""
        p = self.params
        shift = p["biases"].astype(np.float64)
        if not self.batch_normalize:
            return np.ones_like(shift), shift
        scale = p["scales"] / np.sqrt(p["rolling_variance"].astype(np.float64) + BN_EPS)
        return scale, shift - scale * p["rolling_mean"]

    def folded(self) -> tuple[np.ndarray, np.ndarray]:
        """(weights (output, inputs), bias) with the batchnorm folded in, float32."""
        scale, shift = self.output_affine()
        w = (self.params["weights"].astype(np.float64) * scale[:, None]).astype(np.float32)
        return w, shift.astype(np.float32)

    def forward(self, xs):
        w, b = self.folded()
        y = xs[0].reshape(len(xs[0]), -1) @ w.T + b
        return ACTIVATIONS[self.activation](y.reshape(len(y), -1, 1, 1))


@register("crop")
class Crop(Layer):
    """Centre crop to crop_height x crop_width, scaled to 2x - 1 unless noadjust=1 (forward_crop_layer
    at inference: no flip, no random offset)."""

    keys = frozenset({"crop_height", "crop_width", "noadjust"})
    training_keys = frozenset({"flip", "angle", "saturation", "exposure", "shift"})

    def __init__(self, section, index, shapes, net):
        super().__init__(section, index, shapes, net)
        c, h, w = self.in_shapes[0]
        self.crop_h = positive(self, "crop_height", section.get_int("crop_height", 1))
        self.crop_w = positive(self, "crop_width", section.get_int("crop_width", 1))
        if self.crop_h > h or self.crop_w > w:
            raise self.error(f"crop {self.crop_h}x{self.crop_w} is larger than the {h}x{w} input", "crop_height")
        self.top, self.left = (h - self.crop_h) // 2, (w - self.crop_w) // 2
        adjust = not section.get_int("noadjust", 0)
        self.scale, self.shift = (2.0, -1.0) if adjust else (1.0, 0.0)
        self.out_shape = (c, self.crop_h, self.crop_w)

    def forward(self, xs):
        y = xs[0][:, :, self.top:self.top + self.crop_h, self.left:self.left + self.crop_w]
        return y * np.float32(self.scale) + np.float32(self.shift)


@register("batchnorm")
class Batchnorm(Layer):
    """A standalone batchnorm: scales * (x - mean) / sqrt(var + eps). .weights: scales, rolling_mean,
    rolling_variance (load_batchnorm_weights; its biases are never stored and stay 0)."""

    param_names = ("scales", "rolling_mean", "rolling_variance")
    batch_normalize = True

    def param_shapes(self):
        c = self.out_shape[0]
        return {"scales": (c,), "rolling_mean": (c,), "rolling_variance": (c,)}

    def kernel_output(self, x):
        return x

    def output_affine(self) -> tuple[np.ndarray, np.ndarray]:
        p = self.params
        scale = p["scales"] / np.sqrt(p["rolling_variance"].astype(np.float64) + BN_EPS)
        return scale, -scale * p["rolling_mean"]

    def forward(self, xs):
        scale, shift = (v.astype(np.float32).reshape(1, -1, 1, 1) for v in self.output_affine())
        return xs[0] * scale + shift


@register("contrastive")
class Contrastive(Layer):
    """A training loss on a [yolo] layer's features; nothing reads its output at inference (identity)."""

    training_keys = frozenset({"classes", "temperature", "yolo_layer", "cls_normalizer", "max_delta",
                               "contrastive_neg_max", "steps"})

    def forward(self, xs):
        return xs[0]
