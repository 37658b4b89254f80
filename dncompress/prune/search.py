"""Pruning-as-Search (Li et al., IJCAI 2022): after every prunable conv a depth-wise 1x1 binary
convolution (one indicator per channel position, shared by coupled convs), binarized at 0.5 in the
forward pass with a straight-through estimator, trained with the task loss +
penalty * ((BFLOPs(indicators) - target) / target)^2. Read at the threshold that meets the target, the
indicators give the per-layer widths."""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import numpy as np

from ..data import Dataset
from ..network import Network
from ..train.augment import Augment
from ..train.loop import accumulate
from ..train.optim import SGD, Schedule
from ..train.runner import TrainRun
from .apply import prune_network
from .groups import Channel, channel_groups, channel_maps

THRESHOLD = 0.5


@dataclasses.dataclass
class SearchConfig:
    target_bflops: float
    epochs: int = 3
    batch: int = 8
    penalty: float = 200.0     # weight of the squared relative BFLOPs gap
    gate_lr: float = 0.3       # SGD rate of the indicators
    weight_lr: float = 0.0     # constant SGD rate of the weights; 0 freezes them
    augment: bool = True
    seed: int = 0


@dataclasses.dataclass
class SearchStep:
    epoch: int
    step: int
    steps: int
    loss: float
    bflops: float
    images_per_s: float


class Indicators:
    """One real-valued indicator per position of every prunable channel group (a position = coupled
    channels pruned together), and the differentiable BFLOPs of the network they binarize to."""

    def __init__(self, net: Network):
        self.net = net
        self.groups = [g for g in channel_groups(net) if g.prunable]
        self.values = np.ones(sum(len(g.positions) for g in self.groups))
        convs = [layer for layer in net.layers if layer.is_conv]
        self.offset = {}
        total = 0
        for layer in convs:
            self.offset[layer.index] = total
            total += layer.filters
        self.network_input = total  # a channel slot fixed at 1 for the image channels
        self.position_of = np.full(total + 1, -1)
        start = 0
        for group in self.groups:
            for p, position in enumerate(group.positions):
                for conv, c in position:
                    self.position_of[self.offset[conv] + c] = start + p
            start += len(group.positions)
        maps = channel_maps(net)
        self.terms = []  # per conv: (2e-9 * k^2 * Ho * Wo / groups, input channel slots, output channel slots)
        for layer in convs:
            sources = maps[layer.inputs[0]] if layer.inputs[0] >= 0 else [(-1, c) for c in range(net.input_shape[0])]
            inputs = np.array([self.network_input if conv < 0 else self.offset[conv] + c for conv, c in sources])
            outputs = self.offset[layer.index] + np.arange(layer.filters)
            coef = 2e-9 * layer.size ** 2 * layer.out_shape[1] * layer.out_shape[2] / layer.groups
            self.terms.append((coef, inputs, outputs))

    def channel_mask(self, threshold: float = THRESHOLD) -> np.ndarray:
        """Binarized indicator of every conv output channel (1 where not searched), plus the input slot."""
        gated = self.position_of >= 0
        mask = np.ones(len(self.position_of))
        mask[gated] = self.values[self.position_of[gated]] > threshold
        return mask

    def gates(self) -> dict[int, np.ndarray]:
        """Per searched conv, the 0/1 factor of each output channel."""
        mask = self.channel_mask()
        return {conv: mask[self.offset[conv]:self.offset[conv] + self.net.layers[conv].filters]
                for group in self.groups for conv in group.convs}

    def bflops(self, threshold: float = THRESHOLD) -> tuple[float, np.ndarray]:
        """BFLOPs of the network the indicators binarize to, and its gradient w.r.t. the indicators (STE)."""
        mask = self.channel_mask(threshold)
        total, grad = 0.0, np.zeros(len(mask))
        for coef, inputs, outputs in self.terms:
            active_in, active_out = mask[inputs].sum(), mask[outputs].sum()
            total += coef * active_in * active_out
            grad[outputs] += coef * active_in
            np.add.at(grad, inputs, coef * active_out)
        return total, self.to_positions(grad)

    def to_positions(self, channel_grad: np.ndarray) -> np.ndarray:
        gated = self.position_of >= 0
        return np.bincount(self.position_of[gated], weights=channel_grad[gated], minlength=len(self.values))

    def gate_gradient(self, gate_grads: dict[int, np.ndarray]) -> np.ndarray:
        """d loss / d indicators from the per-conv gradients the training run leaves."""
        channel_grad = np.zeros(len(self.position_of))
        for conv, g in gate_grads.items():
            channel_grad[self.offset[conv]:self.offset[conv] + len(g)] += g
        return self.to_positions(channel_grad)

    def threshold_for(self, target: float) -> float:
        """The lowest threshold (among the indicator values, 0.5 and -1) whose binarized network costs at most
        `target` BFLOPs: the search stops near its target, often a little past it as many indicators
        cross 0.5 in the same step; reading them at this threshold lands on it."""
        candidates = np.unique(np.append(self.values, [THRESHOLD, -1.0]))  # -1: every position on
        lo, hi = 0, len(candidates) - 1
        if self.bflops(candidates[hi])[0] > target:
            return float(candidates[hi])
        while lo < hi:
            mid = (lo + hi) // 2
            if self.bflops(candidates[mid])[0] <= target:
                hi = mid
            else:
                lo = mid + 1
        return float(candidates[lo])

    def keep(self, threshold: float = THRESHOLD) -> set[Channel]:
        """Channels of every position above `threshold` (the best position of a group that would lose all),
        and every channel of groups that are not searched."""
        keep = {ch for g in channel_groups(self.net) if not g.prunable for pos in g.positions for ch in pos}
        start = 0
        for group in self.groups:
            values = self.values[start:start + len(group.positions)]
            on = np.nonzero(values > threshold)[0]
            for p in on if len(on) else [int(np.argmax(values))]:
                keep.update(group.positions[p])
            start += len(group.positions)
        return keep


