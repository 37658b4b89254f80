"""Layers that read other layers' outputs: [route] (concat, channel groups) and [shortcut] (add)."""
from __future__ import annotations

import math

import numpy as np

from ..engine.activations import ACTIVATIONS
from .base import Layer, register, positive
from .conv import activation_of


@register("route")
class Route(Layer):
    """Concatenates along channels; with groups/group_id takes slice group_id of each input first."""

    moves_data = False
    keys = frozenset({"layers", "groups", "group_id"})

    def __init__(self, section, index, shapes, net):
        super().__init__(section, index, shapes, net)
        offsets = section.get_ints("layers")
        if not offsets:
            raise self.error("layers= is empty", "layers")
        self.inputs = [self.resolve(o, "layers") for o in offsets]
        self.in_shapes = [shapes[i] for i in self.inputs]
        self.groups = positive(self, "groups", section.get_int("groups", 1))
        self.group_id = section.get_int("group_id", 0)
        if not 0 <= self.group_id < self.groups:
            raise self.error(f"group_id={self.group_id} must be in 0..{self.groups - 1}", "group_id")
        hw = {s[1:] for s in self.in_shapes}
        if len(hw) > 1:
            raise self.error("inputs have different spatial sizes: " +
                             ", ".join(f"layer {i}: {s[1]}x{s[2]}" for i, s in zip(self.inputs, self.in_shapes)),
                             "layers")
        for i, s in zip(self.inputs, self.in_shapes):
            if s[0] % self.groups:
                raise self.error(f"layer {i} has {s[0]} channels, not divisible by groups={self.groups}",
                                 "groups")
        c = sum(s[0] // self.groups for s in self.in_shapes)
        self.out_shape = (c, *self.in_shapes[0][1:])

    def channel_slices(self) -> list[slice]:
        """The channel range taken from each input."""
        out = []
        for s in self.in_shapes:
            part = s[0] // self.groups
            out.append(slice(self.group_id * part, (self.group_id + 1) * part))
        return out

    def forward(self, xs):
        parts = [x[:, sl] for x, sl in zip(xs, self.channel_slices())]
        return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)


@register("shortcut")
class Shortcut(Layer):
    """out = activation(previous + from_1 + ... + from_n), the shape of the previous layer. Inputs of another
    shape add as in AlexeyAB's shortcut_multilayer_cpu: flat (C*H*W) value i of an input adds to flat value
    i of the output where both exist. For equal H, W that is Darknet's zero-padded (fewer channels) or
    truncated (more channels) add; for other sizes it is Darknet's flat-index add (pjreddie's ResNet cfgs,
    written for a strided add, compute this in AlexeyAB's Darknet too)."""

    keys = frozenset({"from", "activation"})
    # Darknet's weighted shortcut (per-feature or per-channel weights in the .weights file)
    unsupported_keys = {"weights_type": ("none",), "weights_normalization": ("none",)}

    def __init__(self, section, index, shapes, net):
        super().__init__(section, index, shapes, net)
        offsets = section.get_ints("from")
        if not offsets:
            raise self.error("from= is empty", "from")
        sources = [self.resolve(o, "from") for o in offsets]
        self.inputs = [index - 1, *sources]
        self.in_shapes = [shapes[index - 1], *(shapes[i] for i in sources)]
        weights_type = section.get_str("weights_type", "none")
        if weights_type != "none":
            raise self.error(f"weights_type={weights_type} (weighted shortcut) is not supported", "weights_type")
        self.out_shape = self.in_shapes[0]
        self.activation = activation_of(self) if "activation" in section.options else "linear"

    def added_values(self) -> list[int]:
        """For each `from` input, how many of its leading flat values are added."""
        size = math.prod(self.out_shape)
        return [min(size, math.prod(s)) for s in self.in_shapes[1:]]

    def forward(self, xs):
        if len(xs) == 2 and xs[1].shape == xs[0].shape:
            return ACTIVATIONS[self.activation](xs[0] + xs[1])
        n = len(xs[0])
        y = xs[0].reshape(n, -1).copy()
        for x, m in zip(xs[1:], self.added_values()):
            y[:, :m] += x.reshape(n, -1)[:, :m]
        return ACTIVATIONS[self.activation](y.reshape(xs[0].shape))
