"""Apply a keep-set to a network: new filter counts in the cfg, sliced weights, and compensation of the
removed channels' constant outputs in their consumers."""
from __future__ import annotations

import numpy as np

from ..engine.activations import ACTIVATIONS
from ..layers import CONV_TYPES  # noqa: F401 (re-exported: prune modules import it from here)
from ..network import Network
from .groups import Channel, channel_maps


def _activate(name: str, values: np.ndarray) -> np.ndarray:
    return ACTIVATIONS[name](values.astype(np.float32).copy())


def removed_constants(net: Network, keep: set[Channel]) -> list[np.ndarray]:
    """Per layer output channel, the constant a removed channel is assumed to emit (0 for kept ones):
    act(beta) for a conv (exact when its BN gamma is 0), carried through pooling, upsampling, routes and
    shortcuts."""
    maps = channel_maps(net)
    consts: list[np.ndarray] = []
    input_const = np.zeros(net.input_shape[0], np.float32)
    for layer, channels in zip(net.layers, maps):
        removed = np.array([ch not in keep and ch[0] >= 0 for ch in channels])
        sources = [consts[i] if i >= 0 else input_const for i in layer.inputs]
        if layer.is_conv:
            beta = layer.params["biases"]
            value = _activate(layer.activation, beta)
        elif layer.type == "route":
            value = np.concatenate([src[sl] for src, sl in zip(sources, layer.channel_slices())])
        elif layer.type == "shortcut":
            value = sources[0].copy()
            for src in sources[1:]:     # Darknet adds the first min(C) channels (equal spatial sizes here)
                n = min(len(value), len(src))
                value[:n] += src[:n]
            value = _activate(layer.activation, value)
        elif layer.type == "upsample":
            value = sources[0] * np.float32(layer.scale)
        elif len(sources[0]) == len(channels):
            value = sources[0]
        else:
            value = np.zeros(len(channels), np.float32)   # [reorg] and the like: inputs are never pruned
        consts.append(np.where(removed, value, 0).astype(np.float32))
    return consts


def compensate(layer, input_const: np.ndarray) -> dict[str, np.ndarray]:
    """Fold a constant input (per input channel) into the conv's BN running mean or bias. Exact away from
    the zero-padded border, where a kxk conv (k > 1) sees padding instead of the constant."""
    contribution = layer.params["weights"].sum(axis=(2, 3)).astype(np.float64) @ input_const.astype(np.float64)
    if layer.batch_normalize:
        return {"rolling_mean": (layer.params["rolling_mean"] - contribution).astype(np.float32)}
    return {"biases": (layer.params["biases"] + contribution).astype(np.float32)}


def prune_network(net: Network, keep: set[Channel], with_compensation: bool = True) -> Network:
    """A new Network with only the kept channels; `net` is left unchanged."""
    maps = channel_maps(net)
    consts = removed_constants(net, keep) if with_compensation else None
    kept = [np.array([i for i, ch in enumerate(m) if ch in keep or ch[0] < 0], np.int64) for m in maps]
    sections = [net.net_section.copy()]
    for layer in net.layers:
        section = layer.section.copy()
        if layer.is_conv:
            section.options["filters"] = str(len(kept[layer.index]))
        sections.append(section)
    pruned = net.derive(sections)
    input_kept = np.arange(net.input_shape[0])
    for old, new in zip(net.layers, pruned.layers):
        if not old.is_conv:
            continue
        source = old.inputs[0]
        params = dict(old.params)
        if consts is not None and source >= 0 and consts[source].any():
            params.update(compensate(old, consts[source]))
        rows, cols = kept[old.index], kept[source] if source >= 0 else input_kept
        if old.groups > 1:
            # weights (filters, in/groups, k, k): channel_groups keeps a grouped conv's inputs and filters
            # whole, so its weights are copied as they are (slicing axis 1 by input channel was an IndexError)
            cols = np.arange(params["weights"].shape[1])
        new.set_params(**{name: (value[rows][:, cols] if name == "weights" else value[rows]).copy()
                          for name, value in params.items()})
    return pruned
