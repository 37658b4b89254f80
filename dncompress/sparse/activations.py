"""Activation sparsity (integral pruning, Yang et al. 2018): per conv, how many outputs are zero or near
zero over a set of images, and how many of its MACs a zero-skipping engine would skip because the input
is zero (and, with weight sparsity, because either operand is)."""
from __future__ import annotations

import dataclasses

import numpy as np

from ..engine.conv import conv2d
from ..network import Network

NEAR_ZERO = 0.01


@dataclasses.dataclass
class ConvActivity:
    """Counts for one conv summed over the images."""

    index: int
    outputs: int = 0             # output elements (after activation and masks)
    zeros: int = 0               # exact zeros among them
    near_zeros: int = 0          # |a| < NEAR_ZERO
    inputs: int = 0
    input_zeros: int = 0
    macs: int = 0                # dense MACs (as `stats`: every tap, zero padding included)
    padding_macs: int = 0        # MACs whose input is the zero padding around the image
    nonzero_input_macs: int = 0  # MACs whose input operand is nonzero
    effectual_macs: int = 0      # MACs with both operands nonzero

    def add(self, other: "ConvActivity") -> None:
        for field in dataclasses.fields(self)[1:]:
            setattr(self, field.name, getattr(self, field.name) + getattr(other, field.name))


def tap_coverage(size: int, kernel: int, stride: int, pad: int) -> np.ndarray:
    """(size,) how many (output position, kernel tap) pairs read each input position along one axis."""
    out = (size + 2 * pad - kernel) // stride + 1
    reads = (np.arange(out)[:, None] * stride - pad + np.arange(kernel)[None, :]).ravel()
    return np.bincount(reads[(reads >= 0) & (reads < size)], minlength=size)


def conv_activity(layer, x: np.ndarray, y: np.ndarray) -> ConvActivity:
    """x: the conv's input (N, C, H, W), y: its output after activation and masks."""
    n, c, h, w = x.shape
    nonzero = x != 0
    coverage = np.outer(tap_coverage(h, layer.size, layer.stride, layer.pad),
                        tap_coverage(w, layer.size, layer.stride, layer.pad))
    per_input = layer.filters // layer.groups
    nonzero_input_macs = per_input * int((nonzero.sum(axis=(0, 1)) * coverage).sum())
    weights = layer.params["weights"]
    if np.all(weights != 0):
        effectual = nonzero_input_macs
    else:
        counts = conv2d(nonzero.astype(np.float32), (weights != 0).astype(np.float32), None, layer.stride,
                        layer.pad, layer.groups)
        effectual = int(counts.sum(dtype=np.float64))
    macs = n * weights.size * y.shape[2] * y.shape[3]
    return ConvActivity(layer.index, y.size, int(np.count_nonzero(y == 0)),
                        int(np.count_nonzero(np.abs(y) < NEAR_ZERO)), x.size, int(x.size - nonzero.sum()), macs,
                        macs - per_input * n * c * int(coverage.sum()), nonzero_input_macs, effectual)


def activation_stats(net: Network, images: np.ndarray, batch: int = 4) -> dict[int, ConvActivity]:
    """Conv index -> its ConvActivity over `images` (N, C, H, W), `batch` images per forward pass."""
    stats = {layer.index: ConvActivity(layer.index) for layer in net.layers if layer.is_conv}

    def probe(layer, xs):
        y = layer.forward(xs)
        if layer.index in stats:
            stats[layer.index].add(conv_activity(layer, xs[0], y))
        return y
    for start in range(0, len(images), batch):
        net.forward(images[start:start + batch], run=probe)
    return stats


def with_activation_masks(net: Network, threshold: float = 0.0, winner_rate: float = 1.0) -> Network:
    """A copy of `net` whose convs carry `activation_threshold` / `winner_rate` keys, except the convs feeding
    a head (they emit raw logits)."""
    sections = [s.copy() for s in net.sections]
    for layer, section in zip(net.layers, sections[1:]):
        if layer.is_conv and not net.graph.feeds_head(layer.index):
            if threshold:
                section.options["activation_threshold"] = f"{threshold:g}"
            if winner_rate < 1:
                section.options["winner_rate"] = f"{winner_rate:g}"
    return net.copy(sections)
