"""Energy-aware weight pruning (Yang, Chen & Sze, CVPR 2017). Convs are visited in order of estimated
energy (stats cost model), most expensive first. Each is magnitude-pruned past its target, the pruned
weights that most reduce its output error are restored up to the target, and the kept weights are refit
by least squares on calibration feature maps. The walk stops when fidelity drops past a bound."""
from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from ..engine.conv import im2col
from ..network import Network
from ..progress import Progress, counted
from ..stats import layer_costs
from .reconstruct import bn_scale

# columns of im2col multiplied at once when accumulating Gram matrices (bounds memory on early layers)
CHUNK_COLUMNS = 1 << 16
# filters whose error gradients are updated together while restoring weights
FILTER_CHUNK = 64


@dataclasses.dataclass
class LayerStatistics:
    """Calibration statistics of one conv, in float64. K = C*k*k weights per filter plus a ones row for the
    bias: gram = X~ X~^T (K+1, K+1) of the pruned network's input columns, cross = W X X~^T (O, K+1) with
    the original network's raw output, target = |W X|^2 per filter (O,)."""
    gram: np.ndarray
    cross: np.ndarray
    target: np.ndarray

    def error(self, weights: np.ndarray, bias: np.ndarray) -> np.ndarray:
        """Per-filter squared error |W' X~ + b - W X|^2 of weights (O, K) and bias delta (O,)."""
        w = np.concatenate([weights, bias[:, None]], axis=1)
        return self.target - 2 * np.sum(w * self.cross, axis=1) + np.sum((w @ self.gram) * w, axis=1)


def layer_statistics(weights: np.ndarray, x_original: np.ndarray, x_pruned: np.ndarray, size: int, stride: int,
                     pad: int) -> LayerStatistics:
    """weights: (O, K) raw conv weights; x_*: (N, C, H, W) this conv's input in each network."""
    k = weights.shape[1]
    gram, cross = np.zeros((k + 1, k + 1)), np.zeros((k, k + 1))
    target = np.zeros(len(weights))
    w32 = weights.astype(np.float32)
    for n in range(len(x_original)):
        cols_o = im2col(x_original[n:n + 1], size, stride, pad)[0]
        cols_p = im2col(x_pruned[n:n + 1], size, stride, pad)[0]
        for start in range(0, cols_o.shape[1], CHUNK_COLUMNS):
            o = cols_o[:, start:start + CHUNK_COLUMNS]
            p = np.concatenate([cols_p[:, start:start + CHUNK_COLUMNS], np.ones((1, o.shape[1]), np.float32)])
            gram += p @ p.T
            cross += o @ p.T
            target += np.sum(np.square(w32 @ o, dtype=np.float64), axis=1)
    return LayerStatistics(gram, weights @ cross, target)


