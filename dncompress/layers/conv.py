"""[convolutional] and [quantize_convolutional]: conv + optional batchnorm + activation."""
from __future__ import annotations

import numpy as np

from ..engine.activations import ACTIVATIONS
from ..engine.conv import conv2d, conv_output_size
from .base import Layer, register, positive

# Darknet's CPU normalize_cpu (pjreddie and AlexeyAB) and OpenCV's importer divide by sqrt(var + 1e-6);
# pjreddie's GPU kernel uses sqrt(var) + 1e-6 instead. We fold the CPU/OpenCV form (docs/ARCHITECTURE.md).
BN_EPS = 1e-6


def activation_of(layer: Layer) -> str:
    name = layer.section.get_str("activation", "logistic")
    if name not in ACTIVATIONS:
        raise layer.error(f"unknown activation '{name}'; supported: {', '.join(sorted(ACTIVATIONS))}",
                          "activation")
    return name


@register("convolutional")
class Convolutional(Layer):
    param_names = ("biases", "scales", "rolling_mean", "rolling_variance", "weights")

    def __init__(self, section, index, shapes, net):
        super().__init__(section, index, shapes, net)
        s = section
        c, h, w = self.in_shapes[0]
        self.filters = positive(self, "filters", s.get_int("filters", 1))
        self.size = positive(self, "size", s.get_int("size", 1), 64)
        self.stride = positive(self, "stride", s.get_int("stride", 1), 64)
        self.pad = self.size // 2 if s.get_int("pad", 0) else s.get_int("padding", 0)
        if not 0 <= self.pad <= 64:
            raise self.error(f"padding={self.pad} must be between 0 and 64", "padding")
        self.groups = positive(self, "groups", s.get_int("groups", 1))
        self.batch_normalize = bool(s.get_int("batch_normalize", 0))
        self.activation = activation_of(self)
        if s.get_int("dilation", 1) != 1:
            raise self.error("dilation other than 1 is not supported", "dilation")
        if c % self.groups or self.filters % self.groups:
            raise self.error(f"groups={self.groups} must divide input channels {c} and filters "
                             f"{self.filters}", "groups")
        ho, wo = (conv_output_size(v, self.size, self.stride, self.pad) for v in (h, w))
        if ho < 1 or wo < 1:
            raise self.error(f"size={self.size} is larger than the {h}x{w} input", "size")
        self.out_shape = (self.filters, ho, wo)
        self._folded: tuple[np.ndarray, np.ndarray] | None = None

    def param_shapes(self):
        n, c = self.filters, self.in_shapes[0][0]
        shapes = {"biases": (n,)}
        if self.batch_normalize:
            shapes.update(scales=(n,), rolling_mean=(n,), rolling_variance=(n,))
        shapes["weights"] = (n, c // self.groups, self.size, self.size)
        return shapes

    def workspace_elements(self) -> int:
        """Floats of the padded input and im2col buffer conv2d allocates (none for a plain 1x1)."""
        (c, h, w), (_, ho, wo), k, p = self.in_shapes[0], self.out_shape, self.size, self.pad
        if k == 1 and self.stride == 1 and p == 0:
            return 0
        return (c * (h + 2 * p) * (w + 2 * p) if p else 0) + c * k * k * ho * wo

    def set_params(self, **params: np.ndarray) -> None:
        """Replace parameters; the folded copy is rebuilt on the next forward."""
        self.params.update(params)
        self._folded = None

    def folded(self) -> tuple[np.ndarray, np.ndarray]:
        """(weights, bias) with batchnorm folded in, computed once."""
        if self._folded is None:
            p = self.params
            w, b = p["weights"].astype(np.float64), p["biases"].astype(np.float64)
            if self.batch_normalize:
                scale = p["scales"] / np.sqrt(p["rolling_variance"].astype(np.float64) + BN_EPS)
                w = w * scale[:, None, None, None]
                b = b - scale * p["rolling_mean"]
            self._folded = (np.ascontiguousarray(w, np.float32), b.astype(np.float32))
        return self._folded

    def forward(self, xs):
        w, b = self.folded()
        y = conv2d(xs[0], w, b, self.stride, self.pad, self.groups)
        return ACTIVATIONS[self.activation](y)


@register("quantize_convolutional")
class QuantizeConvolutional(Convolutional):
    """Same keys and .weights layout as [convolutional]; extra keys (bitw, bita, act ranges) are kept."""
