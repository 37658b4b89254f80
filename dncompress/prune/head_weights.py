"""What an output error of each conv costs at the heads, for the one-shot allocation (prune/oneshot.py).

The allocation compares the error curves of different groups: each curve is the relative output error of
the group's consumer convs. A consumer's own relative error is not comparable across layers: a 3% error in
the input of a head branch loses detections, the same error deep in the trunk is largely absorbed (measured:
docs/pruning.md, "Held-out error curves"). So each consumer gets a weight: the damage at the heads per unit
of its relative error, measured by adding Gaussian noise of relative energy `level` to its (pre-activation,
BN-folded, bias-free) output on calibration images and scoring the heads against the clean network's with
the detection distillation loss (train/loss.py: objectness everywhere, boxes and classes where the
original sees objects), per image."""
from __future__ import annotations

import numpy as np

from ..layers.conv import activation_of
from ..network import Network
from ..train.loss import distillation_loss

LEAKY_SLOPE = 0.1


def output_rms(targets: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
    """{conv: (C,) rms of its BN-folded output without bias} from the calibration's sampled outputs
    (`oneshot.Calibration.targets`: rows x C), the quantity each error curve is relative to."""
    return {c: np.sqrt(np.mean(np.square(t, dtype=np.float64), axis=0)) for c, t in targets.items()}


def noisy_output(out: np.ndarray, activation: str, std: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """out: a conv layer's output (N, C, H, W); noise of per-channel std `std` (C,) added before its
    activation (leaky and linear are inverted exactly; any other activation gets the noise after it)."""
    noise = (rng.standard_normal(out.shape, dtype=np.float32) * std.reshape(1, -1, 1, 1)).astype(out.dtype)
    if activation == "leaky":
        pre = np.where(out >= 0, out, out / LEAKY_SLOPE) + noise
        return np.where(pre >= 0, pre, LEAKY_SLOPE * pre)
    return out + noise


def head_damage(net: Network, images: np.ndarray, clean: list[np.ndarray], noisy: list[np.ndarray]) -> float:
    """Distillation loss of the noisy heads against the clean ones, per image."""
    total = sum(sum(distillation_loss(head, n, c)[0].values()) for head, n, c in zip(net.heads, noisy, clean))
    return float(total) / len(images)


def head_sensitivity(net: Network, images: np.ndarray, rms: dict[int, np.ndarray], level: float = 0.05,
                     seed: int = 0) -> dict[int, float]:
    """{conv: head damage per unit relative output error}. rms[conv]: (C,) root mean square of the conv's
    BN-folded output without bias (what its error curve is relative to), from the calibration statistics."""
    clean = net.forward(images)
    weights = {}
    for conv, channel_rms in rms.items():
        rng = np.random.default_rng([seed, conv])
        activation = activation_of(net.layers[conv])
        std = np.sqrt(level) * np.asarray(channel_rms, np.float32)

        def run(layer, xs, conv=conv, std=std, activation=activation, rng=rng):
            out = layer.forward(xs)
            return noisy_output(out, activation, std, rng) if layer.index == conv else out
        weights[conv] = head_damage(net, images, clean, net.forward(images, run=run)) / level
    return weights
