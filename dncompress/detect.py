"""Preprocessing (Darknet's resize and letterbox), [yolo]/[region] decoding, NMS and drawing."""
from __future__ import annotations

import dataclasses
import os
import struct
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np

from .errors import DncompressError
from .layers import Layer


@dataclasses.dataclass
class Detection:
    """One box and class; box in pixels of the original image (x1, y1, x2, y2)."""

    class_id: int
    name: str
    confidence: float
    box: tuple[float, float, float, float]

    def to_dict(self) -> dict:
        return {"class_id": self.class_id, "class": self.name, "confidence": round(self.confidence, 6),
                "box": [round(v, 2) for v in self.box]}


# Decoding needs ~15 bytes per pixel (uint8 BGR, RGB, float32): the limit keeps a 30000x30000 PNG of 0.9 MB
# from a MemoryError; 64 megapixels admits every camera photo (a 48 MP phone image is 8000x6000).
MAX_IMAGE_PIXELS_ENV = "DNCOMPRESS_MAX_IMAGE_PIXELS"
MAX_IMAGE_PIXELS = 64_000_000
# Darknet (stb_image) ignores EXIF orientation; OpenCV's imdecode would rotate the pixels
DECODE_FLAGS = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION


def max_image_pixels() -> int:
    value = os.environ.get(MAX_IMAGE_PIXELS_ENV, "")
    return int(value) if value.isdigit() and int(value) > 0 else MAX_IMAGE_PIXELS


def declared_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) a PNG, JPEG, BMP or WebP header declares, read without decoding; None for other
    formats (GIF's 6-byte signature is followed by the size with no check, so any text after "GIF89a"
    would read as a size) or headers too short to say."""
    try:
        if data[:8] == b"\x89PNG\r\n\x1a\n":
            return struct.unpack(">II", data[16:24])
        if data[:2] == b"BM":
            w, h = struct.unpack("<ii", data[18:26])
            return abs(w), abs(h)
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            kind = data[12:16]
            if kind == b"VP8 ":
                w, h = struct.unpack("<HH", data[26:30])
                return w & 0x3FFF, h & 0x3FFF
            if kind == b"VP8L":
                bits = int.from_bytes(data[21:25], "little")
                return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
            if kind == b"VP8X":
                return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
            return None
        if data[:2] == b"\xff\xd8":
            at = 2
            while at + 9 < len(data):
                if data[at] != 0xFF:
                    return None
                marker, length = data[at + 1], struct.unpack(">H", data[at + 2:at + 4])[0]
                if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):   # start of frame
                    h, w = struct.unpack(">HH", data[at + 5:at + 9])
                    return w, h
                at += 2 + length
    except struct.error:
        return None
    return None


def load_image(path: str | Path) -> np.ndarray:
    """RGB float32 (H, W, 3) in [0, 1], decoded as Darknet does (EXIF orientation ignored); unreadable,
    empty or oversized (> DNCOMPRESS_MAX_IMAGE_PIXELS, checked on the header before decoding) files raise
    a DncompressError."""
    path = Path(path)
    if not path.is_file():
        raise DncompressError("image not found", str(path))
    limit = max_image_pixels()
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as err:
        raise DncompressError(f"cannot read image: {err.strerror}", str(path)) from None
    size = declared_size(data[:1 << 16].tobytes())
    try:
        if size and size[0] * size[1] > limit:
            raise MemoryError
        bgr = cv2.imdecode(data, DECODE_FLAGS) if data.size else None
    except cv2.error:
        bgr = None
    except MemoryError:
        if not size:
            raise DncompressError("not enough memory to decode this image", str(path)) from None
        raise DncompressError(f"image is {size[0]}x{size[1]} ({size[0] * size[1] / 1e6:,.0f} megapixels), over "
                              f"the {limit / 1e6:g} megapixel limit of decoding (set {MAX_IMAGE_PIXELS_ENV} to "
                              "raise it)", str(path)) from None
    if bgr is None:
        raise DncompressError("cannot decode image (empty, truncated or not an image format OpenCV reads)",
                              str(path))
    if bgr.shape[0] * bgr.shape[1] > limit:  # a format whose header declared_size does not read
        raise DncompressError(f"image is {bgr.shape[1]}x{bgr.shape[0]}, over the {limit / 1e6:g} megapixel "
                              f"limit (set {MAX_IMAGE_PIXELS_ENV} to raise it)", str(path))
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB).astype(np.float32) / np.float32(255)


def _resize_weights(src: int, dst: int) -> tuple[np.ndarray, np.ndarray]:
    """Darknet's bilinear taps: sample i reads src[idx[i]] and src[idx[i]+1] with weight frac[i]."""
    scale = (src - 1) / (dst - 1) if dst > 1 else 0.0
    pos = np.arange(dst, dtype=np.float32) * np.float32(scale)
    idx = pos.astype(np.int64)
    frac = pos - idx
    # the last sample (and 1-pixel sources) take the edge pixel alone, as in resize_image()
    frac[-1] = 0.0
    idx[-1] = src - 1
    if src == 1:
        frac[:] = 0.0
        idx[:] = 0
    return np.minimum(idx, src - 1), frac


