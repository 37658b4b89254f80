"""Least-squares reconstruction (energy-aware pruning, step 4): refit every conv that lost input
channels so that, on calibration images, it reproduces the unpruned network's pre-activation output."""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ..engine.conv import conv2d, im2col
from ..layers import Layer
from ..network import Network
from ..progress import Progress, sink
from .groups import Channel, channel_maps


def bn_scale(layer) -> np.ndarray:
    """Per-filter factor BN applies to the raw conv output (1 without BN)."""
    return layer.output_affine()[0]


def least_squares(cols: np.ndarray, target: np.ndarray, prior: np.ndarray, ridge: float) -> tuple[np.ndarray, np.ndarray]:
    """cols: (R, K), target: (R, O), prior: (O, K) -> (W (O, K), b (O,)) minimizing
    |cols W^T + b - target|^2 + ridge' |W - prior|^2 by the normal equations. Pulling towards the pruned
    layer's own weights (not towards 0) keeps deep layers sane when K exceeds the calibration rows;
    ridge' = ridge * mean diagonal of the Gram matrix, so `ridge` is unit-free."""
    x = np.concatenate([cols, np.ones((len(cols), 1))], axis=1)
    gram = x.T @ x
    strength = ridge * np.mean(np.diag(gram)[:-1])
    penalty = strength * np.eye(len(gram))
    penalty[-1, -1] = 0.0
    rhs = x.T @ target
    rhs[:-1] += strength * prior.T
    solution = np.linalg.solve(gram + penalty, rhs)
    return solution[:-1].T, solution[-1]


def forward_in_order(net: Network, x: np.ndarray) -> Iterator[tuple[Layer, list[np.ndarray]]]:
    """Yield each layer with its inputs before running it, so the caller may change its parameters first;
    outputs are freed after their last reader. x: (N, C, H, W)."""
    last_reader = {i: layer.index for layer in net.layers for i in layer.inputs}
    outputs: dict[int, np.ndarray] = {}
    for layer in net.layers:
        xs = [outputs[i] if i >= 0 else x for i in layer.inputs]
        yield layer, xs
        outputs[layer.index] = layer.forward(xs)
        for i in layer.inputs:
            if last_reader.get(i) == layer.index:
                outputs.pop(i, None)


def refit_layer(old, new, outputs: np.ndarray, x_old: np.ndarray, x_new: np.ndarray, rng: np.random.Generator,
                ridge: float, max_rows: int) -> None:
    """Refit conv `new` so that on input x_new (N, C', H, W) it reproduces what `old` computes before its
    activation on x_old (N, C, H, W), for old's filters `outputs`."""
    w_old = old.folded()[0][outputs]
    target = conv2d(x_old, w_old, None, old.stride, old.pad)
    cols = im2col(x_new, new.size, new.stride, new.pad).transpose(0, 2, 1)
    cols = cols.reshape(-1, cols.shape[-1])
    target = target.reshape(len(x_old), new.filters, -1).transpose(0, 2, 1).reshape(len(cols), -1)
    rows = rng.choice(len(cols), min(max_rows, len(cols)), replace=False)
    prior = new.folded()[0].reshape(new.filters, -1).astype(np.float64)
    w_fit, b_fit = least_squares(cols[rows].astype(np.float64), target[rows].astype(np.float64), prior, ridge)
    scale = bn_scale(old)[outputs]
    safe = np.abs(scale) > 1e-8
    raw = np.where(safe[:, None], w_fit / np.where(safe, scale, 1)[:, None],
                   new.params["weights"].reshape(new.filters, -1))
    update = {"weights": raw.reshape(new.params["weights"].shape).astype(np.float32)}
    if new.batch_normalize:
        shift = np.where(safe, b_fit / np.where(safe, scale, 1), 0)
        update["rolling_mean"] = (old.params["rolling_mean"][outputs] - shift).astype(np.float32)
    else:
        update["biases"] = (old.params["biases"][outputs] + b_fit).astype(np.float32)
    new.set_params(**update)


def reconstruct(original: Network, pruned: Network, keep: set[Channel], calib: np.ndarray,
                ridge: float = 0.1, max_rows: int = 30000, seed: int = 0,
                progress: Progress | bool | None = None) -> list[int]:
    """Refit, in network order, each conv of `pruned` (made from `original` with `keep`) whose input has
    fewer channels than in `original`, on the outputs of the already-refitted layers before it.
    Both networks run once over calib (N, C, H, W), side by side. Returns the refitted layer indices."""
    rng = np.random.default_rng(seed)
    maps = channel_maps(original)
    targets = [new.index for old, new in zip(original.layers, pruned.layers)
               if new.is_conv and new.groups == 1 and new.in_shapes[0][0] < old.in_shapes[0][0]]
    report = sink(progress)
    for (old, old_xs), (new, new_xs) in zip(forward_in_order(original, calib), forward_in_order(pruned, calib)):
        if new.index in targets:
            outputs = np.array([c for c, ch in enumerate(maps[old.index]) if ch in keep])
            refit_layer(old, new, outputs, old_xs[0], new_xs[0], rng, ridge, max_rows)
            report("reconstruct", targets.index(new.index) + 1, len(targets))
    return targets
