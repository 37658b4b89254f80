"""Activation equalization before quantization: a per-tensor activation grid wastes its levels when a few
channels reach far beyond the others (yolov3-tiny's first conv: a handful of channels reach 60, most stay
below 5, so the 8-bit step of conv 2's input is 0.25). Leaky/ReLU/linear, maxpool, upsample and concat are
positively homogeneous per channel, so channel c of a conv's output can be multiplied by t_c (its weights
and bias) and divided back in the weight columns of every conv that reads it: the float network is
unchanged, while the channels' ranges move together (the idea of cross-layer equalization, Nagel et al.
2019, applied to activation ranges). t_c = min(max / max_c, min / min_c) ** strength: strength 1 equalizes the
activation ranges fully, 0.5 splits the spread between the activations and the readers' weight columns.
Channels only grow towards the tensor's own [min, max] (never beyond), so the grid's step never grows."""
from __future__ import annotations

import numpy as np

from ..network import Network
from ..reparam import fold_batchnorm

HOMOGENEOUS = ("leaky", "relu", "linear")
MAX_FACTOR = 100.0


def equalizable(net: Network) -> dict[int, list[tuple[int, int]]]:
    """conv index -> [(reader conv index, first input channel of this conv's output in it)], for convs whose
    every reader (through maxpool, upsample, concat) is an ungrouped [convolutional]."""
    readers: dict[int, list] = {}
    for layer in net.layers:
        for i in layer.inputs:
            readers.setdefault(i, []).append(layer)

    def reached(index: int, offset: int) -> list[tuple[int, int]] | None:
        found = []
        for reader in readers.get(index, []):
            if reader.type == "convolutional" and reader.groups == 1 and not getattr(reader, "xnor", False):
                found.append((reader.index, offset))
            elif reader.type in ("maxpool", "max", "upsample") or (reader.type == "route" and reader.groups == 1):
                start = offset
                if reader.type == "route":
                    if reader.inputs.count(index) > 1:
                        return None
                    position = reader.inputs.index(index)
                    start += sum(shape[0] for shape in reader.in_shapes[:position])
                more = reached(reader.index, start)
                if more is None:
                    return None
                found += more
            else:
                return None
        return found or None

    out = {}
    for layer in net.layers:
        if (layer.type == "convolutional" and layer.groups == 1 and layer.activation in HOMOGENEOUS
                and not layer.activation_threshold and layer.winner_rate == 1 and not layer.xnor):
            found = reached(layer.index, 0)
            if found:
                out[layer.index] = found
    return out


def input_ranges(net: Network, calib: np.ndarray, convs, batch: int = 8) -> dict[int, np.ndarray]:
    """(2, C) per-channel min and max of the input of each conv in `convs` over calib (N, C, H, W): the
    tensors the activation grid quantizes."""
    ranges: dict[int, np.ndarray] = {}

    def run(layer, xs):
        if layer.index in convs:
            now = np.stack([xs[0].min(axis=(0, 2, 3)), xs[0].max(axis=(0, 2, 3))])
            old = ranges.get(layer.index, now)
            ranges[layer.index] = np.stack([np.minimum(old[0], now[0]), np.maximum(old[1], now[1])])
        return layer.forward(xs)
    for start in range(0, len(calib), batch):
        net.forward(calib[start:start + batch], keep=set(), run=run)
    return ranges


def channel_factors(channels: np.ndarray, tensor: np.ndarray, strength: float) -> np.ndarray:
    """t_c (C,) from per-channel (min, max) (2, C) inside a tensor with per-channel ranges `tensor` (2, C'):
    each channel grown towards filling the tensor's [min, max] (never beyond it, so the grid's step does
    not grow), to the power `strength`."""
    low, high = channels.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        up = np.where(high > 0, tensor[1].max() / high, np.inf)
        down = np.where(low < 0, tensor[0].min() / low, np.inf)
    factor = np.minimum(up, down)
    factor[~np.isfinite(factor)] = 1.0
    return np.clip(factor, 1.0, MAX_FACTOR) ** strength


def equalize_activations(net: Network, calib: np.ndarray, strength: float = 0.5) -> Network:
    """A BN-folded copy of `net` computing the same function, its conv outputs rescaled per channel so that
    their ranges are closer (see the module docstring); calib (N, C, H, W) gives the ranges."""
    folded, _ = fold_batchnorm(net)
    pairs = equalizable(folded)
    ranges = input_ranges(folded, calib, {reader for readers in pairs.values() for reader, _ in readers})
    params = {layer.index: dict(layer.params) for layer in folded.layers if layer.params}
    for index, readers in pairs.items():
        size = folded.layers[index].filters
        # every reader's input range bounds the growth (conv 8 feeds a maxpool and a concat)
        factor = np.min([channel_factors(ranges[r][:, start:start + size], ranges[r], strength)
                         for r, start in readers], axis=0)
        p = params[index]
        p["weights"] = (p["weights"] * factor[:, None, None, None]).astype(np.float32)
        p["biases"] = (p["biases"] * factor).astype(np.float32)
        for reader, start in readers:
            w = params[reader]["weights"].astype(np.float64)
            w[:, start:start + size] /= factor[None, :, None, None]
            params[reader]["weights"] = w.astype(np.float32)
    out = folded.copy()
    for layer in out.layers:
        if layer.index in params:
            layer.set_params(**params[layer.index])
    return out
