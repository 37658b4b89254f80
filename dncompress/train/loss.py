"""YOLOv3 loss with Darknet's semantics (yolo_layer.c): each truth goes to the anchor (of ALL anchors)
whose shape fits it best, in the cell holding its centre, if this head owns that anchor; predictions whose
best IoU with any truth exceeds ignore_thresh get no objectness penalty, the rest learn objectness 0.
Darknet hands `truth - sigmoid(z)` straight back as the logit's delta, i.e. the gradient of binary cross
entropy on the logit; the values here are those BCE losses, so value and gradient agree (gradient-checked)."""
from __future__ import annotations

import numpy as np

from ..detect import decode_yolo, iou_matrix
from ..errors import DncompressError
from ..layers import Layer


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1 + np.tanh(0.5 * z))


def bce_logits(z: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Elementwise BCE of sigmoid(z) against target in [0, 1], without overflow."""
    return np.logaddexp(0, z) - target * z


def corners(boxes: np.ndarray) -> np.ndarray:
    """(M, 4) cx, cy, w, h -> x1, y1, x2, y2."""
    return np.concatenate([boxes[:, :2] - boxes[:, 2:] / 2, boxes[:, :2] + boxes[:, 2:] / 2], axis=1)


def shape_iou(wh_a: np.ndarray, wh_b: np.ndarray) -> np.ndarray:
    """(M, 2), (K, 2) box sizes -> (M, K) IoU of the boxes centred on the same point."""
    inter = np.minimum(wh_a[:, None, 0], wh_b[None, :, 0]) * np.minimum(wh_a[:, None, 1], wh_b[None, :, 1])
    return inter / (wh_a[:, None].prod(axis=2) + wh_b[None].prod(axis=2) - inter)


def best_ious(layer: Layer, out: np.ndarray, truths: np.ndarray) -> np.ndarray:
    """out: (A*(5+K), H, W) of one image, truths (M, 4) cx, cy, w, h -> (A, H, W) best IoU of each prediction."""
    _, h, w = out.shape
    if not len(truths):
        return np.zeros((len(layer.anchors), h, w))
    boxes, _, _ = decode_yolo(layer, out.astype(np.float32))
    return iou_matrix(corners(boxes), corners(truths)).max(axis=1).reshape(len(layer.anchors), h, w)


def assign_targets(layer: Layer, labels: np.ndarray, h: int, w: int):
    """Responsible (anchor slot, row, col) for each truth this head owns, with its class, box targets and scale."""
    truths = labels[(labels[:, 3] > 0) & (labels[:, 4] > 0)]
    net_w, net_h = layer.net_size
    anchors = layer.all_anchors / np.array([net_w, net_h])
    best = shape_iou(truths[:, 3:5], anchors).argmax(axis=1) if len(truths) else np.zeros(0, int)
    owned = np.isin(best, layer.mask)
    truths, best = truths[owned], best[owned]
    slot = np.array([layer.mask.index(n) for n in best], dtype=int)
    col = np.clip((truths[:, 1] * w).astype(int), 0, w - 1)
    row = np.clip((truths[:, 2] * h).astype(int), 0, h - 1)
    box = np.stack([truths[:, 1] * w - col, truths[:, 2] * h - row,
                    np.log(truths[:, 3] / anchors[best, 0]), np.log(truths[:, 4] / anchors[best, 1])], axis=1)
    return slot, row, col, truths[:, 0].astype(int), box, 2 - truths[:, 3] * truths[:, 4]


def yolo_loss(layer: Layer, out: np.ndarray, labels: list[np.ndarray]) -> tuple[dict[str, float], np.ndarray]:
    """out: (N, A*(5+K), H, W) raw head output; labels[i]: (M, 5) [class, cx, cy, w, h] of image i in net-input
    coordinates -> ({box, obj, cls} summed over the batch, d loss / d out)."""
    if layer.type != "yolo":
        raise DncompressError(f"training needs [yolo] heads; layer {layer.index} is [{layer.type}]")
    if layer.new_coords:
        # the loss below differentiates sigmoid/exp decoding; new_coords decodes (2 t)^2 on a logistic conv
        raise DncompressError(f"training a new_coords=1 [yolo] head (layer {layer.index}) is not supported")
    n, _, h, w = out.shape
    a, k = len(layer.anchors), layer.classes
    z = out.reshape(n, a, 5 + k, h, w)
    obj_target = np.zeros((n, a, h, w))
    obj_weight = np.ones((n, a, h, w))
    responsible = np.zeros((n, a, h, w), bool)
    box_target = np.zeros((n, a, 4, h, w))
    box_scale = np.zeros((n, a, h, w))
    cls_target = np.zeros((n, a, k, h, w))
    for b, image_labels in enumerate(labels):
        obj_weight[b][best_ious(layer, out[b], image_labels[:, 1:5]) > layer.ignore_thresh] = 0
        slot, row, col, cls, box, scale = assign_targets(layer, image_labels, h, w)
        if np.any(cls >= k):
            raise DncompressError(f"label class {cls.max()} but the head has {k} classes")
        responsible[b, slot, row, col] = True
        obj_target[b, slot, row, col] = 1
        obj_weight[b, slot, row, col] = 1
        box_target[b, slot, :, row, col] = box
        box_scale[b, slot, row, col] = scale
        cls_target[b, slot, cls, row, col] = 1
    grad = np.zeros(z.shape, dtype=out.dtype)
    sig = sigmoid(z)
    weight = box_scale * responsible
    xy, wh = z[:, :, 0:2], z[:, :, 2:4]
    box_loss = (weight[:, :, None] * bce_logits(xy, box_target[:, :, 0:2])).sum() \
        + 0.5 * (weight[:, :, None] * (wh - box_target[:, :, 2:4]) ** 2).sum()
    grad[:, :, 0:2] = weight[:, :, None] * (sig[:, :, 0:2] - box_target[:, :, 0:2])
    grad[:, :, 2:4] = weight[:, :, None] * (wh - box_target[:, :, 2:4])
    obj_loss = (obj_weight * bce_logits(z[:, :, 4], obj_target)).sum()
    grad[:, :, 4] = obj_weight * (sig[:, :, 4] - obj_target)
    cls_loss = (responsible[:, :, None] * bce_logits(z[:, :, 5:], cls_target)).sum()
    grad[:, :, 5:] = responsible[:, :, None] * (sig[:, :, 5:] - cls_target)
    parts = {"box": float(box_loss), "obj": float(obj_loss), "cls": float(cls_loss)}
    return parts, grad.reshape(out.shape)


def distillation_loss(layer: Layer, out: np.ndarray, teacher: np.ndarray) -> tuple[dict[str, float], np.ndarray]:
    """Objectness-scaled distillation on one head (Mehta & Ozturk, "Object detection at 200 frames per
    second", 2018). out, teacher: (N, A*(5+K), H, W) raw head tensors -> ({distill_obj, distill_box,
    distill_cls} summed over the batch, d loss / d out).

    - objectness: BCE of the student's sigmoid against the teacher's, at every cell and anchor (like the
      label loss's objectness term, which also covers the background);
    - box (BCE on x, y; half squared error on the log-space w, h) and classes (BCE against the teacher's
      sigmoids): weighted by the teacher's objectness p, so they count where the teacher sees an object.

    Why the weights: unweighted, the box and class terms over ~2,500 background cells x 3 anchors (whose
    raw w, h the teacher never learned to keep small) gave ~1,500-2,000 per image against ~70 for the
    label loss, and drove fine-tunes to NaN (FINDINGS.md). Weighted, the box/class terms scale with the
    teacher's objectness mass (about the number of objects), the same scale as the label loss. The
    teacher's entropy is subtracted so that a student equal to the teacher scores 0 with zero gradient."""
    n, _, h, w = out.shape
    a = len(layer.anchors)
    z = out.reshape(n, a, -1, h, w)
    t = teacher.reshape(z.shape).astype(z.dtype)
    soft = sigmoid(t)
    p = soft[:, :, 4:5]  # (N, A, 1, H, W) teacher objectness, the weight of the box and class terms
    grad = sigmoid(z) - soft
    grad[:, :, 2:4] = z[:, :, 2:4] - t[:, :, 2:4]
    value = bce_logits(z, soft) - bce_logits(t, soft)
    value[:, :, 2:4] = 0.5 * (z[:, :, 2:4] - t[:, :, 2:4]) ** 2
    weight = np.broadcast_to(p, z.shape).copy()
    weight[:, :, 4] = 1.0
    grad *= weight
    value *= weight
    parts = {"distill_obj": float(value[:, :, 4].sum()), "distill_box": float(value[:, :, 0:4].sum()),
             "distill_cls": float(value[:, :, 5:].sum())}
    return parts, grad.reshape(out.shape)


def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """Classification loss: logits (N, K, ...) (e.g. a (N, K, 1, 1) conv output), labels (N,) class indices
    -> (cross entropy of softmax(logits) summed over the batch, d loss / d logits)."""
    n = len(logits)
    z = logits.reshape(n, -1).astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    rows = np.arange(n)
    grad = np.exp(log_p)
    grad[rows, labels] -= 1
    return float(-log_p[rows, labels].sum()), grad.reshape(logits.shape).astype(logits.dtype)
