"""[local] (locally connected: a conv with its own filters at every output position) and
[local_avgpool] (average over windows, padded cells not counted)."""
from __future__ import annotations

import numpy as np

from ..engine.activations import ACTIVATIONS
from ..engine.conv import conv_output_size, im2col
from ..engine.pool import maxpool_output_size
from .base import Layer, positive, register
from .conv import activation_of


@register("local")
class Local(Layer):
    """.weights: biases (filters*Ho*Wo, one per output value), weights (Ho*Wo, filters, C, k, k)
    (forward_local_layer: location-major, then a (filters, C*k*k) matrix). pad=1 pads by one pixel."""

    keys = frozenset({"filters", "size", "stride", "pad", "activation"})

    param_names = ("biases", "weights")
    keys = frozenset({"filters", "size", "stride", "pad", "activation"})

    def __init__(self, section, index, shapes, net):
        super().__init__(section, index, shapes, net)
        s = section
        c, h, w = self.in_shapes[0]
        self.filters = positive(self, "filters", s.get_int("filters", 1))
        self.size = positive(self, "size", s.get_int("size", 1), 64)
        self.stride = positive(self, "stride", s.get_int("stride", 1), 64)
        self.pad = 1 if s.get_int("pad", 0) else 0
        self.groups = 1
        self.activation = activation_of(self)
        # Darknet's local_out_height: (h - size) / stride + 1 without pad, (h - 1) / stride + 1 with
        ho, wo = ((v - (1 if self.pad else self.size)) // self.stride + 1 for v in (h, w))
        if (ho, wo) != tuple(conv_output_size(v, self.size, self.stride, self.pad) for v in (h, w)):
            raise self.error(f"pad=1 with size={self.size} reads outside Darknet's padded input; only size=3 "
                             "is supported with pad=1", "pad")
        if ho < 1 or wo < 1:
            raise self.error(f"size={self.size} is larger than the {h}x{w} input", "size")
        self.out_shape = (self.filters, ho, wo)

    def param_shapes(self):
        (c, _, _), (n, ho, wo) = self.in_shapes[0], self.out_shape
        return {"biases": (n * ho * wo,), "weights": (ho * wo * n, c, self.size, self.size)}

    def macs(self) -> int:
        return int(np.prod(self.param_shapes()["weights"]))

    def forward(self, xs):
        n, ho, wo = self.out_shape
        cols = im2col(xs[0], self.size, self.stride, self.pad)                # (N, C*k*k, L)
        w = self.params["weights"].reshape(ho * wo, n, -1)                      # (L, n, C*k*k)
        y = np.einsum("lnk,bkl->bnl", w, cols, optimize=True).reshape(len(xs[0]), n, ho, wo)
        y += self.params["biases"].reshape(1, n, ho, wo)
        return ACTIVATIONS[self.activation](np.ascontiguousarray(y, np.float32))


@register("local_avgpool", "local_avg")
class LocalAvgpool(Layer):
    """Maxpool's windows (size, stride, padding), averaged over the cells inside the input."""

    keys = frozenset({"size", "stride", "padding"})

    def __init__(self, section, index, shapes, net):
        super().__init__(section, index, shapes, net)
        s = section
        self.stride = positive(self, "stride", s.get_int("stride", 1), 64)
        self.size = positive(self, "size", s.get_int("size", self.stride), 64)
        self.padding = s.get_int("padding", self.size - 1)
        if not 0 <= self.padding < 2 * self.size:
            raise self.error(f"padding={self.padding} must be between 0 and {2 * self.size - 1}", "padding")
        c, h, w = self.in_shapes[0]
        ho, wo = (maxpool_output_size(v, self.size, self.stride, self.padding) for v in (h, w))
        if ho < 1 or wo < 1:
            raise self.error(f"size={self.size} is larger than the {h}x{w} input", "size")
        self.out_shape = (c, ho, wo)

    def forward(self, xs):
        x = xs[0]
        n, c, h, w = x.shape
        _, ho, wo = self.out_shape
        k, s, before = self.size, self.stride, self.padding // 2
        after_h = max(0, (ho - 1) * s + k - h - before)
        after_w = max(0, (wo - 1) * s + k - w - before)
        xp = np.pad(x, ((0, 0), (0, 0), (before, after_h), (before, after_w)))
        ones = np.pad(np.ones((h, w), np.float32), ((before, after_h), (before, after_w)))
        total = np.zeros((n, c, ho, wo), np.float32)
        count = np.zeros((ho, wo), np.float32)
        for dy in range(k):
            for dx in range(k):
                rows, cols = slice(dy, dy + (ho - 1) * s + 1, s), slice(dx, dx + (wo - 1) * s + 1, s)
                total += xp[:, :, rows, cols]
                count += ones[rows, cols]
        return total / np.maximum(count, 1)
