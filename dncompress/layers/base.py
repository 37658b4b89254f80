"""The layer registry: section name -> Layer class. A layer knows its input/output shapes, its
parameters in .weights order, and its forward pass."""
from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np

from ..cfg import Section

Shape = tuple[int, int, int]  # (C, H, W)

LAYERS: dict[str, type["Layer"]] = {}


def register(*names: str):
    """Class decorator adding a Layer class to the registry under each section name."""
    def add(cls):
        cls.type = names[0]
        for name in names:
            LAYERS[name] = cls
        return cls
    return add


@dataclasses.dataclass
class NetInfo:
    """What layers need from [net]: input size and channels."""

    width: int
    height: int
    channels: int


class Layer:
    """Base class. `inputs` are absolute indices of the layers read (-1 = the network input)."""

    type: ClassVar[str] = ""
    # cfg keys: implemented, read by Darknet for training only, and unsupported (layers/keys.py)
    keys: ClassVar[frozenset[str]] = frozenset()
    training_keys: ClassVar[frozenset[str]] = frozenset()
    unsupported_keys: ClassVar[dict[str, tuple[str, ...]]] = {}
    approximated_keys: ClassVar[dict[str, tuple[tuple[str, ...], str]]] = {}
    # Darknet's .weights order; empty for layers without parameters
    param_names: ClassVar[tuple[str, ...]] = ()
    # capabilities, read by the graph, the transforms and stats instead of testing section names:
    is_conv: ClassVar[bool] = False       # a dense/grouped conv with filters, weights (O, C/g, k, k), optional BN
    is_quantized: ClassVar[bool] = False  # fake-quantized weights/inputs ([quantize_convolutional])
    is_head: ClassVar[bool] = False       # a detection head: forward returns its (raw) input
    moves_data: ClassVar[bool] = True     # False: the output is the input itself or a view (costs no energy)

    def __init__(self, section: Section, index: int, shapes: list[Shape], net: NetInfo):
        self.section = section
        self.index = index
        self.inputs = [index - 1]
        self.in_shapes = [shapes[index - 1] if index > 0 else (net.channels, net.height, net.width)]
        self.params: dict[str, np.ndarray] = {}
        self.out_shape: Shape = self.in_shapes[0]

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """Shape of every tensor in .weights order."""
        return {}

    def workspace_elements(self) -> int:
        """Floats of scratch memory `forward` allocates besides its output (for memory estimates)."""
        return 0

    def set_params(self, **params: np.ndarray) -> None:
        """Replace parameters (layers caching derived arrays override this to drop them)."""
        self.params.update(params)

    def param_problem(self) -> tuple[str, str] | None:
        """(what is wrong, tensor name) when the parameters cannot give finite outputs, else None."""
        for name, value in self.params.items():
            bad = ~np.isfinite(value)
            if bad.any():
                return f"{int(bad.sum())} non-finite values (nan/inf)", name
        return None

    def forward(self, xs: list[np.ndarray]) -> np.ndarray:
        """xs: the outputs of `self.inputs`, each (N, C, H, W)."""
        raise NotImplementedError

    def error(self, message: str, key: str | None = None):
        return self.section.error(f"layer {self.index}: {message}", key)

    def resolve(self, offset: int, key: str) -> int:
        """A [route]/[shortcut] reference (negative = relative) as an absolute index of an earlier layer."""
        target = self.index + offset if offset < 0 else offset
        if not 0 <= target < self.index:
            raise self.error(f"refers to layer {offset} -> {target}, which is not an earlier layer "
                             f"(0..{self.index - 1})", key)
        return target


def positive(layer: Layer, key: str, value: int, limit: int = 1 << 16) -> int:
    """Reject sizes that are zero, negative or absurd, naming the key."""
    if not 0 < value <= limit:
        raise layer.error(f"{key}={value} must be between 1 and {limit}", key)
    return value
