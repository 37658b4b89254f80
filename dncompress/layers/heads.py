"""Detection heads [yolo] and [region]. Their forward passes the raw conv output through; decoding
into boxes lives in detect.py so the engine, ONNX and OpenCV comparisons all see the same tensors."""
from __future__ import annotations

import numpy as np

from .base import Layer, register, positive


def _anchors(layer: Layer) -> np.ndarray:
    values = layer.section.get_floats("anchors", [])
    if len(values) % 2 or not values:
        raise layer.error(f"anchors= needs an even, non-zero count of numbers, got {len(values)}", "anchors")
    return np.array(values, dtype=np.float32).reshape(-1, 2)


def _darknet_filled_anchors(layer: Layer) -> np.ndarray | None:
    """Darknet's parse_yolo reads anchors into num*2 values pre-set to 0.5, one per comma-separated field
    (whitespace removed: `61,45    61,45` reads 61, 4561, 45). When num= asks for more values than given,
    the rest stay 0.5: done as Darknet does, with a warning (a missing comma, most likely). None when
    the anchors are complete (or num= is absent: the count check of `_anchors` applies)."""
    values = layer.section.get_floats("anchors", [])
    if "num" not in layer.section.options or not values:
        return None
    total = layer.section.get_int("num")
    if not len(values) < 2 * total <= 2 * 4096:
        return None
    where = ":".join(p for p in (layer.section.file, layer.section.where("anchors")) if p)
    layer.section.warnings.append(f"{where}: anchors= gives {len(values)} numbers for num={total} ({2 * total} "
                                  "needed; a missing comma?); Darknet fills the rest with 0.5 and so does dncompress")
    return np.array(values + [0.5] * (2 * total - len(values)), dtype=np.float32).reshape(-1, 2)


def _masked_anchors(layer: Layer) -> tuple[np.ndarray, list[int]]:
    """All anchors of a [yolo]-style head and its mask= (default: every anchor of num=), checked."""
    all_anchors = _darknet_filled_anchors(layer)
    all_anchors = _anchors(layer) if all_anchors is None else all_anchors
    if "mask" in layer.section.options:
        mask = layer.section.get_ints("mask")
    else:
        total = layer.section.get_int("num", len(all_anchors))
        if not 0 < total <= len(all_anchors):
            raise layer.error(f"num={total} without mask= needs 1 to {len(all_anchors)} (the anchors given)",
                              "num")
        mask = list(range(total))
    if any(not 0 <= m < len(all_anchors) for m in mask):
        raise layer.error(f"mask {mask} refers past the {len(all_anchors)} anchors", "mask")
    return all_anchors, mask


@register("yolo")
class Yolo(Layer):
    is_head, moves_data = True, False
    keys = frozenset({"classes", "anchors", "num", "mask", "ignore_thresh", "scale_x_y", "new_coords"})
    training_keys = frozenset({
        "jitter", "truth_thresh", "random", "iou_normalizer", "cls_normalizer", "obj_normalizer", "iou_loss",
        "iou_thresh_kind", "iou_thresh", "max_delta", "counters_per_class", "label_smooth_eps", "resize",
        "focal_loss", "objectness_smooth", "uc_normalizer", "delta_normalizer", "beta1", "beta_nms",
        "track_history_size", "sim_thresh", "dets_for_track", "dets_for_show", "track_ciou_norm",
        "embedding_layer", "show_details", "max"})
    unsupported_keys = {"map": ()}  # remaps class ids
    approximated_keys = {"nms_kind": (("greedynms", "default"), "detect and eval use greedy IoU NMS")}

    def __init__(self, section, index, shapes, net):
        super().__init__(section, index, shapes, net)
        s = section
        self.classes = positive(self, "classes", s.get_int("classes", 20), 100000)
        all_anchors, self.mask = _masked_anchors(self)
        self.anchors = all_anchors[self.mask]
        self.all_anchors = all_anchors
        self.ignore_thresh = s.get_float("ignore_thresh", 0.5)
        self.scale_x_y = s.get_float("scale_x_y", 1.0)
        # scaled-YOLOv4 / YOLOv7: the conv before applies logistic to every channel, the head only scales
        # x, y by scale_x_y and decodes w, h as (2 t)^2 * anchor (yolo_layer.c get_yolo_box)
        self.new_coords = bool(s.get_int("new_coords", 0))
        self.net_size = (net.width, net.height)
        self.net_channels = net.channels  # images are read with this many channels (detect, eval)
        c = self.in_shapes[0][0]
        expected = len(self.mask) * (5 + self.classes)
        if c != expected:
            raise self.error(f"input has {c} channels but {len(self.mask)} anchors x (5 + {self.classes} "
                             f"classes) = {expected}; fix filters= of the conv before it")

    def forward(self, xs):
        return xs[0]


