"""What pruning changed: per-layer channels and costs before/after, and the totals."""
from __future__ import annotations

from ..network import Network
from ..stats import layer_costs, summary
from .groups import channel_groups


def pruning_report(original: Network, pruned: Network) -> dict:
    before, after = summary(original), summary(pruned)
    layers = []
    for old, new, cost_old, cost_new in zip(original.layers, pruned.layers, layer_costs(original), layer_costs(pruned)):
        if old.is_conv:
            layers.append({"index": old.index, "filters": [old.filters, new.filters],
                           "params": [cost_old.params, cost_new.params], "bflops": [cost_old.bflops, cost_new.bflops]})
    prunable = {conv for g in channel_groups(original) if g.prunable for conv in g.convs}
    return {
        "layers": layers,
        "channels": [sum(row["filters"][i] for row in layers) for i in (0, 1)],
        "prunable_channels": [sum(row["filters"][i] for row in layers if row["index"] in prunable) for i in (0, 1)],
        "params": [before["params"], after["params"]],
        "bflops": [before["bflops"], after["bflops"]],
        "size_mb": [before["size_mb"], after["size_mb"]],
        "energy": [before["energy"], after["energy"]],
    }
