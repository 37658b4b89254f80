"""A forward pass whose plain convolutions run the zero-skipping group kernel (engine/sparse_conv.py), for
speed measurements against the dense engine; everything else is the layer's own forward."""
from __future__ import annotations

import numpy as np

from ..engine.activations import ACTIVATIONS
from ..engine.sparse_conv import conv2d_group_sparse, group_sparse
from ..graph import is_plain_conv
from ..layers import Layer
from ..network import Network


class SparseEngine:
    """Kernels built once from the BN-folded weights of every [convolutional] with groups=1."""

    def __init__(self, net: Network, group: int):
        self.net = net
        self.kernels = {layer.index: group_sparse(layer.folded()[0], group) for layer in net.layers
                        if is_plain_conv(layer) and layer.groups == 1}

    def run(self, layer: Layer, xs: list[np.ndarray]) -> np.ndarray:
        """Network.forward's `run`: one layer, sparse where a kernel exists."""
        kernel = self.kernels.get(layer.index)
        if kernel is None:
            return layer.forward(xs)
        y = conv2d_group_sparse(xs[0], kernel, layer.folded()[1], layer.stride, layer.pad)
        return layer.mask(ACTIVATIONS[layer.activation](y))

    def forward(self, x: np.ndarray) -> list[np.ndarray]:
        return self.net.forward(x, run=self.run)
