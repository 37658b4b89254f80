"""One registry of layer types; importing the modules registers them."""
from . import attention, classifier, conv, heads, local, recurrent, reorg, route, simple, summax  # noqa: F401  (registration)
from .base import LAYERS, Layer, NetInfo, Shape, register

# section names by capability (code tests `layer.is_head` / `layer.is_conv`; these are for messages)
HEAD_TYPES = tuple(sorted({cls.type for cls in LAYERS.values() if cls.is_head}))
CONV_TYPES = tuple(sorted({cls.type for cls in LAYERS.values() if cls.is_conv}))

__all__ = ["LAYERS", "Layer", "NetInfo", "Shape", "register", "HEAD_TYPES", "CONV_TYPES"]