def restore(weights: np.ndarray, mask: np.ndarray, stats: LayerStatistics, count: int,
            importance: np.ndarray) -> np.ndarray:
    """Greedily un-prune `count` weights (at their original values) that most reduce the output error;
    importance (O,) weighs filters (BN scale squared). Each round restores the best candidates across
    filters, at most a quarter of the remaining budget per filter, then updates the error gradient.
    Returns the new mask."""
    mask = mask.copy()
    o, k = weights.shape
    gram = stats.gram[:k, :k].astype(np.float32)
    diag = np.diag(stats.gram)[:k]
    grad = stats.cross[:, :k] - ((weights * mask).astype(np.float32) @ gram)
    while count > 0:
        gain = (2 * weights * grad - weights ** 2 * diag) * importance[:, None]
        gain[mask] = -np.inf
        per_filter = min(k, max(1, -(-count // (4 * o))))
        cols = np.argpartition(-gain, per_filter - 1, axis=1)[:, :per_filter]
        best = np.take_along_axis(gain, cols, axis=1).ravel()
        order = np.argsort(-best, kind="stable")[:count]
        order = order[np.isfinite(best[order])]
        if not len(order):
            break
        chosen = np.zeros(cols.shape, bool)
        chosen.flat[order] = True
        mask[np.nonzero(chosen)[0], cols[chosen]] = True
        values = np.where(chosen, np.take_along_axis(weights, cols, axis=1), 0).astype(np.float32)
        for start in range(0, o, FILTER_CHUNK):
            rows = slice(start, start + FILTER_CHUNK)
            grad[rows] -= (values[rows, None, :] @ gram[cols[rows]])[:, 0]
        count -= len(order)
    return mask


def refit(weights: np.ndarray, mask: np.ndarray, stats: LayerStatistics, ridge: float,
          iterations: int = 30, tol: float = 1e-3) -> tuple[np.ndarray, np.ndarray]:
    """Least squares on each filter's kept weights and a bias delta: minimize |W' X~ + b - W X|^2 +
    ridge' |W' - W|^2 over the support, by conjugate gradients on all filters at once.
    ridge' = ridge * mean Gram diagonal (unit-free). The products run in float32 (BLAS); the
    iterates stay float64. Returns (W' (O, K) zero off the mask, b (O,))."""
    o, k = weights.shape
    support = np.concatenate([mask, np.ones((o, 1), bool)], axis=1)
    penalty = np.full(k + 1, ridge * np.mean(np.diag(stats.gram)[:k]))
    penalty[-1] = 0.0
    prior = np.concatenate([weights, np.zeros((o, 1))], axis=1) * support
    gram = stats.gram.astype(np.float32)

    def apply(v: np.ndarray) -> np.ndarray:
        return (v.astype(np.float32) @ gram + penalty * v) * support

    x = prior.copy()
    r = (stats.cross + penalty * prior) * support - apply(x)
    p = r.copy()
    rs = np.sum(r * r, axis=1)
    start = np.maximum(rs, 1e-300)
    for _ in range(iterations):
        ap = apply(p)
        curvature = np.sum(p * ap, axis=1)
        alpha = np.divide(rs, curvature, out=np.zeros_like(rs), where=curvature > 0)
        x += alpha[:, None] * p
        r -= alpha[:, None] * ap
        rs_next = np.sum(r * r, axis=1)
        if np.all(rs_next <= tol ** 2 * start):
            break
        p = r + np.divide(rs_next, rs, out=np.zeros_like(rs), where=rs > 0)[:, None] * p
        rs = rs_next
    return x[:, :k], x[:, k]


@dataclasses.dataclass
class EnergyStep:
    """One visited conv: its share of the model energy, what was kept and what it cost in fidelity."""
    index: int
    energy: float
    density: float
    error_magnitude: float   # relative output error after magnitude pruning alone
    error: float             # after restoration and least-squares refit
    fidelity: float
    accepted: bool


def energy_order(net: Network) -> list[int]:
    """Conv layer indices (groups=1), highest estimated energy first."""
    costs = layer_costs(net)
    convs = [layer.index for layer in net.layers if layer.is_conv and layer.groups == 1]
    return sorted(convs, key=lambda i: -costs[i].total_energy)


def conv_inputs(net: Network, convs: list[int], calib: np.ndarray) -> dict[int, np.ndarray]:
    """The input of each conv in `convs` on calib (N, C, H, W), keyed by conv index."""
    sources = {i: net.layers[i].inputs[0] for i in convs}
    wanted = {s for s in sources.values() if s >= 0}
    outputs = dict(zip(sorted(wanted), net.forward(calib, keep=wanted))) if wanted else {}
    return {i: calib if s < 0 else outputs[s] for i, s in sources.items()}


def prune_conv(layer, x_original: np.ndarray, x_pruned: np.ndarray, ratio: float, overshoot: float,
               ridge: float) -> tuple[dict[str, np.ndarray], float, float]:
    """New params for one conv with `ratio` of its weights zeroed -> (params, relative error after magnitude
    pruning alone, relative error after restoration and refit)."""
    shape = layer.params["weights"].shape
    weights = layer.params["weights"].reshape(shape[0], -1).astype(np.float64)
    scale2 = bn_scale(layer) ** 2
    stats = layer_statistics(weights, x_original, x_pruned, layer.size, layer.stride, layer.pad)
    keep = int(round(weights.size * (1 - ratio)))
    first = keep - int(round(overshoot * keep))
    ranking = np.argsort(-np.abs(weights * np.sqrt(scale2)[:, None]), axis=None, kind="stable")
    mask = np.zeros(weights.shape, bool)
    mask.flat[ranking[:keep]] = True
    zero_bias = np.zeros(len(weights))
    total = max(float(np.sum(scale2 * stats.target)), 1e-300)
    error_magnitude = float(np.sum(scale2 * stats.error(weights * mask, zero_bias))) / total
    mask[:] = False
    mask.flat[ranking[:first]] = True
    mask = restore(weights, mask, stats, keep - first, scale2)
    fitted, bias = refit(weights, mask, stats, ridge)
    error = float(np.sum(scale2 * stats.error(fitted, bias))) / total
    params = {"weights": fitted.reshape(shape).astype(np.float32)}
    if layer.batch_normalize:
        params["rolling_mean"] = (layer.params["rolling_mean"] - bias).astype(np.float32)
    else:
        params["biases"] = (layer.params["biases"] + bias).astype(np.float32)
    return params, error_magnitude, error


def energy_aware_prune(net: Network, calib: np.ndarray, ratio: float, fidelity: Callable[[Network], float],
                       max_drop: float, overshoot: float = 0.1, ridge: float = 0.1,
                       progress: Progress | bool | None = None) -> tuple[Network, list[EnergyStep]]:
    """Prune `ratio` of the weights of each conv, highest energy first, until fidelity(pruned) (1.0 for the
    original) falls below 1 - max_drop; the conv that crossed the bound is restored. `net` is unchanged."""
    pruned = net.copy()
    order = energy_order(net)
    original_inputs = conv_inputs(net, order, calib)
    energies = {c.index: c.total_energy for c in layer_costs(net)}
    steps: list[EnergyStep] = []
    for index in counted(order, "energy-aware prune", progress):
        layer = pruned.layers[index]
        x_pruned = conv_inputs(pruned, [index], calib)[index]
        before = dict(layer.params)
        params, error_magnitude, error = prune_conv(layer, original_inputs[index], x_pruned, ratio, overshoot,
                                                    ridge)
        layer.set_params(**params)
        score = fidelity(pruned)
        accepted = score >= 1 - max_drop
        steps.append(EnergyStep(index, energies[index], float(np.count_nonzero(params["weights"]))
                                / params["weights"].size, error_magnitude, error, score, accepted))
        if not accepted:
            layer.set_params(**before)
            break
    return pruned, steps
