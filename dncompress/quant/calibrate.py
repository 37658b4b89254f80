"""Ranges for quantization: activation statistics over calibration images, and minmax / percentile / mse
range choice for activations (affine, unsigned) and weights (symmetric, per channel or per tensor)."""
from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path

import click
import numpy as np

from ..detect import load_image, preprocess
from ..network import Network
from .quantizers import activation_params, fake_quantize, signed_range, unsigned_range

METHODS = ("minmax", "percentile", "mse")
PERCENTILE = 99.99
# range shrink factors tried by the mse search (1.0 = minmax)
MSE_FACTORS = np.linspace(0.2, 1.0, 33)
SAMPLES_PER_BATCH = 20_000


@dataclasses.dataclass
class ActivationStats:
    """What calibration saw at one conv input: extremes, a random sample of values, per-channel means."""

    low: float = np.inf
    high: float = -np.inf
    samples: list[np.ndarray] = dataclasses.field(default_factory=list)
    channel_sum: np.ndarray | None = None
    count: int = 0

    def add(self, x: np.ndarray, rng: np.random.Generator) -> None:
        """x: (N, C, H, W)."""
        self.low, self.high = min(self.low, float(x.min())), max(self.high, float(x.max()))
        flat = x.reshape(-1)
        self.samples.append(flat[rng.integers(0, flat.size, min(SAMPLES_PER_BATCH, flat.size))])
        sums = x.sum(axis=(0, 2, 3), dtype=np.float64)
        self.channel_sum = sums if self.channel_sum is None else self.channel_sum + sums
        self.count += x.shape[0] * x.shape[2] * x.shape[3]

    @property
    def channel_mean(self) -> np.ndarray:
        """(C,) mean of every input channel."""
        return self.channel_sum / self.count

    @property
    def sample(self) -> np.ndarray:
        return np.concatenate(self.samples)


def calibration_batches(images: Sequence[Path], net: Network, batch: int):
    """Letterboxed (N, C, H, W) batches of the calibration images, as eval and detect see them."""
    for start in range(0, len(images), batch):
        yield np.concatenate([preprocess(load_image(p), net.info.width, net.info.height)
                              for p in images[start:start + batch]])


def collect_stats(net: Network, layer_ids: Sequence[int], images: Sequence[Path], batch: int = 8,
                  seed: int = 0, progress: bool = False) -> dict[int, ActivationStats]:
    """ActivationStats of the input of every layer in `layer_ids`, over the float network."""
    sources = {i: net.layers[i].inputs[0] for i in layer_ids}
    keep = {s for s in sources.values() if s >= 0}
    stats = {i: ActivationStats() for i in layer_ids}
    rng = np.random.default_rng(seed)
    with click.progressbar(length=len(images), label="calibrate", file=sys.stderr, hidden=not progress) as bar:
        for x in calibration_batches(images, net, batch):
            outputs = dict(zip(sorted(keep), net.forward(x, keep=keep))) if keep else {}
            outputs[-1] = x
            for i, source in sources.items():
                stats[i].add(outputs[source], rng)
            bar.update(len(x))
    return stats


def activation_mse(sample: np.ndarray, lows: np.ndarray, highs: np.ndarray, bits: int) -> np.ndarray:
    """Mean squared fake-quantization error of `sample` for each candidate range."""
    errors = []
    for lo, hi in zip(lows, highs):
        scale, zero_point = activation_params(lo, hi, bits)
        errors.append(np.mean((fake_quantize(sample, scale, zero_point, *unsigned_range(bits)) - sample) ** 2))
    return np.array(errors)


def activation_range(stats: ActivationStats, method: str, bits: int) -> tuple[float, float]:
    """(low, high) of the activation grid: observed extremes, percentiles, or the mse-best shrink."""
    if method == "minmax":
        return stats.low, stats.high
    sample = stats.sample
    if method == "percentile":
        low, high = np.percentile(sample, [100 - PERCENTILE, PERCENTILE])
        return float(min(low, 0.0)), float(high)
    lows, highs = min(stats.low, 0.0) * MSE_FACTORS, stats.high * MSE_FACTORS
    best = int(np.argmin(activation_mse(sample, lows, highs, bits)))
    return float(lows[best]), float(highs[best])


def weight_clip(w: np.ndarray, bits: int, per_channel: bool, method: str) -> np.ndarray:
    """Clipping magnitude, (O,) or (), for symmetric weight quantization. w: (O, C, K, K)."""
    flat = np.abs(w.reshape(len(w), -1) if per_channel else w.reshape(1, -1)).astype(np.float64)
    absmax = flat.max(axis=1)
    if method == "minmax":
        clip = absmax
    elif method == "percentile":
        clip = np.percentile(flat, PERCENTILE, axis=1)
    else:
        top = signed_range(bits)[1]
        errors = []
        for factor in MSE_FACTORS:
            scale = np.where(absmax > 0, absmax * factor / top, 1.0)[:, None]
            errors.append(((np.clip(np.round(flat / scale), 0, top) * scale - flat) ** 2).sum(axis=1))
        clip = absmax * MSE_FACTORS[np.argmin(np.array(errors), axis=0)]
    return clip if per_channel else clip.reshape(())
