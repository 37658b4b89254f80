"""Cost model from layer shapes alone (no weights needed): MACs, BFLOPs, parameters, activation memory
and an energy estimate after Yang, Chen & Sze (CVPR 2017). The access-count model is in docs/energy.md."""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from .layers.conv import Convolutional
from .network import Network

FLOAT_BYTES = 4


@dataclasses.dataclass(frozen=True)
class EnergyModel:
    """Normalized energy per access (a MAC = 1) and the array geometry that sets reuse (Eyeriss-like)."""

    dram: float = 200.0
    buffer: float = 6.0
    array: float = 2.0
    register: float = 1.0
    filters_per_pass: int = 16      # output channels the array computes concurrently
    register_per_mac: int = 3       # weight read, input read, partial-sum read-modify-write


@dataclasses.dataclass
class LayerCost:
    index: int
    type: str
    filters: int | None
    size: int | None
    stride: int | None
    in_shape: tuple[int, int, int]
    out_shape: tuple[int, int, int]
    macs: int
    params: int
    energy: dict[str, float]
    activation_bytes: int = 0  # this layer's output, float32, batch 1

    @property
    def bflops(self) -> float:
        """Darknet's figure: 2 * MACs / 1e9."""
        return 2 * self.macs / 1e9

    @property
    def total_energy(self) -> float:
        return sum(self.energy.values())


def _elements(shape) -> int:
    return int(np.prod(shape))


def layer_energy(layer, macs: int, params: int, model: EnergyModel) -> dict[str, float]:
    """Accesses per memory level times their cost, plus MACs (docs/energy.md)."""
    inputs = sum(_elements(s) for s in layer.in_shapes)
    outputs = _elements(layer.out_shape)
    if layer.type in ("route", "dropout", "yolo", "region"):
        return {"mac": 0.0, "register": 0.0, "array": 0.0, "buffer": 0.0, "dram": 0.0}
    if not macs:
        # pooling, upsampling, shortcut: every input read and every output written once
        return {"mac": 0.0, "register": 0.0, "array": 0.0, "buffer": 0.0, "dram": model.dram * (inputs + outputs)}
    passes = math.ceil(layer.filters / model.filters_per_pass)
    kernel = layer.size
    return {
        "mac": float(macs),
        "register": model.register * model.register_per_mac * macs,
        "array": model.array * kernel * (inputs + outputs),
        "buffer": model.buffer * (inputs * passes + params + outputs),
        "dram": model.dram * (inputs + params + outputs),
    }


def conv_macs(layer: Convolutional) -> int:
    """filters * (C / groups) * k * k per output pixel."""
    c_in = layer.in_shapes[0][0] // layer.groups
    return layer.filters * c_in * layer.size ** 2 * layer.out_shape[1] * layer.out_shape[2]


def zero_weights(layer: Convolutional) -> tuple[int, int]:
    """(nonzero weights, MACs a zero-skipping engine skips: each zero weight once per output pixel)."""
    weights = layer.params["weights"]
    nonzero = int(np.count_nonzero(weights))
    return nonzero, (weights.size - nonzero) * layer.out_shape[1] * layer.out_shape[2]


def weight_sparsity(net: Network) -> dict | None:
    """Conv weights, nonzero weights and the MACs a zero-skipping engine skips (None without weights)."""
    convs = [layer for layer in net.layers if isinstance(layer, Convolutional)]
    if not convs or "weights" not in convs[0].params:
        return None
    counts = [zero_weights(layer) for layer in convs]
    return {"conv_weights": sum(layer.params["weights"].size for layer in convs),
            "nonzero_weights": sum(c[0] for c in counts), "skipped_macs": sum(c[1] for c in counts)}


def layer_costs(net: Network, model: EnergyModel = EnergyModel()) -> list[LayerCost]:
    costs = []
    for layer in net.layers:
        params = sum(_elements(s) for s in layer.param_shapes().values())
        macs = conv_macs(layer) if isinstance(layer, Convolutional) else 0
        costs.append(LayerCost(layer.index, layer.type, getattr(layer, "filters", None), getattr(layer, "size", None),
                               getattr(layer, "stride", None), layer.in_shapes[0], layer.out_shape, macs, params,
                               layer_energy(layer, macs, params, model),
                               _elements(layer.out_shape) * FLOAT_BYTES))
    return costs


def activation_memory(net: Network, batch: int = 1) -> tuple[int, int]:
    """(sum of every layer output, peak bytes alive at once) in float32. A tensor lives from its producer
    to its last reader (head outputs to the end), as in Network.forward; the input lives until layer 0."""
    sizes = [_elements(layer.out_shape) * FLOAT_BYTES * batch for layer in net.layers]
    last_use = net._last_use
    input_bytes = _elements(net.input_shape) * FLOAT_BYTES * batch
    peak = 0
    for i in range(len(net.layers)):
        live = sum(size for j, size in enumerate(sizes[:i + 1]) if last_use[j] >= i)
        peak = max(peak, live + (input_bytes if i == 0 else 0))
    return sum(sizes), peak


def summary(net: Network, model: EnergyModel = EnergyModel()) -> dict:
    costs = layer_costs(net, model)
    total_act, peak = activation_memory(net)
    params = sum(c.params for c in costs)
    levels = {k: sum(c.energy[k] for c in costs) for k in ("mac", "register", "array", "buffer", "dram")}
    energy = sum(levels.values())
    return {
        "input": list(net.input_shape),
        "params": params,
        "size_mb": params * FLOAT_BYTES / 1e6,
        "macs": sum(c.macs for c in costs),
        "bflops": sum(c.bflops for c in costs),
        "activation_mb": total_act / 1e6,
        "peak_activation_mb": peak / 1e6,
        "energy": energy,
        "energy_share": {k: v / energy for k, v in levels.items()} if energy else {},
        "weight_sparsity": weight_sparsity(net),
        "layers": [dict(index=c.index, type=c.type, filters=c.filters, size=c.size, stride=c.stride,
                        input=list(c.in_shape), output=list(c.out_shape), bflops=c.bflops, params=c.params,
                        activation_bytes=c.activation_bytes, energy=c.total_energy) for c in costs],
    }
