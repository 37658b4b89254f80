"""Zero-skipping convolution in numpy: the folded weights (O, R = C*k*k) kept as `group`-wide runs of
consecutive reduction-axis weights (Scalpel's SIMD groups; group 1 = unstructured), computed one group
column at a time so that only the groups some filter keeps are multiplied."""
from __future__ import annotations

import dataclasses

import numpy as np

from .conv import conv_columns


@dataclasses.dataclass
class GroupSparseWeights:
    """For each reduction-axis group column j that some filter keeps: the filters keeping it (F_j,) and
    their weights (F_j, group). Shape is the dense (O, C, k, k)."""

    shape: tuple[int, int, int, int]
    group: int
    columns: list[int]
    filters: list[np.ndarray]
    values: list[np.ndarray]

    @property
    def nonzero_groups(self) -> int:
        return sum(len(f) for f in self.filters)


def group_sparse(weights: np.ndarray, group: int) -> GroupSparseWeights:
    """weights (O, C, k, k) -> its kept groups (a group is kept when any of its weights is nonzero)."""
    out_c = weights.shape[0]
    rows = weights.reshape(out_c, -1)
    width = -(-rows.shape[1] // group) * group
    padded = np.zeros((out_c, width), np.float32)
    padded[:, :rows.shape[1]] = rows
    blocks = padded.reshape(out_c, -1, group)
    kept = (blocks != 0).any(axis=2)
    columns = [int(j) for j in np.flatnonzero(kept.any(axis=0))]
    filters = [np.flatnonzero(kept[:, j]) for j in columns]
    values = [np.ascontiguousarray(blocks[f, j]) for f, j in zip(filters, columns)]
    return GroupSparseWeights(tuple(weights.shape), group, columns, filters, values)


def conv2d_group_sparse(x: np.ndarray, sparse: GroupSparseWeights, bias: np.ndarray | None, stride: int,
                        pad: int) -> np.ndarray:
    """x: (N, C, H, W) -> (N, O, Ho, Wo) float32, equal to conv2d with the dense weights (groups=1).
    Per kept group column j: y[F_j] += W[F_j, j] (F_j, g) @ cols[j] (g, N*Ho*Wo)."""
    n = len(x)
    out_c, _, kernel, _ = sparse.shape
    cols, ho, wo = conv_columns(x, kernel, stride, pad)
    g = sparse.group
    depth = cols.shape[1]
    flat = np.zeros((-(-depth // g) * g, n * ho * wo), np.float32)
    flat[:depth].reshape(depth, n, ho * wo)[:] = cols.transpose(1, 0, 2)
    flat = flat.reshape(-1, g, n * ho * wo)
    y = np.zeros((out_c, n * ho * wo), np.float32)
    for j, rows, values in zip(sparse.columns, sparse.filters, sparse.values):
        y[rows] += values @ flat[j]
    y = y.reshape(out_c, n, ho, wo).transpose(1, 0, 2, 3)
    if bias is not None:
        y = y + bias.reshape(1, out_c, 1, 1)
    return np.ascontiguousarray(y)
