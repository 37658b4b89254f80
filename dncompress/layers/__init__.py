"""One registry of layer types; importing the modules registers them."""
from . import attention, classifier, conv, heads, local, recurrent, reorg, route, simple, summax  # noqa: F401  (registration)
from .base import LAYERS, Layer, NetInfo, Shape, register

HEAD_TYPES = ("yolo", "region", "gaussian_yolo", "detection")

__all__ = ["LAYERS", "Layer", "NetInfo", "Shape", "register", "HEAD_TYPES"]
