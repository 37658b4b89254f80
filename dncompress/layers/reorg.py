"""[reorg] (YOLOv2's passthrough, Darknet's reorg_old_layer) and [reorg3d] (a true space-to-depth)."""
from __future__ import annotations

from .base import Layer, positive, register


class _ReorgKeys(Layer):
    keys = frozenset({"stride", "reverse"})
    def __init__(self, section, index, shapes, net):
        super().__init__(section, index, shapes, net)
        self.stride = positive(self, "stride", section.get_int("stride", 1), 64)
        if section.get_int("reverse", 0):
            raise self.error("reverse=1 is not supported", "reverse")
        c, h, w = self.in_shapes[0]
        s = self.stride
        if h % s or w % s:
            raise self.error(f"stride={s} must divide the {h}x{w} input", "stride")
        self.out_shape = (c * s * s, h // s, w // s)


@register("reorg")
class Reorg(_ReorgKeys):
    """Darknet's reorg_cpu(input, w, h, c, batch, stride, forward=0): the input's memory read as
    (C/s^2, H*s, W*s) and space-to-depth'ed, the result read as (C*s^2, H/s, W/s). Output channel
    k = (dy*s + dx) * C/s^2 + c2 of row j, column i holds that view's [c2, j*s + dy, i*s + dx]."""

    def __init__(self, section, index, shapes, net):
        super().__init__(section, index, shapes, net)
        c = self.in_shapes[0][0]
        if c % (self.stride ** 2):
            raise self.error(f"{c} input channels are not divisible by stride^2={self.stride ** 2}", "stride")

    def forward(self, xs):
        x, s = xs[0], self.stride
        n, c, h, w = x.shape
        view = x.reshape(n, c // (s * s), h, s, w, s)       # (c2, j, dy, i, dx)
        return view.transpose(0, 3, 5, 1, 2, 4).reshape(n, *self.out_shape)


@register("reorg3d")
class Reorg3d(_ReorgKeys):
    """Space-to-depth: output channel (dy*s + dx) * C + c holds input [c, j*s + dy, i*s + dx]."""

    def forward(self, xs):
        x, s = xs[0], self.stride
        n, c, h, w = x.shape
        view = x.reshape(n, c, h // s, s, w // s, s)        # (c, j, dy, i, dx)
        return view.transpose(0, 3, 5, 1, 2, 4).reshape(n, *self.out_shape)