def darknet_resize(img: np.ndarray, width: int, height: int) -> np.ndarray:
    """img: (H, W, C) float32 -> (height, width, C), Darknet's resize_image(): separable bilinear with
    corners aligned, columns first. OpenCV's INTER_LINEAR samples differently and moves confidences."""
    h, w = img.shape[:2]
    ix, fx = _resize_weights(w, width)
    ix1 = np.minimum(ix + 1, w - 1)
    part = img[:, ix] * (1 - fx)[None, :, None] + img[:, ix1] * fx[None, :, None]
    iy, fy = _resize_weights(h, height)
    iy1 = np.minimum(iy + 1, h - 1)
    return (part[iy] * (1 - fy)[:, None, None] + part[iy1] * fy[:, None, None]).astype(np.float32)


def letterbox_geometry(img_w: int, img_h: int, net_w: int, net_h: int) -> tuple[int, int]:
    """The (new_w, new_h) Darknet scales an image to inside a net_w x net_h letterbox (integer maths)."""
    # at least one pixel: a 1x5000 strip would otherwise scale to zero rows
    if net_w / img_w < net_h / img_h:
        return net_w, max(1, (img_h * net_w) // img_w)
    return max(1, (img_w * net_h) // img_h), net_h


def letterbox(img: np.ndarray, net_w: int, net_h: int) -> np.ndarray:
    """Aspect-preserving resize centred on a 0.5-grey canvas, like Darknet's letterbox_image()."""
    new_w, new_h = letterbox_geometry(img.shape[1], img.shape[0], net_w, net_h)
    canvas = np.full((net_h, net_w, img.shape[2]), 0.5, dtype=np.float32)
    top, left = (net_h - new_h) // 2, (net_w - new_w) // 2
    canvas[top:top + new_h, left:left + new_w] = darknet_resize(img, new_w, new_h)
    return canvas


def to_channels(img: np.ndarray, channels: int) -> np.ndarray:
    """RGB (H, W, 3) in [0, 1] -> (H, W, channels): unchanged for 3; for 1 (grayscale models) the luma
    Darknet's stb_image computes when it loads an image with 1 channel, (77 R + 150 G + 29 B) >> 8 on bytes."""
    if channels == 3:
        return img
    if channels != 1:
        raise DncompressError(f"the network takes {channels}-channel input; images are read as RGB (channels=3) "
                              "or grey (channels=1)")
    rgb = np.rint(img * 255).astype(np.int32)
    luma = (rgb[..., 0] * 77 + rgb[..., 1] * 150 + rgb[..., 2] * 29) >> 8
    return (luma[..., None] / np.float32(255)).astype(np.float32)


def preprocess(img: np.ndarray, net_w: int, net_h: int, use_letterbox: bool = True,
               channels: int = 3) -> np.ndarray:
    """RGB (H, W, 3) in [0, 1] -> (1, channels, net_h, net_w) float32 blob."""
    img = to_channels(img, channels)
    sized = letterbox(img, net_w, net_h) if use_letterbox else darknet_resize(img, net_w, net_h)
    return np.ascontiguousarray(sized.transpose(2, 0, 1)[None])


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (np.tanh(0.5 * x) + 1)


def _grid(h: int, w: int, anchors: int) -> tuple[np.ndarray, np.ndarray]:
    """Cell column and row for each (anchor, row, col), flattened."""
    rows, cols = np.meshgrid(np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32), indexing="ij")
    return np.tile(cols.ravel(), anchors), np.tile(rows.ravel(), anchors)


def decode_yolo(layer: Layer, out: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """out: (A*(5+K), H, W) raw -> boxes (M, 4) cx, cy, w, h relative to the net input, objectness (M,),
    class scores (M, K) = sigmoid(class logit), with M = A*H*W in anchor-major order."""
    a, k = len(layer.anchors), layer.classes
    _, h, w = out.shape
    t = out.reshape(a, 5 + k, h * w)
    col, row = _grid(h, w, a)
    s = layer.scale_x_y
    # new_coords: the conv already applied logistic to every channel (Darknet's yolo_layer.c)
    act = (lambda v: v) if layer.new_coords else _sigmoid
    xy = act(t[:, :2]) * s - (s - 1) / 2
    net_w, net_h = layer.net_size
    boxes = np.empty((a * h * w, 4), dtype=np.float32)
    boxes[:, 0] = (col + xy[:, 0].ravel()) / w
    boxes[:, 1] = (row + xy[:, 1].ravel()) / h
    with np.errstate(over="ignore"):
        wh = 4 * t[:, 2:4] ** 2 if layer.new_coords else np.exp(t[:, 2:4])
        boxes[:, 2] = (wh[:, 0] * layer.anchors[:, :1]).ravel() / net_w
        boxes[:, 3] = (wh[:, 1] * layer.anchors[:, 1:]).ravel() / net_h
    objectness = act(t[:, 4]).ravel()
    scores = act(t[:, 5:]).transpose(0, 2, 1).reshape(-1, k)
    return boxes, objectness, scores


def decode_region(layer: Layer, out: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """YOLOv2 [region]: anchors in grid cells, class scores softmax (or logistic) over classes."""
    if layer.tree or layer.class_map:
        key = "tree" if layer.tree else "map"
        raise layer.error(f"{key}= (YOLO9000's hierarchical softmax / class-id map) cannot be decoded into "
                          "detections", key)
    a, k = len(layer.anchors), layer.classes
    _, h, w = out.shape
    t = out.reshape(a, 5 + k, h * w)
    col, row = _grid(h, w, a)
    boxes = np.empty((a * h * w, 4), dtype=np.float32)
    boxes[:, 0] = (col + _sigmoid(t[:, 0]).ravel()) / w
    boxes[:, 1] = (row + _sigmoid(t[:, 1]).ravel()) / h
    with np.errstate(over="ignore"):
        boxes[:, 2] = (np.exp(t[:, 2]) * layer.anchors[:, :1]).ravel() / w
        boxes[:, 3] = (np.exp(t[:, 3]) * layer.anchors[:, 1:]).ravel() / h
    objectness = _sigmoid(t[:, 4]).ravel()
    logits = t[:, 5:]
    if layer.softmax:
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs = e / e.sum(axis=1, keepdims=True)
    else:
        probs = _sigmoid(logits)
    return boxes, objectness, probs.transpose(0, 2, 1).reshape(-1, k)


def decode_gaussian_yolo(layer: Layer, out: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """[Gaussian_yolo]: channels per anchor x, ux, y, uy, w, uw, h, uh, objectness, classes. Boxes from the
    means as [yolo]; class scores times (1 - mean of the four sigmoid uncertainties), as Darknet's
    get_gaussian_yolo_detections (objectness alone is compared with the threshold)."""
    a, k = len(layer.anchors), layer.classes
    _, h, w = out.shape
    t = out.reshape(a, 9 + k, h * w)
    col, row = _grid(h, w, a)
    net_w, net_h = layer.net_size
    boxes = np.empty((a * h * w, 4), dtype=np.float32)
    boxes[:, 0] = (col + _sigmoid(t[:, 0]).ravel()) / w
    boxes[:, 1] = (row + _sigmoid(t[:, 2]).ravel()) / h
    with np.errstate(over="ignore"):
        boxes[:, 2] = (np.exp(t[:, 4]) * layer.anchors[:, :1]).ravel() / net_w
        boxes[:, 3] = (np.exp(t[:, 6]) * layer.anchors[:, 1:]).ravel() / net_h
    certainty = 1 - _sigmoid(t[:, [1, 3, 5, 7]]).mean(axis=1)          # (A, H*W)
    objectness = _sigmoid(t[:, 8]).ravel()
    scores = (_sigmoid(t[:, 9:]) * certainty[:, None]).transpose(0, 2, 1).reshape(-1, k)
    return boxes, objectness, scores


def decode_detection(layer: Layer, out: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """YOLOv1 [detection] (get_detection_detections): per cell `classes` probabilities (softmax'd first
    when softmax=1, as forward_detection_layer), then `num` confidences, then `num` boxes x, y (cell
    offsets), w, h (squared with sqrt=1) relative to the image; M = side*side*num boxes, cell-major.
    The confidence is the raw value (no logistic), the class score confidence * probability."""
    if layer.coords != 4:
        raise layer.error(f"coords={layer.coords}: boxes of [detection] are decoded with coords=4 only", "coords")
    side, n, k = layer.side, layer.num, layer.classes
    cells = side * side
    p = out.reshape(-1).astype(np.float32)
    probs = p[:cells * k].reshape(cells, k)
    if layer.softmax:
        e = np.exp(probs - probs.max(axis=1, keepdims=True))
        probs = e / e.sum(axis=1, keepdims=True)
    confidence = p[cells * k:cells * (k + n)].copy()
    t = p[cells * (k + n):].reshape(cells, n, 4)
    row, col = np.divmod(np.arange(cells, dtype=np.float32), side)
    boxes = np.empty((cells, n, 4), dtype=np.float32)
    boxes[..., 0] = (t[..., 0] + col[:, None]) / side
    boxes[..., 1] = (t[..., 1] + row[:, None]) / side
    boxes[..., 2:] = t[..., 2:] ** 2 if layer.sqrt else t[..., 2:]
    return boxes.reshape(-1, 4), confidence, np.repeat(probs, n, axis=0)


DECODERS = {"yolo": decode_yolo, "region": decode_region, "gaussian_yolo": decode_gaussian_yolo,
            "detection": decode_detection}


def to_pixels(boxes: np.ndarray, img_w: int, img_h: int, net_w: int, net_h: int,
              use_letterbox: bool) -> np.ndarray:
    """(M, 4) relative cx, cy, w, h on the net input -> (M, 4) x1, y1, x2, y2 pixels of the image,
    undoing the letterbox like Darknet's correct_yolo_boxes()."""
    b = boxes.astype(np.float64)
    if use_letterbox:
        new_w, new_h = letterbox_geometry(img_w, img_h, net_w, net_h)
        b[:, 0] = (b[:, 0] - (net_w - new_w) / 2 / net_w) / (new_w / net_w)
        b[:, 1] = (b[:, 1] - (net_h - new_h) / 2 / net_h) / (new_h / net_h)
        b[:, 2] *= net_w / new_w
        b[:, 3] *= net_h / new_h
    out = np.empty_like(b)
    out[:, 0] = (b[:, 0] - b[:, 2] / 2) * img_w
    out[:, 1] = (b[:, 1] - b[:, 3] / 2) * img_h
    out[:, 2] = (b[:, 0] + b[:, 2] / 2) * img_w
    out[:, 3] = (b[:, 1] + b[:, 3] / 2) * img_h
    return out


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a: (M, 4), b: (K, 4) x1, y1, x2, y2 -> (M, K) intersection over union."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), axis=1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy NMS; returns kept indices, highest score first. Suppresses IoU > threshold (Darknet)."""
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        best = order[0]
        keep.append(best)
        if order.size == 1:
            break
        ious = iou_matrix(boxes[best:best + 1], boxes[order[1:]])[0]
        order = order[1:][ious <= iou_threshold]
    return np.array(keep, dtype=np.int64)


# the (M, M) overlap matrix of nms_per_class is built when it stays below this many elements (M <= 4096)
MAX_OVERLAP_ELEMENTS = 1 << 24


def nms_per_class(boxes: np.ndarray, scores: np.ndarray, score_thresh: float,
                  iou_threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Greedy NMS within every class, as Darknet's do_nms_sort: boxes (M, 4) x1 y1 x2 y2, scores (M, K);
    candidates score > score_thresh. Returns (box indices, class ids) of the kept pairs.
    All classes advance together, one rank at a time, over one overlap matrix: a step costs O(C * M) numpy
    work, so a 9000-class head needs as many steps as its busiest class has candidates, not one Python
    loop per class (> 300 s before)."""
    live = scores > score_thresh
    classes = np.flatnonzero(live.any(axis=0))
    m = len(boxes)
    if not len(classes):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    if m * m > MAX_OVERLAP_ELEMENTS:   # many boxes: one class at a time keeps memory at O(M)
        kept_rows, kept_classes = [], []
        for c in classes:
            candidates = np.flatnonzero(live[:, c])
            kept_rows.append(candidates[nms(boxes[candidates], scores[candidates, c], iou_threshold)])
            kept_classes.append(np.full(len(kept_rows[-1]), c))
        return np.concatenate(kept_rows), np.concatenate(kept_classes)
    over = iou_matrix(boxes, boxes) > iou_threshold                       # (M, M)
    alive = live[:, classes].T.copy()                                     # (C, M)
    ranked = np.where(alive, scores[:, classes].T, -np.inf)
    depth = int(alive.sum(axis=1).max())
    order = np.argsort(-ranked, axis=1, kind="stable")[:, :depth]         # (C, depth) best first
    valid = np.take_along_axis(alive, order, axis=1)
    kept = np.zeros_like(valid)
    rows = np.arange(len(classes))
    for t in range(depth):
        box = order[:, t]
        now = valid[:, t] & alive[rows, box]
        kept[:, t] = now
        alive &= ~(over[box] & now[:, None])   # a kept box suppresses its overlaps (suppressed ones do not)
    which, rank = np.nonzero(kept)
    return order[which, rank], classes[which]


def decode_image(heads: Sequence[Layer], outputs: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Raw head outputs of ONE image -> boxes (M, 4), objectness (M,), class scores (M, K), all heads
    concatenated in cfg order."""
    parts = [DECODERS[layer.type](layer, out) for layer, out in zip(heads, outputs)]
    return tuple(np.concatenate([p[i] for p in parts]) for i in range(3))


def postprocess(heads: Sequence[Layer], outputs: Sequence[np.ndarray], img_w: int, img_h: int,
                thresh: float, nms_threshold: float, use_letterbox: bool,
                names: Sequence[str] | None = None) -> list[Detection]:
    """Raw head outputs of ONE image (each (C, H, W)) -> detections above `thresh`, per-class NMS.
    As in Darknet, a candidate needs objectness > thresh and its score is objectness * class score."""
    boxes, objectness, class_scores = decode_image(heads, outputs)
    keep = objectness > thresh
    boxes, scores = boxes[keep], objectness[keep, None] * class_scores[keep]
    if not len(boxes):
        return []
    net_w, net_h = heads[0].net_size
    pixels = to_pixels(boxes, img_w, img_h, net_w, net_h, use_letterbox)
    rows, classes = nms_per_class(pixels, scores, thresh, nms_threshold)
    confidence = scores[rows, classes]
    order = np.argsort(-confidence, kind="stable")
    rows, classes, confidence = rows[order], classes[order], confidence[order]
    detections = [Detection(int(c), names[c] if names and c < len(names) else str(c), float(p), tuple(box))
                  for c, p, box in zip(classes.tolist(), confidence.tolist(), pixels[rows].tolist())]
    return detections


Forward = Callable[[np.ndarray], list[np.ndarray]]


def detect_image(forward: Forward, heads: Sequence[Layer], img: np.ndarray, net_w: int, net_h: int,
                 thresh: float = 0.25, nms_threshold: float = 0.45, use_letterbox: bool = True,
                 names: Sequence[str] | None = None) -> list[Detection]:
    """Run `forward` (numpy engine or onnxruntime) on one RGB image and return its detections."""
    outputs = forward(preprocess(img, net_w, net_h, use_letterbox, heads[0].net_channels))
    return postprocess(heads, [o[0] for o in outputs], img.shape[1], img.shape[0], thresh,
                       nms_threshold, use_letterbox, names)


def check_heads(heads: Sequence[Layer], file: str | None = None) -> None:
    """Detection needs at least one [yolo]/[region] head, all with the same classes."""
    if not heads:
        raise DncompressError("the cfg has no [yolo] or [region] layer, so it cannot detect", file)
    classes = {layer.classes for layer in heads}
    if len(classes) > 1:
        raise DncompressError(f"detection heads disagree on classes= ({', '.join(map(str, sorted(classes)))})",
                              file, heads[-1].section.where("classes"))


def draw(img: np.ndarray, detections: Sequence[Detection]) -> np.ndarray:
    """RGB float image -> BGR uint8 with labelled boxes, colour per class."""
    canvas = cv2.cvtColor((np.clip(img, 0, 1) * 255).round().astype(np.uint8), cv2.COLOR_RGB2BGR)
    thickness = max(1, round(max(canvas.shape[:2]) / 400))
    for d in detections:
        hue = (d.class_id * 47) % 180
        color = cv2.cvtColor(np.uint8([[[hue, 220, 230]]]), cv2.COLOR_HSV2BGR)[0, 0].tolist()
        # clamp to the canvas like Darknet's draw_detections (also tames inf/nan from corrupt weights)
        x1, x2 = np.clip(np.nan_to_num(d.box[::2]), 0, canvas.shape[1] - 1).round().astype(int).tolist()
        y1, y2 = np.clip(np.nan_to_num(d.box[1::2]), 0, canvas.shape[0] - 1).round().astype(int).tolist()
        cv2.rectangle(canvas, (x1, y1), (x2, y2), color, thickness)
        label = f"{d.name} {d.confidence:.2f}"
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
        y_text = max(y1, th + base)
        cv2.rectangle(canvas, (x1, y_text - th - base), (x1 + tw, y_text), color, -1)
        cv2.putText(canvas, label, (x1, y_text - base), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1,
                    cv2.LINE_AA)
    return canvas


def read_names(path: str | Path | None, classes: int) -> list[str]:
    """Class names from a .names file (one a line); default COCO names when they fit `classes`."""
    if path is None:
        default = Path(__file__).with_name("coco.names")
        names = default.read_text().splitlines()
        return names if len(names) == classes else [str(i) for i in range(classes)]
    try:
        names = [n.strip() for n in Path(path).read_text().splitlines() if n.strip()]
    except (OSError, UnicodeDecodeError) as err:
        raise DncompressError(f"cannot read names file: {err}", str(path)) from None
    if len(names) < classes:
        raise DncompressError(f"has {len(names)} names but the network has {classes} classes", str(path))
    return names