def apply_search(net: Network, indicators: Indicators, calib: np.ndarray, threshold: float = THRESHOLD) -> Network:
    """The searched widths as a new Network (switched-off channels emitted 0: no compensation), with BN
    running statistics re-estimated on calib (N, C, H, W): removing channels shifts what later convs see,
    and a short search moves the running averages only part of the way."""
    pruned = prune_network(net, indicators.keep(threshold), with_compensation=False)
    pruned.calibrate_batchnorm(calib)
    return pruned


def search(net: Network, dataset: Dataset, config: SearchConfig,
           on_step: Callable[[SearchStep], None] | None = None) -> Indicators:
    """Train the indicators of `net` (and its weights, in place, when weight_lr > 0; BN running statistics
    follow the batches either way); returns them."""
    indicators = Indicators(net)
    schedule = dataclasses.replace(Schedule.from_net(net.net_section), learning_rate=config.weight_lr, burn_in=0,
                                   steps=(), scales=())
    optimizer = SGD(net, schedule)
    # frozen weights (weight_lr 0, the default) need no weight gradients: the gate gradients flow without them
    run = TrainRun(net, param_grads=bool(schedule.learning_rate))
    aug = Augment.from_network(net) if config.augment else None
    batch = min(config.batch, len(dataset))
    steps = len(dataset) // batch
    for epoch in range(config.epochs):
        rng = np.random.default_rng([config.seed, epoch])
        order = rng.permutation(len(dataset))
        for step in range(steps):
            start = time.perf_counter()
            run.gates = indicators.gates()
            grads, parts, gate_grads = accumulate(run, net, dataset, order[step * batch:(step + 1) * batch], 1, aug,
                                                  rng, None, True)
            bflops, bflops_grad = indicators.bflops()
            gap = (bflops - config.target_bflops) / config.target_bflops
            grad = indicators.gate_gradient(gate_grads) / batch \
                + config.penalty * 2 * gap / config.target_bflops * bflops_grad
            # plain SGD: an indicator moves in proportion to its gradient, so channels that cost many FLOPs
            # and help the loss little switch off first (momentum or Adam overshoot the target by far)
            indicators.values = np.clip(indicators.values - config.gate_lr * grad, 0.0, 1.0)
            if schedule.learning_rate:
                optimizer.step(grads, epoch * steps + step + 1, batch)
            if on_step:
                task = sum(parts.values()) / batch
                on_step(SearchStep(epoch, step, steps, task + config.penalty * gap ** 2, bflops,
                                   batch / (time.perf_counter() - start)))
    return indicators
