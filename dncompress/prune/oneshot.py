"""One-shot structured pruning with layer-wise reconstruction (ThiNet / He et al. 2017 / OBC / Kwon et al.
2022 style), and a width allocation under a cost budget that cannot gut a layer.

Every prunable channel group (groups.py) is judged by its *consumers*: the convs that read its channels.
For a consumer with weights W (O, K) (BN-folded) and im2col inputs X (K, rows) on calibration images, the
output error of a weight change is (W' - W) H (W' - W)^T with H = X X^T (+ ridge). Removing a position
(its k*k columns S in every consumer) with the optimal compensation of the remaining weights costs
trace(W_S (Hinv_SS)^-1 W_S^T) (Optimal Brain Surgeon on a group of columns); H^-1 is downdated by the
Schur complement after each removal, so the greedy removal order is exact for the quadratic model.

1. allocate(): the greedy OBS removal of every group on the *original* network gives an error curve per
   group (relative output error of its consumers vs positions removed). With heldout=True the curve is held
   out: the removal and its compensation are fitted on one fold of the calibration images and the error is
   measured on the other (both ways, averaged), since in-sample OBS errors are too optimistic for deep
   consumers whose K inputs are many against their rows (yolov3-tiny conv 12: K = 4,608, 169 rows per
   image); measured on voc765 it did not improve the pruned model, so it is not the default. Widths are then
   chosen by greedy on marginal error per unit of cost (channels, BFLOPs or params), above a per-layer floor.
2. prune_oneshot(): groups are pruned in network order on the *pruned* network (so errors do not
   accumulate): statistics of the consumers' inputs in the pruned network against the original network's
   consumer outputs, OBS selection of the allocated count, then a least-squares refit of the consumers
   with a ridge chosen by 2-fold cross-validation over calibration images.

Memory: Gram matrices (K+1)^2 per consumer and the original consumer outputs at sampled positions
(rows x O), never the full im2col columns of all images.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np

from ..engine.conv import im2col
from ..errors import DncompressError
from ..network import Network
from ..stats import layer_costs
from .apply import CONV_TYPES, prune_network
from .groups import Channel, ChannelGroup, channel_groups, channel_maps
from .head_weights import head_sensitivity, output_rms
from .plan import kept_count
from .reconstruct import bn_scale

# relative ridge of the Hessian used for selection (FINDINGS: 0.005 beat 0.1 with 64 images + flips)
SELECTION_RIDGE = 0.005
# candidates for the refit, chosen per consumer by 2-fold cross-validation over calibration images
RIDGES = (1e-3, 5e-3, 2e-2, 0.1, 0.3, 1.0)
HEAD_IMAGES = 16      # calibration images the head sensitivity is measured on (prune/head_weights.py)
Progress = Callable[[str], None]


def _silent(_: str) -> None:
    pass


# ----------------------------------------------------------------------------------------------------
# who reads a group's channels


@dataclasses.dataclass
class Consumer:
    """A conv reading channels of a group: columns[p] are the im2col columns (of its K) fed by position p."""
    conv: int
    columns: np.ndarray      # (P, s) int64


def consumers_of(net: Network, group: ChannelGroup, maps: list[list[Channel]] | None = None) -> list[Consumer]:
    """Convs (groups=1) whose input carries channels of `group`, with the columns each position feeds."""
    maps = channel_maps(net) if maps is None else maps
    where = {ch: p for p, position in enumerate(group.positions) for ch in position}
    found = []
    for layer in net.layers:
        if layer.type not in CONV_TYPES or layer.inputs[0] < 0:
            continue
        kk = layer.size * layer.size
        per_position: list[list[int]] = [[] for _ in group.positions]
        for j, ch in enumerate(maps[layer.inputs[0]]):
            if ch in where:
                per_position[where[ch]].extend(range(j * kk, (j + 1) * kk))
        if not any(per_position):
            continue
        if layer.groups != 1 or len({len(c) for c in per_position}) != 1:
            raise DncompressError(f"conv {layer.index} reads the channels of conv {group.convs[0]} unevenly; "
                                  "one-shot pruning cannot refit it", net.file)
        found.append(Consumer(layer.index, np.array(per_position, np.int64)))
    return found


# ----------------------------------------------------------------------------------------------------
# calibration statistics


def with_flips(images: np.ndarray) -> np.ndarray:
    """(N, C, H, W) -> (2N, C, H, W): each image followed by its horizontal mirror (twice the rows)."""
    out = np.empty((2 * len(images), *images.shape[1:]), np.float32)
    out[0::2], out[1::2] = images, images[..., ::-1]
    return out


def layer_inputs(net: Network, x: np.ndarray, convs: set[int]) -> dict[int, np.ndarray]:
    """The input tensor of each conv in `convs` on x (N, C, H, W); runs the network only as far as needed."""
    wanted = {net.layers[c].inputs[0] for c in convs}
    last = max(wanted)
    reader = {}
    for layer in net.layers[:last + 1]:
        for i in layer.inputs:
            reader[i] = layer.index
    outputs: dict[int, np.ndarray] = {}
    for layer in net.layers[:last + 1]:
        outputs[layer.index] = layer.forward([outputs[i] if i >= 0 else x for i in layer.inputs])
        for i in layer.inputs:
            if i >= 0 and reader.get(i) == layer.index and i not in wanted:
                del outputs[i]
    return {c: x if net.layers[c].inputs[0] < 0 else outputs[net.layers[c].inputs[0]] for c in convs}


def sampled_columns(layer, x: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """im2col of x (n, C, H, W) at output positions (n, r) -> (K, n*r) float32."""
    cols = im2col(x, layer.size, layer.stride, layer.pad)
    picked = np.take_along_axis(cols, positions[:, None, :], axis=2)       # (n, K, r)
    return np.ascontiguousarray(picked.transpose(1, 0, 2).reshape(cols.shape[1], -1))


@dataclasses.dataclass
class Calibration:
    """Calibration images (with flips) and, per consumer conv, the sampled output positions and the
    original network's BN-folded output there (no bias): the targets of every refit."""
    images: np.ndarray                     # (N, C, H, W), pairs (image, mirror) adjacent
    positions: dict[int, np.ndarray]       # conv -> (N, r)
    targets: dict[int, np.ndarray]         # conv -> (N*r, O) float32
    gram: dict[int, np.ndarray]            # conv -> (2, K+1, K+1) float64 of the original inputs, per fold
    chunk: int = 8

    def fold(self) -> np.ndarray:
        """Fold (0/1) of each row-image: an image and its mirror share a fold."""
        return (np.arange(len(self.images)) // 2) % 2


def _ones_row(cols: np.ndarray) -> np.ndarray:
    return np.concatenate([cols, np.ones((1, cols.shape[1]), np.float32)])


def calibrate(net: Network, images: np.ndarray, convs: set[int], max_rows: int = 24000, seed: int = 0,
              progress: Progress = _silent) -> Calibration:
    """Sample positions for every consumer conv, record the original outputs there and the Gram matrices
    of the original inputs. images: (N, C, H, W), already with flips."""
    rng = np.random.default_rng(seed)
    n = len(images)
    positions = {}
    for c in sorted(convs):
        _, ho, wo = net.layers[c].out_shape
        r = min(ho * wo, max(1, math.ceil(max_rows / n)))
        positions[c] = np.argsort(rng.random((n, ho * wo)), axis=1)[:, :r].astype(np.int64)
    calib = Calibration(images, positions, {}, {})
    parts: dict[int, list[np.ndarray]] = {c: [] for c in convs}
    for c in convs:
        k = net.layers[c].params["weights"][0].size
        calib.gram[c] = np.zeros((2, k + 1, k + 1))
    folds = calib.fold()
    for start in range(0, n, calib.chunk):
        progress(f"calibration statistics: images {start + 1}-{min(n, start + calib.chunk)} of {n}")
        x = images[start:start + calib.chunk]
        inputs = layer_inputs(net, x, convs)
        for c in convs:
            layer = net.layers[c]
            cols = sampled_columns(layer, inputs[c], positions[c][start:start + len(x)])
            w = layer.folded()[0].reshape(layer.filters, -1)
            parts[c].append((w @ cols).T.copy())
            full = _ones_row(cols)
            mine = np.repeat(folds[start:start + len(x)], positions[c].shape[1])
            for f in (0, 1):
                part = full[:, mine == f]
                calib.gram[c][f] += (part @ part.T).astype(np.float64)
    calib.targets = {c: np.concatenate(p) for c, p in parts.items()}
    return calib


@dataclasses.dataclass
class FoldStatistics:
    """Per fold f: gram[f] = X~ X~^T (K+1, K+1), cross[f] = Y X~^T (O, K+1), energy[f] = |Y|^2, with X~ the
    pruned network's input columns plus a ones row and Y the original network's folded output."""
    gram: np.ndarray        # (2, K+1, K+1)
    cross: np.ndarray       # (2, O, K+1)
    energy: np.ndarray      # (2,)


def pruned_statistics(net: Network, calib: Calibration, convs: list[int]) -> dict[int, FoldStatistics]:
    """Statistics of `convs`' inputs in (pruned) `net` against the original outputs, split in two folds."""
    stats = {}
    for c in convs:
        k, o = net.layers[c].params["weights"][0].size, net.layers[c].filters
        stats[c] = FoldStatistics(np.zeros((2, k + 1, k + 1)), np.zeros((2, o, k + 1)), np.zeros(2))
    folds = calib.fold()
    for start in range(0, len(calib.images), calib.chunk):
        x = calib.images[start:start + calib.chunk]
        inputs = layer_inputs(net, x, set(convs))
        for c in convs:
            pos = calib.positions[c]
            r = pos.shape[1]
            cols = _ones_row(sampled_columns(net.layers[c], inputs[c], pos[start:start + len(x)]))
            target = calib.targets[c][start * r:(start + len(x)) * r]
            for f in (0, 1):
                mine = np.repeat(folds[start:start + len(x)] == f, r)
                if not mine.any():
                    continue
                xc, yc = cols[:, mine], target[mine]
                stats[c].gram[f] += (xc @ xc.T).astype(np.float64)
                stats[c].cross[f] += (yc.T @ xc.T).astype(np.float64)
                stats[c].energy[f] += float(np.sum(np.square(yc, dtype=np.float64)))
    return stats


# ----------------------------------------------------------------------------------------------------
# OBS group removal


def regularized_inverse(gram: np.ndarray, ridge: float) -> np.ndarray:
    """(G + ridge * mean(diag) I)^-1 with no ridge on the bias (last) row."""
    k = len(gram) - 1
    h = gram.copy()
    h[np.arange(k), np.arange(k)] += ridge * max(float(np.mean(np.diag(gram)[:k])), 1e-12)
    return np.linalg.inv(h)


@dataclasses.dataclass
class ObsState:
    """One consumer during greedy removal: H^-1 (k, k) and weights (O, k) over the columns still present
    (the last one is the bias), where[j] = row of original column j in them (-1 once removed), the original
    columns of each position, and the output energy that normalizes its errors."""
    hinv: np.ndarray
    weights: np.ndarray
    columns: np.ndarray
    energy: float
    where: np.ndarray | None = None

    def __post_init__(self):
        if self.where is None:
            self.where = np.arange(len(self.hinv))

    def costs(self, alive: np.ndarray) -> np.ndarray:
        """Error increase of removing each alive position alone (P_alive,)."""
        cols = self.where[self.columns[alive]]                                # (P, s)
        blocks = self.hinv[cols[:, :, None], cols[:, None, :]]                # (P, s, s)
        w = self.weights[:, cols]                                             # (O, P, s)
        if cols.shape[1] == 1:
            return np.sum(w[:, :, 0] ** 2, axis=0) / np.maximum(blocks[:, 0, 0], 1e-30)
        inverse = np.linalg.inv(blocks)                                       # (P, s, s)
        return np.einsum("ops,pst,opt->p", w, inverse, w, optimize=True)

    def remove(self, positions: list[int]) -> float:
        """Remove positions together: optimal compensation of the other weights, Schur downdate of H^-1,
        then the removed rows and columns are dropped. Returns the exact error increase."""
        s = self.where[self.columns[positions].ravel()]
        inv_block = np.linalg.inv(self.hinv[np.ix_(s, s)])
        rows = self.hinv[s]                                                   # (|s|, k)
        ws = self.weights[:, s]
        increase = float(np.sum((ws @ inv_block) * ws))
        self.weights -= (ws @ inv_block) @ rows
        self.hinv -= rows.T @ (inv_block @ rows)
        keep = np.ones(len(self.hinv), bool)
        keep[s] = False
        self.hinv = self.hinv[np.ix_(keep, keep)]
        self.weights = self.weights[:, keep]
        new_index = np.cumsum(keep) - 1
        alive = self.where >= 0
        self.where[alive] = np.where(keep[self.where[alive]], new_index[self.where[alive]], -1)
        return increase


def greedy_removal(states: list[ObsState], count: int, batch: float = 1 / 16,
                   after_round: Callable[[int], None] | None = None) -> tuple[list[int], list[float]]:
    """Remove `count` positions, each round the max(1, batch * alive) with the least summed relative error
    increase over the consumers (batch=0: one at a time, exact greedy). Returns (positions in removal
    order, cumulative relative error after each; within a round the exact round total is spread evenly).
    after_round(removed so far) runs after every round (held-out measurements of the states)."""
    n = len(states[0].columns)
    alive = np.ones(n, bool)
    order: list[int] = []
    curve: list[float] = []
    total = 0.0
    while len(order) < min(count, n):
        idx = np.flatnonzero(alive)
        take = min(max(1, int(batch * len(idx))), min(count, n) - len(order))
        cost = sum(st.costs(idx) / max(st.energy, 1e-30) for st in states)
        chosen = [int(p) for p in idx[np.argsort(cost, kind="stable")[:take]]]
        increase = sum(st.remove(chosen) / max(st.energy, 1e-30) for st in states)
        for i, p in enumerate(chosen):
            curve.append(total + max(increase, 0.0) * (i + 1) / take)
        total += max(increase, 0.0)
        alive[chosen] = False
        order.extend(chosen)
        if after_round is not None:
            after_round(len(order))
    return order, curve


@dataclasses.dataclass
class HeldOut:
    """A consumer on the calibration fold the selection did not see: its Gram matrix G (K+1, K+1) of the
    original inputs, and the original folded weights W0 (o, K+1) (zero bias column) of a sample of its output
    rows; W0 X is the target there, so a weight change D costs tr(D G D^T)."""
    gram: np.ndarray
    rows: np.ndarray
    original: np.ndarray

    @property
    def energy(self) -> float:
        return float(np.sum((self.original @ self.gram) * self.original))

    def error(self, state: ObsState) -> float:
        """Held-out relative error of `state`'s removals: the smaller of its OBS-compensated weights and the
        plain slice with a mean (bias) correction — the two ends of the refit's ridge grid."""
        alive = state.where >= 0
        compensated = np.zeros_like(self.original)
        compensated[:, alive] = state.weights[self.rows][:, state.where[alive]]
        sliced = np.where(alive, self.original, 0.0)
        delta = sliced - self.original
        sliced[:, -1] -= (delta @ self.gram[:, -1]) / max(self.gram[-1, -1], 1e-30)
        errors = [float(np.sum((d @ self.gram) * d)) for d in (compensated - self.original, sliced - self.original)]
        return min(errors) / max(self.energy, 1e-30)


def heldout_curve(fit_states: list[ObsState], heldout: list[HeldOut], count: int, checkpoints: int = 16) -> np.ndarray:
    """Greedy removal on the fit fold's states; the summed held-out relative error of the consumers after
    1..count removals (measured about `checkpoints` times, linearly interpolated, made non-decreasing)."""
    step = max(1, count // checkpoints)
    measured = [(0, 0.0)]

    def measure(removed: int) -> None:
        if removed - measured[-1][0] >= step or removed == count:
            measured.append((removed, sum(h.error(st) for h, st in zip(heldout, fit_states))))
    greedy_removal(fit_states, count, after_round=measure)
    n, e = zip(*measured)
    return np.maximum.accumulate(np.interp(np.arange(1, count + 1), n, e))


# ----------------------------------------------------------------------------------------------------
# cost model and allocation


@dataclasses.dataclass
class CostModel:
    """Cost (channels, MACs or params) of the network as a function of each prunable group's kept
    positions: sum over convs of coefficient * in_channels * out_channels, both affine in the widths."""
    coeff: np.ndarray          # (L,) per conv
    out_fixed: np.ndarray      # (L,)
    out_per: np.ndarray        # (L, G) channels of conv l per kept position of group g
    in_fixed: np.ndarray
    in_per: np.ndarray         # (L, G)
    channel_weight: np.ndarray  # (G,) prunable channels per position (the 'channels' cost)
    kind: str

    def cost(self, keep: np.ndarray) -> float:
        if self.kind == "channels":
            return float(self.channel_weight @ keep)
        return float(np.sum(self.coeff * (self.in_fixed + self.in_per @ keep) * (self.out_fixed + self.out_per @ keep)))


def cost_model(net: Network, groups: list[ChannelGroup], kind: str) -> CostModel:
    maps = channel_maps(net)
    convs = [layer for layer in net.layers if layer.type in CONV_TYPES]
    gid = {ch: g for g, group in enumerate(groups) for pos in group.positions for ch in pos}
    costs = layer_costs(net)
    n, G = len(convs), len(groups)
    coeff, out_fixed, in_fixed = np.zeros(n), np.zeros(n), np.zeros(n)
    out_per, in_per = np.zeros((n, G)), np.zeros((n, G))
    for i, layer in enumerate(convs):
        cin = layer.in_shapes[0][0]
        total = costs[layer.index].macs if kind == "bflops" else math.prod(layer.param_shapes()["weights"])
        coeff[i] = total / (cin * layer.filters)
        for ch in maps[layer.index]:
            out_per[i, gid[ch]] += 1
        source = maps[layer.inputs[0]] if layer.inputs[0] >= 0 else [(-1, c) for c in range(cin)]
        for ch in source:
            if ch in gid:
                in_per[i, gid[ch]] += 1
            else:
                in_fixed[i] += 1
    sizes = np.array([len(g.positions) for g in groups], float)
    out_per /= sizes
    in_per /= sizes
    weight = np.array([len(g.positions[0]) if g.prunable else 0 for g in groups], float)
    return CostModel(coeff, out_fixed, out_per, in_fixed, in_per, weight, kind)


def allocate(curves: dict[int, list[float]], groups: list[ChannelGroup], model: CostModel, target: float,
             floors: dict[int, int]) -> dict[int, int]:
    """Kept positions per prunable group (index into groups): remove positions greedily, each time from the
    group whose next removal adds the least relative error per unit of cost saved, until cost <= target.
    curves[g][n] is the cumulative error after removing n+1 positions; floors[g] the fewest kept."""
    keep = np.array([len(g.positions) for g in groups], float)
    while model.cost(keep) > target:
        best, best_ratio = None, np.inf
        for g, curve in curves.items():
            removed = len(groups[g].positions) - int(keep[g])
            if keep[g] - 1 < floors[g] or removed >= len(curve):
                continue
            delta = curve[removed] - (curve[removed - 1] if removed else 0.0)
            trial = keep.copy()
            trial[g] -= 1
            saved = model.cost(keep) - model.cost(trial)
            ratio = max(delta, 0.0) / max(saved, 1e-30)
            if saved > 0 and ratio < best_ratio:
                best, best_ratio = g, ratio
        if best is None:
            break
        keep[best] -= 1
    return {g: int(keep[g]) for g in curves}


def is_sparsity_trained(net: Network, groups: list[ChannelGroup]) -> tuple[bool, float]:
    """(verdict, share of prunable BN channels with |gamma| < 1% of their layer's largest): network
    slimming's L1 penalty drives many gammas to ~0; pretrained weights have almost none there."""
    small = total = 0
    for group in groups:
        if not group.prunable:
            continue
        for conv in group.convs:
            layer = net.layers[conv]
            if not layer.batch_normalize:
                continue
            gamma = np.abs(layer.params["scales"])
            small += int(np.sum(gamma < 0.01 * gamma.max()))
            total += len(gamma)
    share = small / total if total else 0.0
    return share >= 0.2, share


# ----------------------------------------------------------------------------------------------------
# the refit


def fit(gram: np.ndarray, cross: np.ndarray, prior: np.ndarray, ridge: float) -> np.ndarray:
    """argmin_W |W X~ - Y|^2 + ridge' |W - prior|^2 (bias column unpenalized) -> (O, K+1)."""
    k = len(gram) - 1
    strength = ridge * max(float(np.mean(np.diag(gram)[:k])), 1e-12)
    h = gram.copy()
    h[np.arange(k), np.arange(k)] += strength
    rhs = cross.copy()
    rhs[:, :k] += strength * prior[:, :k]
    return np.linalg.solve(h, rhs.T).T


def fold_error(w: np.ndarray, gram: np.ndarray, cross: np.ndarray, energy: float) -> float:
    return float(np.sum((w @ gram) * w) - 2 * np.sum(w * cross) + energy)


def choose_ridge(st: FoldStatistics, kept: np.ndarray, prior: np.ndarray) -> tuple[float, float]:
    """(ridge with the least 2-fold held-out error, that relative error) over RIDGES, for columns kept."""
    cols = np.append(kept, st.gram.shape[1] - 1)
    g, c = st.gram[:, cols][:, :, cols], st.cross[:, :, cols]
    best = (RIDGES[0], np.inf)
    for ridge in RIDGES:
        err = sum(fold_error(fit(g[f], c[f], prior, ridge), g[1 - f], c[1 - f], st.energy[1 - f]) for f in (0, 1))
        err /= max(float(st.energy.sum()), 1e-30)
        if err < best[1]:
            best = (ridge, err)
    return best


def set_folded(layer, original, w: np.ndarray, rows: np.ndarray | None = None) -> None:
    """Give conv `layer` folded weights w (O, K+1) (last column: output offset vs the original's folded
    output without bias), keeping `original`'s BN scale: raw weights w / scale, offset into the BN mean.
    rows: which of `original`'s filters `layer` kept (default all)."""
    rows = np.arange(original.filters) if rows is None else rows
    scale = bn_scale(original)[rows]
    safe = np.abs(scale) > 1e-8
    raw = np.where(safe[:, None], w[:, :-1] / np.where(safe, scale, 1)[:, None],
                   layer.params["weights"].reshape(layer.filters, -1))
    update = {"weights": raw.reshape(layer.params["weights"].shape).astype(np.float32)}
    if layer.batch_normalize:
        shift = np.where(safe, w[:, -1] / np.where(safe, scale, 1), 0)
        update["rolling_mean"] = (original.params["rolling_mean"][rows] - shift).astype(np.float32)
    else:
        update["biases"] = (original.params["biases"][rows] + w[:, -1]).astype(np.float32)
    layer.set_params(**update)


def fold_statistics(cols: np.ndarray, target: np.ndarray, folds: np.ndarray) -> FoldStatistics:
    """cols (K+1, R) with the ones row, target (R, O), folds (R,) 0/1 -> FoldStatistics."""
    k, o = cols.shape[0], target.shape[1]
    st = FoldStatistics(np.zeros((2, k, k)), np.zeros((2, o, k)), np.zeros(2))
    for f in (0, 1):
        mine = folds == f
        xc, yc = cols[:, mine], target[mine]
        st.gram[f] = (xc @ xc.T).astype(np.float64)
        st.cross[f] = (yc.T @ xc.T).astype(np.float64)
        st.energy[f] = float(np.sum(np.square(yc, dtype=np.float64)))
    return st


def chunked_walk(net: Network, x: np.ndarray, chunk: int):
    """Like reconstruct.forward_in_order (yield each layer with its full-batch inputs before running it),
    but each layer runs `chunk` images at a time, so im2col scratch stays small."""
    last_reader = {i: layer.index for layer in net.layers for i in layer.inputs}
    outputs: dict[int, np.ndarray] = {}
    for layer in net.layers:
        xs = [outputs[i] if i >= 0 else x for i in layer.inputs]
        yield layer, xs
        outputs[layer.index] = np.concatenate([layer.forward([v[s:s + chunk] for v in xs])
                                               for s in range(0, len(x), chunk)])
        for i in layer.inputs:
            if last_reader.get(i) == layer.index:
                outputs.pop(i, None)


def refit_all(original: Network, pruned: Network, calib: Calibration, kept_outputs: dict[int, np.ndarray],
              progress: Progress = _silent) -> dict[int, tuple[float, float]]:
    """The final sweep: in network order, refit every conv of `pruned` that has targets (all convs that
    do not read the network input) to the original's output on the pruned network's own inputs, so that
    drift from earlier layers does not accumulate. One walk over all calibration images at once.
    kept_outputs[conv]: original filter indices each conv kept. Returns {conv: (ridge, held-out error)}."""
    folds = calib.fold()
    done = {}
    for layer, xs in chunked_walk(pruned, calib.images, calib.chunk):
        c = layer.index
        if layer.type not in CONV_TYPES or c not in calib.targets or layer.groups != 1:
            continue
        progress(f"final refit of conv {c}")
        pos = calib.positions[c]
        rows = kept_outputs[c]
        cols = _ones_row(np.concatenate([sampled_columns(layer, xs[0][s:s + calib.chunk], pos[s:s + calib.chunk])
                                         for s in range(0, len(pos), calib.chunk)], axis=1))
        target = calib.targets[c][:, rows]
        st = fold_statistics(cols, target, np.repeat(folds, pos.shape[1]))
        prior = _folded_with_bias_column(layer)
        kept_cols = np.arange(cols.shape[0] - 1)
        ridge, err = choose_ridge(st, kept_cols, prior)
        w = fit(st.gram.sum(0), st.cross.sum(0), prior, ridge)
        set_folded(layer, original.layers[c], w, rows)
        done[c] = (ridge, err)
    return done


# ----------------------------------------------------------------------------------------------------
# the workflow


@dataclasses.dataclass
class GroupStep:
    """What happened to one group: widths, chosen ridges and relative output errors of its consumers."""
    convs: list[int]
    positions: int
    kept: int
    predicted_error: float          # from the allocation curves (original network)
    refit_error: float              # 2-fold held-out relative error of its consumers after the refit
    ridges: dict[int, float]
    final_errors: dict[int, float] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class OneShotResult:
    network: Network
    keep_counts: dict[tuple[int, ...], int]
    steps: list[GroupStep]
    sparsity_trained: bool
    small_gamma_share: float
    calibration_rows: int


def selection_states(net: Network, consumers: list[Consumer], gram: Callable[[int], np.ndarray],
                     weights: Callable[[int], np.ndarray], energy: Callable[[int], float]) -> list[ObsState]:
    return [ObsState(regularized_inverse(gram(c.conv), SELECTION_RIDGE), weights(c.conv), c.columns,
                     energy(c.conv)) for c in consumers]


def error_curve(net: Network, calib: Calibration, consumers: list[Consumer], count: int, heldout: bool = False,
                held_rows: int = 64, seed: int = 0, weights: dict[int, float] | None = None) -> list[float]:
    """Relative output error of the consumers after removing 1..count positions of a group (greedy OBS on
    the original network). Held out: fitted on one fold, measured on the other, averaged over both ways;
    the measurement uses `held_rows` sampled output rows per consumer (its cost is rows x (K+1)^2).
    `weights[conv]`: each consumer's relative error counts that many times (head sensitivity)."""
    folds = calib.fold()

    def energy(c: int, f) -> float:
        rows = calib.positions[c].shape[1]
        mask = np.ones(len(folds) * rows, bool) if f is None else np.repeat(folds == f, rows)
        scale = weights[c] if weights else 1.0
        return float(np.sum(np.square(calib.targets[c][mask], dtype=np.float64))) / max(scale, 1e-12)

    def folded(c: int) -> np.ndarray:
        return _folded_with_bias_column(net.layers[c])
    if not heldout:
        states = selection_states(net, consumers, lambda c: calib.gram[c].sum(0), folded, lambda c: energy(c, None))
        return greedy_removal(states, count)[1]
    rng = np.random.default_rng(seed)
    curve = np.zeros(count)
    for f in (0, 1):
        states = selection_states(net, consumers, lambda c: calib.gram[c][f], folded, lambda c: energy(c, f))
        held = []
        for c in consumers:
            o = net.layers[c.conv].filters
            rows = np.sort(rng.choice(o, min(o, held_rows), replace=False))
            held.append(HeldOut(calib.gram[c.conv][1 - f], rows, folded(c.conv)[rows]))
        curve += heldout_curve(states, held, count) / 2
    return [float(v) for v in curve]


def _folded_with_bias_column(layer) -> np.ndarray:
    w = layer.folded()[0].reshape(layer.filters, -1).astype(np.float64)
    return np.concatenate([w, np.zeros((len(w), 1))], axis=1)


def prune_oneshot(net: Network, images: np.ndarray, target: float, kind: str = "channels",
                  min_keep: float = 0.1, multiple: int = 1, max_rows: int = 24000, flips: bool = True,
                  final_refit: bool = True, heldout: bool = False, allocation: str = "heads",
                  progress: Progress = _silent) -> OneShotResult:
    """Prune `net` (unchanged) to cost <= target ('channels': prunable channels kept; 'bflops': BFLOPs;
    'params': parameters) on calibration images (N, C, H, W). See the module docstring. heldout=True: the
    allocation's error curves held out between the two calibration folds (not the default: on voc765 it did
    not beat the in-sample curves, docs/pruning.md). allocation 'heads': each consumer's error weighted by
    what it costs at the heads (prune/head_weights.py); 'local': the consumers' own relative errors."""
    if allocation not in ("heads", "local"):
        raise DncompressError(f"allocation must be 'heads' or 'local', not {allocation!r}")
    originals = images
    images = with_flips(images) if flips else images
    groups = channel_groups(net)
    maps = channel_maps(net)
    prunable = [g for g, group in enumerate(groups) if group.prunable]
    if not prunable:
        raise DncompressError("the network has no prunable channel groups", net.file)
    model = cost_model(net, groups, kind)
    full = model.cost(np.array([len(g.positions) for g in groups], float))
    budget = target * 1e9 / 2 if kind == "bflops" else target
    if budget >= full:
        raise DncompressError("the target is not below the network's current cost; nothing to prune", net.file)
    consumers = {g: consumers_of(net, groups[g], maps) for g in prunable}
    all_consumers = {c.conv for cs in consumers.values() for c in cs}
    calib = calibrate(net, images, all_consumers, max_rows, progress=progress)
    sparse, share = is_sparsity_trained(net, groups)
    weights = None
    if allocation == "heads":
        progress(f"head sensitivity of {len(all_consumers)} convs")
        weights = head_sensitivity(net, originals[:HEAD_IMAGES], output_rms(calib.targets))

    # 1. error curves on the original network, then widths under the budget
    floors, curves = {}, {}
    for g in prunable:
        n = len(groups[g].positions)
        floors[g] = kept_count(groups[g], 0, min_keep, multiple)
        if not consumers[g]:
            curves[g] = [0.0] * (n - floors[g])
            continue
        progress(f"error curve of conv {groups[g].convs[0]} ({n} channels" + (", held out)" if heldout else ")"))
        curves[g] = error_curve(net, calib, consumers[g], n - floors[g], heldout, weights=weights)
    calib.gram.clear()      # the sequential pass gathers its own statistics on the pruned network
    alloc = allocate(curves, groups, model, budget, floors)
    for g in alloc:
        alloc[g] = kept_count(groups[g], alloc[g], min_keep, multiple)

    # 2. sequential pruning of the pruned network with selection and refit on its own inputs
    pruned = net.copy()
    steps = []
    kept_outputs = {layer.index: np.arange(layer.filters) for layer in net.layers if layer.type in CONV_TYPES}
    for g in sorted(prunable, key=lambda g: min(groups[g].convs)):
        group = groups[g]
        count = len(group.positions) - alloc[g]
        if count <= 0:
            continue
        progress(f"pruning conv {group.convs[0]}: {len(group.positions)} -> {alloc[g]} channels")
        current_groups = channel_groups(pruned)
        current = next(cg for cg in current_groups if cg.convs == group.convs)
        cons = consumers_of(pruned, current)
        removed: list[int]
        ridges, errors = {}, []
        if cons:
            stats = pruned_statistics(pruned, calib, [c.conv for c in cons])

            def solution(c: int) -> np.ndarray:
                s = stats[c]
                return fit(s.gram.sum(0), s.cross.sum(0), _folded_with_bias_column(pruned.layers[c]),
                           SELECTION_RIDGE)
            states = selection_states(pruned, cons, lambda c: stats[c].gram.sum(0), solution,
                                      lambda c: float(stats[c].energy.sum()))
            removed = greedy_removal(states, count)[0]
        else:
            removed = list(range(count))
        drop = {ch for p in removed for ch in current.positions[p]}
        keep = {ch for m in channel_maps(pruned) for ch in m if ch not in drop and ch[0] >= 0}
        sliced = prune_network(pruned, keep, with_compensation=False)
        for conv in group.convs:
            still = np.array([ch in keep for ch in channel_maps(pruned)[conv]])
            kept_outputs[conv] = kept_outputs[conv][still]
        for c in cons:
            s = stats[c.conv]
            gone = np.zeros(s.gram.shape[1] - 1, bool)
            gone[c.columns[removed].ravel()] = True
            kept_cols = np.flatnonzero(~gone)
            prior = _folded_with_bias_column(pruned.layers[c.conv])[:, np.append(kept_cols, -1)]
            ridge, err = choose_ridge(s, kept_cols, prior)
            cols = np.append(kept_cols, len(gone))
            w = fit(s.gram.sum(0)[np.ix_(cols, cols)], s.cross.sum(0)[:, cols], prior, ridge)
            set_folded(sliced.layers[c.conv], net.layers[c.conv], w)
            ridges[c.conv], errors = ridge, errors + [err]
        pruned = sliced
        steps.append(GroupStep(group.convs, len(group.positions), alloc[g],
                               curves[g][count - 1] if count - 1 < len(curves[g]) else float("nan"),
                               float(np.sum(errors)) if errors else 0.0, ridges))
    if final_refit:
        final = refit_all(net, pruned, calib, kept_outputs, progress)
        for step in steps:
            step.final_errors = {c: final[c][1] for c in step.ridges if c in final}
    counts = {tuple(groups[g].convs): alloc[g] for g in prunable}
    return OneShotResult(pruned, counts, steps, sparse, share, sum(p.size for p in calib.positions.values()))
