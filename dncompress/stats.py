"""Cost model from layer shapes alone (no weights needed): MACs, BFLOPs, parameters, activation memory
and an energy estimate after Yang, Chen & Sze (CVPR 2017). The access-count model is in docs/energy.md."""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from .layers.conv import Convolutional
from .layers.summax import SummaxConvolutional
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
    # an fp32 add or compare relative to an fp32 MAC: 0.9 pJ vs 3.7 + 0.9 pJ (Horowitz, ISSCC 2014, 45 nm)
    add: float = 0.2


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
    adds: int = 0
    compares: int = 0

    @property
    def bflops(self) -> float:
        """Darknet's figure, 2 * MACs / 1e9, plus additions and comparisons ([summax_convolutional])."""
        return (2 * self.macs + self.adds + self.compares) / 1e9

    @property
    def total_energy(self) -> float:
        return sum(self.energy.values())


def _elements(shape) -> int:
    return int(np.prod(shape))


def layer_energy(layer, macs: int, params: int, model: EnergyModel, adds: int = 0,
                 compares: int = 0) -> dict[str, float]:
    """Accesses per memory level times their cost, plus MACs, adds and compares (docs/energy.md)."""
    inputs = sum(_elements(s) for s in layer.in_shapes)
    outputs = _elements(layer.out_shape)
    if not layer.moves_data:
        return {"mac": 0.0, "register": 0.0, "array": 0.0, "buffer": 0.0, "dram": 0.0}
    if not (macs or adds):
        # pooling, upsampling, shortcut: every input read and every output written once
        return {"mac": 0.0, "register": 0.0, "array": 0.0, "buffer": 0.0, "dram": model.dram * (inputs + outputs)}
    passes = math.ceil(layer.filters / model.filters_per_pass)
    kernel = layer.size
    # an add + compare pair (one SAM tap of a max or a min) touches registers like a MAC
    return {
        "mac": macs + model.add * (adds + compares),
        "register": model.register * model.register_per_mac * (macs + (adds + compares) / 2),
        "array": model.array * kernel * (inputs + outputs),
        "buffer": model.buffer * (inputs * passes + params + outputs),
        "dram": model.dram * (inputs + params + outputs),
    }


def conv_macs(layer: Convolutional) -> int:
    """filters * (C / groups) * k * k per output pixel."""
    c_in = layer.in_shapes[0][0] // layer.groups
    return layer.filters * c_in * layer.size ** 2 * layer.out_shape[1] * layer.out_shape[2]


def summax_ops(layer: SummaxConvolutional) -> tuple[int, int, int]:
    """(MACs, adds, compares) of a [summax_convolutional]: per output, (C / groups) * k * k taps each add
    x + W+ and x + W- and compare into a running max and min, then max + min; BN, which cannot fold into
    W+/W-, is one multiply-add per output. Bias adds are not counted (as for convs)."""
    taps = layer.in_shapes[0][0] // layer.groups * layer.size ** 2
    outputs = _elements(layer.out_shape)
    return (outputs if layer.batch_normalize else 0), outputs * (2 * taps + 1), outputs * 2 * (taps - 1)


def layer_ops(layer) -> tuple[int, int, int]:
    """(MACs, adds, compares) of one image through `layer`; pooling compares are not counted."""
    if isinstance(layer, Convolutional):
        return conv_macs(layer), 0, 0
    if isinstance(layer, SummaxConvolutional):
        return summax_ops(layer)
    if hasattr(layer, "macs"):          # [connected], [local]
        return layer.macs(), 0, 0
    return 0, 0, 0


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


def layer_costs(net: Network, model: EnergyModel = EnergyModel(), skip_zeros: bool = False) -> list[LayerCost]:
    """With `skip_zeros`, a conv costs only its nonzero weights: the MACs and weight accesses a
    zero-skipping accelerator performs (Yang et al.'s accounting of pruned layers)."""
    costs = []
    for layer in net.layers:
        params = sum(_elements(s) for s in layer.param_shapes().values())
        macs, adds, compares = layer_ops(layer)
        if skip_zeros and isinstance(layer, Convolutional) and "weights" in layer.params:
            nonzero, skipped = zero_weights(layer)
            macs, params = macs - skipped, params - (layer.params["weights"].size - nonzero)
        costs.append(LayerCost(layer.index, layer.type, getattr(layer, "filters", None), getattr(layer, "size", None),
                               getattr(layer, "stride", None), layer.in_shapes[0], layer.out_shape, macs, params,
                               layer_energy(layer, macs, params, model, adds, compares),
                               _elements(layer.out_shape) * FLOAT_BYTES, adds, compares))
    return costs


def activation_memory(net: Network, batch: int = 1) -> tuple[int, int]:
    """(sum of every layer output, peak bytes alive at once) in float32. A tensor lives from its producer
    to its last reader (head outputs to the end), as in Network.forward; the input lives until layer 0."""
    sizes = [_elements(layer.out_shape) * FLOAT_BYTES * batch for layer in net.layers]
    last_use = net.last_use
    input_bytes = _elements(net.input_shape) * FLOAT_BYTES * batch
    peak = 0
    for i in range(len(net.layers)):
        live = sum(size for j, size in enumerate(sizes[:i + 1]) if last_use[j] >= i)
        peak = max(peak, live + (input_bytes if i == 0 else 0))
    return sum(sizes), peak


def summary(net: Network, model: EnergyModel = EnergyModel(), skip_zeros: bool = False) -> dict:
    costs = layer_costs(net, model, skip_zeros)
    total_act, peak = activation_memory(net)
    params = sum(c.params for c in costs)
    levels = {k: sum(c.energy[k] for c in costs) for k in ("mac", "register", "array", "buffer", "dram")}
    energy = sum(levels.values())
    return {
        "input": list(net.input_shape),
        "params": params,
        "size_mb": params * FLOAT_BYTES / 1e6,
        "macs": sum(c.macs for c in costs),
        "adds": sum(c.adds for c in costs),
        "compares": sum(c.compares for c in costs),
        "bflops": sum(c.bflops for c in costs),
        "activation_mb": total_act / 1e6,
        "peak_activation_mb": peak / 1e6,
        "energy": energy,
        "energy_share": {k: v / energy for k, v in levels.items()} if energy else {},
        "weight_sparsity": weight_sparsity(net),
        "layers": [dict(index=c.index, type=c.type, filters=c.filters, size=c.size, stride=c.stride,
                        input=list(c.in_shape), output=list(c.out_shape), bflops=c.bflops, macs=c.macs,
                        adds=c.adds, compares=c.compares, params=c.params,
                        activation_bytes=c.activation_bytes, energy=c.total_energy) for c in costs],
    }
