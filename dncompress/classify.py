"""Image classification with Darknet classifier cfgs (darknet19, darknet53, resnet, ...): Darknet's
predict_classifier preprocessing and the top-k classes of the network's last layer."""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from .detect import darknet_resize, read_names
from .errors import DncompressError
from .network import Network


@dataclasses.dataclass
class Prediction:
    class_id: int
    name: str
    score: float

    def to_dict(self) -> dict:
        return {"class_id": self.class_id, "class": self.name, "score": round(self.score, 6)}


def resize_min_crop(img: np.ndarray, net_w: int, net_h: int) -> np.ndarray:
    """RGB (H, W, 3) -> (1, 3, net_h, net_w): shorter side scaled to net_w (Darknet's resize_min), then
    the centre net_w x net_h crop, as predict_classifier."""
    h, w = img.shape[:2]
    if w < h:
        new_w, new_h = net_w, max(1, h * net_w // w)
    else:
        new_w, new_h = max(1, w * net_w // h), net_w
    resized = darknet_resize(img, new_w, new_h)
    top, left = (new_h - net_h) // 2, (new_w - net_w) // 2
    canvas = np.zeros((net_h, net_w, img.shape[2]), np.float32)
    # a wide net on a tall image: the crop can be larger than the resized image on one side
    src = resized[max(top, 0):max(top, 0) + net_h, max(left, 0):max(left, 0) + net_w]
    canvas[max(-top, 0):max(-top, 0) + src.shape[0], max(-left, 0):max(-left, 0) + src.shape[1]] = src
    return np.ascontiguousarray(canvas.transpose(2, 0, 1)[None])


def class_count(net: Network) -> int:
    """Classes of a classifier: the values of its last layer (C*H*W); refuses detectors."""
    if net.heads:
        raise DncompressError(f"the cfg has [{net.heads[0].type}] heads; use `dncompress detect` for detectors",
                              net.file)
    return int(np.prod(net.layers[-1].out_shape))


def read_class_names(path: str | Path | None, classes: int) -> list[str]:
    """Names from a file (one a line, at least `classes`), else the class indices."""
    # not detect.read_names' COCO default: an 80-class classifier is not a COCO detector
    return read_names(path, classes) if path is not None else [str(i) for i in range(classes)]


def classify_image(forward: Callable[[np.ndarray], list[np.ndarray]], img: np.ndarray, net_w: int, net_h: int,
                   names: Sequence[str], top: int = 5) -> list[Prediction]:
    """The `top` highest-scoring classes of one RGB image (scores as the last layer gives them: softmax
    probabilities for cfgs ending in [softmax])."""
    scores = forward(resize_min_crop(img, net_w, net_h))[-1].reshape(-1)
    order = np.argsort(-scores, kind="stable")[:top]
    return [Prediction(int(i), names[i], float(scores[i])) for i in order]
