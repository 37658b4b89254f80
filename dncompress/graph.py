"""The static layer graph of a cfg. Darknet names every input by layer index, so the graph is read off the
layers, not traced: who reads each output, when an output is needed for the last time, which layers feed
the heads. `Network` builds one (`net.graph`); stats, reparam, the transforms and quantization read it.
Layers are classified by their declared capabilities (`Layer.is_conv`, `is_quantized`, `is_head`), not by
section names."""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from .layers import Layer


@dataclasses.dataclass(frozen=True)
class Graph:
    """readers[i]: the layers reading layer i's output, once per reference, in order; last_use[i]: the last
    of them (len(layers) for the outputs `forward` returns: they are read after the last layer);
    outputs: those returned layers (every head, else the last layer); head_inputs: per head, in order, the
    layer it reads."""

    readers: list[list[int]]
    last_use: list[int]
    outputs: list[int]
    head_inputs: list[int]

    @classmethod
    def of(cls, layers: Sequence[Layer]) -> "Graph":
        readers: list[list[int]] = [[] for _ in layers]
        for layer in layers:
            for source in layer.inputs:
                if source >= 0:
                    readers[source].append(layer.index)
        heads = [layer for layer in layers if layer.is_head]
        outputs = [h.index for h in heads] or [len(layers) - 1]
        last_use = [max([i, *read]) for i, read in enumerate(readers)]
        for index in outputs:
            last_use[index] = len(layers)
        return cls(readers, last_use, outputs, [h.inputs[0] for h in heads])

    def feeds_head(self, index: int) -> bool:
        """Whether layer `index`'s output goes straight into a head."""
        return index in self.head_inputs


def convs(layers: Sequence[Layer], quantized: bool = True) -> list[Layer]:
    """The conv layers ([convolutional], [quantize_convolutional] unless `quantized` is False), in order."""
    return [layer for layer in layers if layer.is_conv and (quantized or not layer.is_quantized)]


def is_plain_conv(layer: Layer) -> bool:
    """A float [convolutional] (not fake-quantized): what quantization, sparsity and reparam rewrite."""
    return layer.is_conv and not layer.is_quantized


def conv_types() -> tuple[str, ...]:
    """Section names of the conv layer classes (for messages and cfg rewriting)."""
    from .layers import LAYERS
    return tuple(sorted({cls.type for cls in LAYERS.values() if cls.is_conv}))
