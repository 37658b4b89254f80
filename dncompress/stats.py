"""Per-layer cost table (MACs, BFLOPs, params, activations), peak live activation memory and the
Yang/Chen/Sze (CVPR 2017) energy estimate; all from shapes alone, no weights needed (docs/energy.md)."""
from __future__ import annotations

import dataclasses

import numpy as np

from .layers import HEAD_TYPES, Layer
from .network import Network

BYTES_PER_VALUE = 4  # float32
# normalized energy per access, relative to one MAC (Yang et al. 2017, Eyeriss numbers)
ACCESS_COST = {"dram": 200.0, "buffer": 6.0, "array": 2.0, "rf": 1.0}
MAC_COST = 1.0


@dataclasses.dataclass
class LayerCost:
    """Cost of one layer for one image; shapes are (C, H, W)."""

    index: int
    type: str
    filters: int
    size: int
    stride: int
    in_shape: tuple[int, int, int]
    out_shape: tuple[int, int, int]
    macs: int
    params: int
    activation_bytes: int
    accesses: dict[str, float]

    @property
    def bflops(self) -> float:
        return 2 * self.macs / 1e9

    @property
    def energy(self) -> float:
        return self.macs * MAC_COST + sum(self.accesses[k] * c for k, c in ACCESS_COST.items())


def conv_macs(layer: Layer) -> int:
    c, _, _ = layer.in_shapes[0]
    o, ho, wo = layer.out_shape
    return o * ho * wo * (c // layer.groups) * layer.size * layer.size


def conv_accesses(layer: Layer, weights: int) -> dict[str, float]:
    """Accesses per memory level for a row-stationary array (docs/energy.md states the reuse)."""
    macs = conv_macs(layer)
    k, s = layer.size, layer.stride
    out_w = layer.out_shape[2]
    row_reuse = max(1.0, k / s)  # an input value's uses along one kernel row
    inputs, outputs = int(np.prod(layer.in_shapes[0])), int(np.prod(layer.out_shape))
    return {"dram": weights + inputs + outputs,
            "buffer": weights + macs / row_reuse ** 2 + 2 * macs / k ** 2,
            "array": macs / out_w + macs / row_reuse + 2 * macs / k,
            "rf": 4.0 * macs}


def moves_only(layer: Layer) -> dict[str, float]:
    """Layers without MACs read their inputs from and write their output to DRAM once; pass-through
    layers move nothing."""
    if layer.type in HEAD_TYPES or layer.type == "dropout":
        moved = 0
    else:
        moved = sum(int(np.prod(s)) for s in layer.in_shapes) + int(np.prod(layer.out_shape))
    return {"dram": float(moved), "buffer": 0.0, "array": 0.0, "rf": 0.0}


def layer_costs(net: Network) -> list[LayerCost]:
    """One LayerCost per layer, in cfg order."""
    costs = []
    for layer in net.layers:
        params = sum(int(np.prod(s)) for s in layer.param_shapes().values())
        is_conv = "weights" in layer.param_shapes()
        weights = int(np.prod(layer.param_shapes()["weights"])) if is_conv else 0
        costs.append(LayerCost(
            layer.index, layer.type, getattr(layer, "filters", 0) if is_conv else layer.out_shape[0],
            getattr(layer, "size", 0), getattr(layer, "stride", 0), layer.in_shapes[0], layer.out_shape,
            conv_macs(layer) if is_conv else 0, params,
            int(np.prod(layer.out_shape)) * BYTES_PER_VALUE,
            conv_accesses(layer, weights) if is_conv else moves_only(layer)))
    return costs


def is_alias(layer: Layer) -> bool:
    """Outputs that are the input itself or a view of it in the engine (heads, dropout, 1-input route)."""
    return layer.type in HEAD_TYPES or layer.type == "dropout" or \
        (layer.type == "route" and len(layer.inputs) == 1)


def live_bytes(net: Network) -> list[int]:
    """Activation bytes alive while each layer runs (batch 1): a buffer lives from its producer until
    its last reader (heads until the end); aliases share their source's buffer."""
    owner: dict[int, int] = {-1: -1}
    size = {-1: int(np.prod(net.input_shape)) * BYTES_PER_VALUE}
    last = {-1: -1}
    end = len(net.layers)
    for layer in net.layers:
        i = layer.index
        owner[i] = owner[layer.inputs[0]] if is_alias(layer) else i
        if owner[i] == i:
            size[i] = int(np.prod(layer.out_shape)) * BYTES_PER_VALUE
        last[owner[i]] = max(last.get(owner[i], i), end if layer.type in HEAD_TYPES else i)
        for source in layer.inputs:
            last[owner[source]] = max(last[owner[source]], i)
    return [sum(size[b] for b in size if b <= t <= last[b]) for t in range(end)]


def summary(net: Network, costs: list[LayerCost] | None = None) -> dict:
    """Totals: params, model size, MACs, BFLOPs, peak activation memory, energy by level."""
    costs = costs if costs is not None else layer_costs(net)
    macs = sum(c.macs for c in costs)
    params = sum(c.params for c in costs)
    energy = {"mac": macs * MAC_COST}
    for level, cost in ACCESS_COST.items():
        energy[level] = sum(c.accesses[level] for c in costs) * cost
    total = sum(energy.values())
    live = live_bytes(net)
    return {"params": params, "model_mb": params * BYTES_PER_VALUE / 1e6, "macs": macs,
            "bflops": 2 * macs / 1e9, "peak_activation_bytes": max(live),
            "peak_activation_layer": int(np.argmax(live)),
            "energy": {"total": total, "by_level": energy,
                       "share": {k: v / total for k, v in energy.items()}}}


def format_table(costs: list[LayerCost], totals: dict) -> str:
    """Darknet-style load printout plus a params column, then the totals."""
    lines = ["layer    type           filters  size/strd     input               output          BFLOPs"
             "     params"]
    for c in costs:
        kernel = f"{c.size:>2} x{c.size:>2}/{c.stride:>2}" if c.size else " " * 9
        (ci, hi, wi), (co, ho, wo) = c.in_shape, c.out_shape
        lines.append(f"{c.index:>5}  {c.type:<14} {c.filters:>6}  {kernel}  {wi:>4} x{hi:>4} x{ci:>5} -> "
                     f"{wo:>4} x{ho:>4} x{co:>5}  {c.bflops:7.3f}  {c.params:>9,}")
    e = totals["energy"]
    shares = ", ".join(f"{k} {v:.1%}" for k, v in e["share"].items())
    lines += [f"params {totals['params']:,} ({totals['model_mb']:.3f} MB float32)",
              f"BFLOPs {totals['bflops']:.3f} ({totals['macs']:,} MACs)",
              f"peak activation memory {totals['peak_activation_bytes'] / 1e6:.3f} MB "
              f"(while layer {totals['peak_activation_layer']} runs, batch 1, float32)",
              f"energy {e['total']:.4g} x MAC ({shares})"]
    return "\n".join(lines)
