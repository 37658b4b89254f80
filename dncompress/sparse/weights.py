"""Weight pruning that keeps the dense layout: Scalpel's SIMD-aware groups (Yu et al., ISCA 2017) or
per-weight magnitude. A group is `group` consecutive weights of a filter along the reduction axis as
Darknet stores it ((c, ky, kx) order, the im2col row a SIMD dot product walks); unstructured pruning is the
same with groups of one weight."""
from __future__ import annotations

import dataclasses

import numpy as np

from ..engine.conv import conv2d
from ..errors import DncompressError
from ..graph import is_plain_conv
from ..layers.conv import Convolutional
from ..network import Network
from ..stats import zero_weights

PATTERNS = ("simd", "unstructured")
NORMS = {"l2": 2, "l1": 1}
SCOPES = ("layer", "global")


@dataclasses.dataclass(frozen=True)
class SparsifyConfig:
    pattern: str = "simd"
    ratio: float = 0.5         # fraction of the eligible groups (weights, for unstructured) zeroed
    group: int = 4             # SIMD width in weights; 1 for unstructured
    norm: str = "l2"
    scope: str = "layer"       # RATIO of every layer, or one threshold over all eligible layers
    skip_first_last: bool = False

    def __post_init__(self):
        if self.pattern not in PATTERNS:
            raise DncompressError(f"pattern {self.pattern} must be one of {', '.join(PATTERNS)}")
        if not 0 <= self.ratio < 1:
            raise DncompressError(f"--ratio {self.ratio} must be in [0, 1)")
        if self.group < 1:
            raise DncompressError(f"--group {self.group} must be at least 1")

    @property
    def group_size(self) -> int:
        return 1 if self.pattern == "unstructured" else self.group


def eligible_convs(net: Network, skip_first_last: bool) -> list:
    """Plain [convolutional] layers (quantized ones keep their grid); with skip_first_last, not the first conv
    nor the convs feeding a detection head."""
    convs = [layer for layer in net.layers if is_plain_conv(layer)]
    if not skip_first_last:
        return convs
    return [layer for layer in convs[1:] if not net.graph.feeds_head(layer.index)]


def group_norms(weights: np.ndarray, group: int, norm: str = "l2") -> np.ndarray:
    """weights (O, C, k, k) -> (O, ceil(C*k*k / group)) norm of every group (a row's last group may be
    shorter: it is zero-padded)."""
    rows = weights.reshape(len(weights), -1).astype(np.float64)
    padded = np.zeros((len(rows), -(-rows.shape[1] // group) * group))
    padded[:, :rows.shape[1]] = rows
    return np.linalg.norm(padded.reshape(len(rows), -1, group), ord=NORMS[norm], axis=2)


def expand_groups(keep: np.ndarray, group: int, shape: tuple[int, ...]) -> np.ndarray:
    """Group keep-mask (O, G) -> weight keep-mask of `shape` (O, C, k, k)."""
    row = int(np.prod(shape[1:]))
    return np.repeat(keep, group, axis=1)[:, :row].reshape(shape)


def plan_groups(net: Network, config: SparsifyConfig) -> dict[int, np.ndarray]:
    """Conv index -> (O, G) bool keep-mask: the lowest-norm groups of the BN-folded weights (what the layer
    outputs) zeroed, ratio per layer or over all eligible layers at once."""
    scores = {layer.index: group_norms(layer.folded()[0], config.group_size, config.norm)
              for layer in eligible_convs(net, config.skip_first_last)}
    if config.scope == "layer":
        return {index: lowest_removed(s, config.ratio) for index, s in scores.items()}
    if config.scope != "global":
        raise DncompressError(f"--scope {config.scope} must be layer or global")
    keep = lowest_removed(np.concatenate([s.ravel() for s in scores.values()]), config.ratio)
    splits = np.cumsum([s.size for s in scores.values()])[:-1]
    return {index: part.reshape(s.shape) for (index, s), part in zip(scores.items(), np.split(keep, splits))}


def lowest_removed(scores: np.ndarray, ratio: float) -> np.ndarray:
    """Keep-mask of `scores`' shape with the round(ratio * size) lowest scores removed (ties broken arbitrarily)."""
    keep = np.ones(scores.size, bool)
    removed = round(ratio * scores.size)
    if removed:
        keep[np.argpartition(scores.ravel(), removed - 1)[:removed]] = False
    return keep.reshape(scores.shape)


def sparsify_network(net: Network, config: SparsifyConfig) -> tuple[Network, dict[int, np.ndarray]]:
    """A copy of `net` with the planned groups' raw weights set to +0 (BN parameters untouched, so the folded
    weights are zero there too), and the group keep-masks; `net` is left unchanged."""
    keep = plan_groups(net, config)
    sparse = net.copy()
    for index, mask in keep.items():
        layer = sparse.layers[index]
        weights = layer.params["weights"]
        layer.set_params(weights=np.where(expand_groups(mask, config.group_size, weights.shape), weights,
                                          np.float32(0)))
    return sparse, keep


def correct_bias(original: Network, sparse: Network, calib: np.ndarray) -> list[int]:
    """Remove each pruned conv's mean output shift on calibration images (N, C, H, W), as quantize
    --bias-correction does: the folded bias moves by -E[conv(x, W_sparse - W)] per filter (BN convs through
    their running mean), x being the original network's input to the layer (on coco12 this beats matching
    means layer after layer through the sparse network). Returns the convs corrected."""
    changed = [new.index for old, new in zip(original.layers, sparse.layers) if is_plain_conv(new)
               and not np.array_equal(old.params["weights"], new.params["weights"])]
    wanted = {original.layers[i].inputs[0] for i in changed} - {-1}
    inputs = dict(zip(sorted(wanted), original.forward(calib, keep=wanted)))
    inputs[-1] = calib
    for index in changed:
        old, new = original.layers[index], sparse.layers[index]
        removed = new.folded()[0] - old.folded()[0]
        shift = conv2d(inputs[old.inputs[0]], removed, None, old.stride, old.pad, old.groups).mean(axis=(0, 2, 3))
        p = new.params
        if new.batch_normalize:
            scale = new.output_affine()[0]
            moved = np.divide(shift, scale, out=np.zeros_like(scale), where=scale != 0)
            new.set_params(rolling_mean=(p["rolling_mean"] + moved).astype(np.float32))
        else:
            new.set_params(biases=(p["biases"] - shift).astype(np.float32))
    return changed


def weight_sparsity_report(net: Network, sparse: Network) -> dict:
    """Per conv: weights, nonzero before/after, MACs and the MACs a zero-skipping engine skips; and totals."""
    layers = []
    for old, new in zip(net.layers, sparse.layers):
        if isinstance(new, Convolutional):
            (before, _), (after, skipped) = zero_weights(old), zero_weights(new)
            size = new.params["weights"].size
            layers.append({"index": old.index, "weights": size, "nonzero": [before, after],
                           "macs": size * new.out_shape[1] * new.out_shape[2], "skipped_macs": skipped})
    total = {key: sum(row[key] for row in layers) for key in ("weights", "macs", "skipped_macs")}
    total["nonzero"] = [sum(row["nonzero"][i] for row in layers) for i in (0, 1)]
    return {"layers": layers, **total}
