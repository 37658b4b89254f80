"""[sam] (spatial attention: elementwise product) and [scale_channels] (squeeze-excitation scaling).
Both read the previous layer (the attention) and `from` (the features); the output has the features'
shape. `inputs` lists the features first, so that the output's channels are those of inputs[0]."""
from __future__ import annotations

from ..engine.activations import ACTIVATIONS
from .base import Layer, register
from .conv import activation_of


class _Attention(Layer):
    keys = frozenset({"from", "activation"})
    def __init__(self, section, index, shapes, net):
        super().__init__(section, index, shapes, net)
        offsets = section.get_ints("from")
        if len(offsets) != 1:
            raise self.error(f"from= needs exactly one layer, got {len(offsets)}", "from")
        source = self.resolve(offsets[0], "from")
        if index == 0:
            raise self.error("needs a previous layer (the attention)")
        self.inputs = [source, index - 1]
        self.in_shapes = [shapes[source], shapes[index - 1]]
        self.out_shape = shapes[source]
        self.activation = activation_of(self) if "activation" in section.options else "linear"


@register("sam")
class Sam(_Attention):
    """out = act(features * previous), shapes equal (forward_sam_layer)."""

    def __init__(self, section, index, shapes, net):
        super().__init__(section, index, shapes, net)
        if self.in_shapes[0] != self.in_shapes[1]:
            raise self.error(f"shapes differ: previous layer {self.in_shapes[1]} vs layer {self.inputs[0]} "
                             f"{self.in_shapes[0]} (C, H, W)", "from")

    def forward(self, xs):
        return ACTIVATIONS[self.activation](xs[0] * xs[1])


@register("scale_channels")
class ScaleChannels(_Attention):
    """out = act(features * previous): previous is (C, 1, 1), one factor per channel; with scale_wh=1 it is
    (1, H, W), one factor per pixel (forward_scale_channels_layer)."""

    keys = frozenset({"from", "activation", "scale_wh"})

    def __init__(self, section, index, shapes, net):
        super().__init__(section, index, shapes, net)
        self.scale_wh = bool(section.get_int("scale_wh", 0))
        c, h, w = self.in_shapes[0]
        want = (1, h, w) if self.scale_wh else (c, 1, 1)
        if self.in_shapes[1] != want:
            raise self.error(f"previous layer has shape {self.in_shapes[1]}, expected {want} (C, H, W) for "
                             f"layer {self.inputs[0]}'s {self.in_shapes[0]}", "from")

    def forward(self, xs):
        return ACTIVATIONS[self.activation](xs[0] * xs[1])
