"""Single-input layers without parameters: [maxpool], [avgpool], [upsample], [dropout]."""
from __future__ import annotations

from ..engine.pool import global_avgpool, maxpool2d, maxpool_output_size, upsample_nearest
from .base import Layer, register, positive


@register("maxpool", "max")
class Maxpool(Layer):
    keys = frozenset({"size", "stride", "stride_x", "stride_y", "padding", "maxpool_depth", "antialiasing"})
    training_keys = frozenset({"out_channels"})  # only read with maxpool_depth, which is refused
    def __init__(self, section, index, shapes, net):
        super().__init__(section, index, shapes, net)
        s = section
        self.stride = positive(self, "stride", s.get_int("stride", 1), 64)
        self.size = positive(self, "size", s.get_int("size", self.stride), 64)
        for key in ("stride_x", "stride_y"):
            if s.get_int(key, self.stride) != self.stride:
                raise self.error(f"{key}={s.get_int(key)} differs from stride={self.stride}; non-square "
                                 "strides are not supported", key)
        self.padding = s.get_int("padding", self.size - 1)
        if not 0 <= self.padding < 2 * self.size:
            raise self.error(f"padding={self.padding} must be between 0 and {2 * self.size - 1}", "padding")
        for key in ("maxpool_depth", "antialiasing"):
            if s.get_int(key, 0):
                raise self.error(f"{key} is not supported", key)
        c, h, w = self.in_shapes[0]
        ho, wo = (maxpool_output_size(v, self.size, self.stride, self.padding) for v in (h, w))
        if ho < 1 or wo < 1:
            raise self.error(f"size={self.size} is larger than the {h}x{w} input", "size")
        self.out_shape = (c, ho, wo)

    def workspace_elements(self) -> int:
        """The -inf padded copy of the input (none when every window lies inside it: yolov3-tiny's 2x2/2)
        and the row-wise maxima (engine.pool.maxpool2d)."""
        c, h, w = self.in_shapes[0]
        _, ho, wo = self.out_shape
        before = self.padding // 2
        hp = max(h, (ho - 1) * self.stride + self.size - before) + before
        wp = max(w, (wo - 1) * self.stride + self.size - before) + before
        return (c * hp * wp if (hp, wp) != (h, w) else 0) + c * ho * wp

    def forward(self, xs):
        return maxpool2d(xs[0], self.size, self.stride, self.padding)


@register("avgpool", "avg")
class Avgpool(Layer):
    """Global average pooling, as in Darknet."""

    def __init__(self, section, index, shapes, net):
        super().__init__(section, index, shapes, net)
        self.out_shape = (self.in_shapes[0][0], 1, 1)

    def forward(self, xs):
        return global_avgpool(xs[0])


@register("upsample")
class Upsample(Layer):
    keys = frozenset({"stride", "scale"})
    def __init__(self, section, index, shapes, net):
        super().__init__(section, index, shapes, net)
        self.stride = positive(self, "stride", section.get_int("stride", 2), 64)
        self.scale = section.get_float("scale", 1.0)
        c, h, w = self.in_shapes[0]
        self.out_shape = (c, h * self.stride, w * self.stride)

    def forward(self, xs):
        y = upsample_nearest(xs[0], self.stride)
        return y * self.scale if self.scale != 1.0 else y


@register("dropout")
class Dropout(Layer):
    """Identity at inference."""

    moves_data = False
    training_keys = frozenset({"probability", "dropblock", "dropblock_size_rel", "dropblock_size_abs"})

    def forward(self, xs):
        return xs[0]
