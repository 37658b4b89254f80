"""Least-squares reconstruction (energy-aware pruning, step 4): refit every conv that lost input
channels so that, on calibration images, it reproduces the unpruned network's pre-activation output."""
from __future__ import annotations

import sys

import click
import numpy as np

from ..engine.conv import conv2d, im2col
from ..layers.conv import BN_EPS
from ..network import Network
from .apply import CONV_TYPES
from .groups import Channel, channel_maps


def bn_scale(layer) -> np.ndarray:
    """Per-filter factor BN applies to the raw conv output (1 without BN)."""
    p = layer.params
    if not layer.batch_normalize:
        return np.ones(layer.filters)
    return p["scales"].astype(np.float64) / np.sqrt(p["rolling_variance"].astype(np.float64) + BN_EPS)


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


def reconstruct(original: Network, pruned: Network, keep: set[Channel], calib: np.ndarray,
                ridge: float = 0.1, max_rows: int = 30000, seed: int = 0, progress: bool = True) -> list[int]:
    """Refit, in network order, each conv of `pruned` (made from `original` with `keep`) whose input has
    fewer channels than in `original`, using the already-refitted layers before it. calib: (N, C, H, W).
    Returns the refitted layer indices."""
    rng = np.random.default_rng(seed)
    maps = channel_maps(original)
    targets = [new.index for old, new in zip(original.layers, pruned.layers)
               if new.type in CONV_TYPES and new.groups == 1 and new.in_shapes[0][0] < old.in_shapes[0][0]]
    originals = dict(zip(sorted({original.layers[i].inputs[0] for i in targets}),
                         original.forward(calib, keep={original.layers[i].inputs[0] for i in targets})))
    with click.progressbar(targets, label="reconstruct", file=sys.stderr, hidden=not progress) as bar:
        for index in bar:
            old, new = original.layers[index], pruned.layers[index]
            outputs = np.array([c for c, ch in enumerate(maps[index]) if ch in keep])
            w_old = old.folded()[0][outputs]
            target = conv2d(originals[old.inputs[0]], w_old, None, old.stride, old.pad)
            x_new = pruned.forward(calib, keep={new.inputs[0]})[0]
            cols = im2col(x_new, new.size, new.stride, new.pad).transpose(0, 2, 1)
            cols = cols.reshape(-1, cols.shape[-1])
            target = target.reshape(len(calib), new.filters, -1).transpose(0, 2, 1).reshape(len(cols), -1)
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
    return targets
