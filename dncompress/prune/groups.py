"""Dependency analysis: which conv output channels must be removed together (like DepGraph).

Every tensor's channels are traced back to the conv channels that produced them. Channels joined by a
[shortcut] (added elementwise) or split by [route] groups= (the halves must stay equal) are coupled by a
union-find; a coupled set ("position") is kept or pruned as one. Convs whose outputs reach a detection
head, grouped convs, and convs read by [sam]/[scale_channels] (products), [reorg]/[softmax] (channel
mixing) or a shortcut across spatial sizes are not prunable.
"""
from __future__ import annotations

import dataclasses

from ..errors import DncompressError
from ..network import Network

Channel = tuple[int, int]          # (conv layer index, output channel); (-1, c) is the network input
PASS_THROUGH = ("maxpool", "upsample", "dropout", "avgpool")
# layers whose output channels are not their first input's channels one for one (reorg moves pixels into
# channels; softmax normalizes across channels): their inputs stay whole, their outputs count as unprunable
CHANNEL_MIXING = ("reorg", "reorg3d", "softmax", "connected", "local")
# layers multiplying two tensors: pruning a channel of one factor changes the product, and the constant a
# removed channel leaves (its activation of beta) does not fold through a product; their inputs stay whole
MULTIPLYING = ("sam", "scale_channels")


class UnionFind:
    def __init__(self):
        self.parent: dict[Channel, Channel] = {}

    def find(self, x: Channel) -> Channel:
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: Channel, b: Channel) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def channel_maps(net: Network) -> list[list[Channel]]:
    """For each layer, which producing conv channel each of its output channels carries (for a shortcut,
    the first addend's; the union-find couples the second's)."""
    maps: list[list[Channel]] = []
    input_map = [(-1, c) for c in range(net.input_shape[0])]
    for layer in net.layers:
        sources = [maps[i] if i >= 0 else input_map for i in layer.inputs]
        if layer.is_conv:
            maps.append([(layer.index, c) for c in range(layer.filters)])
        elif layer.type in CHANNEL_MIXING and not layer.param_shapes():
            maps.append([(-1, c) for c in range(layer.out_shape[0])])
        elif layer.param_shapes():
            raise DncompressError(f"layer {layer.index} [{layer.type}] cannot be pruned (pruning slices "
                                  "[convolutional] and [quantize_convolutional] weights only)", net.file)
        elif layer.type == "route":
            maps.append([ch for src, sl in zip(sources, layer.channel_slices()) for ch in src[sl]])
        else:
            maps.append(list(sources[0]))
    return maps


@dataclasses.dataclass
class ChannelGroup:
    """Convs whose channels are coupled, and the positions (sets of coupled channels) they share.
    Pruning keeps or removes whole positions, so every member conv keeps the same relative channels."""

    convs: list[int]
    positions: list[list[Channel]]
    prunable: bool

    def multiplicity(self, conv: int) -> int:
        """Channels of `conv` in one position (2 for a conv split by route groups=2)."""
        return sum(1 for ch in self.positions[0] if ch[0] == conv)


def channel_groups(net: Network) -> list[ChannelGroup]:
    maps = channel_maps(net)
    uf = UnionFind()
    blocked: set[int] = set()
    for layer in net.layers:
        if layer.is_conv:
            for c in range(layer.filters):
                uf.find((layer.index, c))
            if layer.groups > 1:
                # a grouped conv ties its input channels to its filters; leave both sides whole
                blocked.add(layer.index)
                if layer.inputs[0] >= 0:
                    blocked.update(conv for conv, _ in maps[layer.inputs[0]])
        elif layer.type == "shortcut":
            if any(shape[1:] != layer.out_shape[1:] for shape in layer.in_shapes):
                # a flat-index add across spatial sizes ties channels to pixels: leave its inputs whole
                blocked.update(conv for i in layer.inputs if i >= 0 for conv, _ in maps[i])
            # channels added together (Darknet adds the first min(C) channels, the rest pass alone)
            for source in layer.inputs[1:]:
                for a, b in zip(maps[layer.inputs[0]], maps[source] if source >= 0 else []):
                    uf.union(a, b)
        elif layer.type in CHANNEL_MIXING + MULTIPLYING:
            blocked.update(conv for i in layer.inputs if i >= 0 for conv, _ in maps[i])
        elif layer.type == "route" and layer.groups > 1:
            for i in layer.inputs:
                src = maps[i] if i >= 0 else []
                part = len(src) // layer.groups
                for g in range(1, layer.groups):
                    for c in range(part):
                        uf.union(src[c], src[g * part + c])
        elif layer.is_head:
            blocked.update(conv for conv, _ in maps[layer.inputs[0]])
    members: dict[Channel, list[Channel]] = {}
    for ch in list(uf.parent):
        members.setdefault(uf.find(ch), []).append(ch)
    by_convs: dict[tuple[int, ...], list[list[Channel]]] = {}
    for position in members.values():
        position.sort()
        by_convs.setdefault(tuple(sorted({conv for conv, _ in position})), []).append(position)
    groups = []
    for convs, positions in sorted(by_convs.items()):
        positions.sort()
        prunable = (-1 not in convs and not blocked.intersection(convs)
                    and len({len(p) for p in positions}) == 1)
        groups.append(ChannelGroup([c for c in convs if c >= 0], positions, prunable))
    return groups