@register("region")
class Region(Layer):
    """YOLOv2 head: anchors in grid units, softmax over classes."""

    is_head, moves_data = True, False
    # tree= (YOLO9000's class hierarchy) and map= (class-id remapping) change only the decode, which refuses
    # them (detect.decode_region); the raw output, stats and export are unaffected
    keys = frozenset({"classes", "coords", "num", "anchors", "softmax", "tree", "map"})
    training_keys = frozenset({"jitter", "rescore", "thresh", "bias_match", "absolute", "random", "object_scale",
                               "noobject_scale", "class_scale", "coord_scale", "max", "log", "sqrt", "focal_loss"})

    def __init__(self, section, index, shapes, net):
        super().__init__(section, index, shapes, net)
        s = section
        self.classes = positive(self, "classes", s.get_int("classes", 20), 100000)
        self.coords = s.get_int("coords", 4)
        self.num = positive(self, "num", s.get_int("num", 1), 1000)
        self.anchors = _anchors(self)[: self.num]
        if len(self.anchors) < self.num:
            raise self.error(f"num={self.num} but anchors= has only {len(self.anchors)} pairs", "anchors")
        self.softmax = bool(s.get_int("softmax", 0))
        # YOLO9000's hierarchical softmax: the raw output (stats, export, prune) is unaffected; decoding
        # it into classes is not supported (detect.decode_region refuses)
        self.tree = s.get_str("tree", "")
        self.class_map = s.get_str("map", "")
        self.net_size = (net.width, net.height)
        self.net_channels = net.channels  # images are read with this many channels (detect, eval)
        if self.coords != 4:
            raise self.error("only coords=4 is supported", "coords")
        c = self.in_shapes[0][0]
        expected = self.num * (5 + self.classes)
        if c != expected:
            raise self.error(f"input has {c} channels but num={self.num} x (5 + {self.classes} classes) = "
                             f"{expected}; fix filters= of the conv before it")

    def forward(self, xs):
        return xs[0]


@register("gaussian_yolo")
class GaussianYolo(Layer):
    """Gaussian YOLOv3 head: per anchor x, y, w, h each as (mean, uncertainty), then objectness and classes
    (9 + classes channels). Decoded by detect.decode_gaussian_yolo (gaussian_yolo_layer.c)."""

    is_head = True
    keys = frozenset({"classes", "anchors", "num", "mask", "scale_x_y"})
    training_keys = Yolo.training_keys | {"ignore_thresh"}
    unsupported_keys = Yolo.unsupported_keys
    approximated_keys = Yolo.approximated_keys

    def __init__(self, section, index, shapes, net):
        super().__init__(section, index, shapes, net)
        s = section
        self.classes = positive(self, "classes", s.get_int("classes", 20), 100000)
        all_anchors, self.mask = _masked_anchors(self)
        self.anchors = all_anchors[self.mask]
        self.scale_x_y = s.get_float("scale_x_y", 1.0)
        if self.scale_x_y != 1.0:
            raise self.error("scale_x_y other than 1 is not supported for [Gaussian_yolo]", "scale_x_y")
        self.net_size = (net.width, net.height)
        c = self.in_shapes[0][0]
        expected = len(self.mask) * (9 + self.classes)
        if c != expected:
            raise self.error(f"input has {c} channels but {len(self.mask)} anchors x (9 + {self.classes} "
                             f"classes) = {expected}; fix filters= of the conv before it")

    def forward(self, xs):
        return xs[0]
