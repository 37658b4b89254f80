"""Accuracy: run a model over a dataset, match detections to ground truth, report mAP and fidelity."""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence

import numpy as np

from .data import Dataset, Sample
from .detect import Detection, Forward, iou_matrix, load_image, postprocess, preprocess
from .layers import Layer
from .network import Network
from .progress import Progress, sink

IOU_THRESHOLDS = np.round(np.arange(0.5, 0.96, 0.05), 2)
RECALL_POINTS = np.linspace(0, 1, 101)
# COCO keeps the 100 best detections per image and class
MAX_DETECTIONS = 100


@dataclasses.dataclass(eq=False)
class ImagePrediction(Sequence):
    """Detections of one image in pixels: boxes (K, 4) x1 y1 x2 y2, scores (K,), classes (K,).
    Also a sequence of `detect.Detection` (named by class id), so it reads like detect_image's list."""

    width: int
    height: int
    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray

    @classmethod
    def from_detections(cls, detections: Sequence[Detection], width: int, height: int) -> "ImagePrediction":
        return cls(width, height, np.array([d.box for d in detections], np.float64).reshape(-1, 4),
                   np.array([d.confidence for d in detections], np.float64),
                   np.array([d.class_id for d in detections], np.int64))

    def __len__(self) -> int:
        return len(self.scores)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        class_id = int(self.classes[i])
        return Detection(class_id, str(class_id), float(self.scores[i]), tuple(float(v) for v in self.boxes[i]))


def predict(forward: Forward, heads: Sequence[Layer], dataset: Dataset, net_w: int, net_h: int,
            use_letterbox: bool = True, conf: float = 0.005, nms: float = 0.45, batch: int = 8,
            progress: Progress | bool | None = None) -> list[ImagePrediction]:
    """Detections for every image of `dataset`, `batch` images per forward pass; `progress("predict", done,
    total)` after each batch."""
    report = sink(progress)
    predictions: list[ImagePrediction] = []
    for start in range(0, len(dataset), batch):
        samples = dataset.items[start:start + batch]
        images = [load_image(s.image) for s in samples]
        blob = np.concatenate([preprocess(img, net_w, net_h, use_letterbox, heads[0].net_channels)
                               for img in images])
        outputs = forward(blob)
        for i, img in enumerate(images):
            dets = postprocess(heads, [o[i] for o in outputs], img.shape[1], img.shape[0], conf, nms,
                               use_letterbox)
            predictions.append(ImagePrediction.from_detections(dets, img.shape[1], img.shape[0]))
        report("predict", len(predictions), len(dataset))
    return predictions


def labels_to_pixels(labels: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """(boxes (M, 4) x1 y1 x2 y2 in pixels, classes (M,)) of label rows (M, 5) [class, cx, cy, w, h]."""
    cls, cx, cy, w, h = labels.astype(np.float64).reshape(-1, 5).T
    boxes = np.stack([(cx - w / 2) * width, (cy - h / 2) * height,
                      (cx + w / 2) * width, (cy + h / 2) * height], axis=1)
    return boxes.reshape(-1, 4), cls.astype(np.int64)


def ground_truth_pixels(sample: Sample, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """(boxes (M, 4) x1 y1 x2 y2 in pixels, classes (M,)) of a sample."""
    return labels_to_pixels(sample.labels, width, height)


def clip_boxes(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """(K, 4) x1 y1 x2 y2 clipped to the image, as Darknet's COCO/VOC result writers do before scoring."""
    return np.clip(boxes, 0, [width, height, width, height])


def match_image(det_boxes: np.ndarray, gt_boxes: np.ndarray) -> np.ndarray:
    """Detections (sorted by score) of one class in one image against its ground truth: (T, K) bool,
    True where detection k is a true positive at IoU threshold t. COCO's greedy rule: each detection
    takes the unmatched ground truth of highest IoU >= t."""
    matched = np.zeros((len(IOU_THRESHOLDS), len(det_boxes)), bool)
    if not len(det_boxes) or not len(gt_boxes):
        return matched
    ious = iou_matrix(det_boxes, gt_boxes)
    taken = np.zeros((len(IOU_THRESHOLDS), len(gt_boxes)), bool)
    rows = np.arange(len(IOU_THRESHOLDS))
    # a detection below the lowest threshold with every ground truth is a false positive at all thresholds
    for k in np.flatnonzero(ious.max(axis=1) >= IOU_THRESHOLDS[0]):
        candidates = np.where(taken, -1.0, ious[k])
        best = candidates.argmax(axis=1)
        hit = candidates[rows, best] >= IOU_THRESHOLDS
        taken[rows[hit], best[hit]] = True
        matched[hit, k] = True
    return matched


def ignored_detections(det_boxes: np.ndarray, difficult_boxes: np.ndarray, matched: np.ndarray) -> np.ndarray:
    """(T, K) bool: detections that matched no ordinary ground truth at threshold t but overlap a VOC
    `difficult` box of their class with IoU >= t. They are neither true nor false positives, and any
    number of detections may fall on one difficult box (AlexeyAB Darknet `validate_detector_map`, VOC devkit)."""
    if not len(det_boxes) or not len(difficult_boxes):
        return np.zeros_like(matched)
    best = iou_matrix(det_boxes, difficult_boxes).max(axis=1)            # (K,)
    return ~matched & (best[None, :] >= IOU_THRESHOLDS[:, None])


def voc_match(det_boxes: np.ndarray, gt_boxes: np.ndarray, difficult_boxes: np.ndarray,
              threshold: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """The VOC devkit's rule (`voc_eval.py`) for detections (sorted by score) of one class in one image:
    each takes the box of highest IoU among ordinary AND difficult boxes; IoU >= threshold with a
    difficult box -> ignored, with an ordinary box not yet taken -> true positive, else false positive.
    Returns (tp (K,), ignored (K,)) bool."""
    tp = np.zeros(len(det_boxes), bool)
    ignored = np.zeros(len(det_boxes), bool)
    boxes = np.concatenate([gt_boxes, difficult_boxes]).reshape(-1, 4)
    if not len(det_boxes) or not len(boxes):
        return tp, ignored
    ious = iou_matrix(det_boxes, boxes)
    best = ious.argmax(axis=1)
    hit = ious[np.arange(len(det_boxes)), best] >= threshold
    ignored[:] = hit & (best >= len(gt_boxes))
    taken = np.zeros(len(gt_boxes), bool)
    for k in np.flatnonzero(hit & ~ignored):   # first (highest-scored) detection on a box wins it
        tp[k] = not taken[best[k]]
        taken[best[k]] = True
    return tp, ignored


def average_precision(tp: np.ndarray, scores: np.ndarray, n_gt: int,
                      ignored: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """tp: (R, K) over all detections of a class, one row per matching (IoU threshold); ignored (R, K):
    detections on difficult boxes, left out. Returns (COCO 101-point AP (R,), VOC all-point AP (R,))."""
    order = np.argsort(-scores, kind="mergesort")
    tp = tp[:, order]
    ignored = np.zeros_like(tp) if ignored is None else ignored[:, order]
    coco, voc = np.zeros(len(tp)), np.zeros(len(tp))
    for t in range(len(tp)):
        kept = tp[t, ~ignored[t]]
        tps = np.cumsum(kept)
        fps = np.cumsum(~kept)
        recall = tps / n_gt
        precision = tps / np.maximum(tps + fps, np.finfo(np.float64).eps)
        envelope = np.maximum.accumulate(precision[::-1])[::-1]
        idx = np.searchsorted(recall, RECALL_POINTS, side="left")
        coco[t] = envelope[idx[idx < len(recall)]].sum() / len(RECALL_POINTS)
        r = np.concatenate([[0.0], recall])
        voc[t] = np.sum((r[1:] - r[:-1]) * envelope)
    return coco, voc


@dataclasses.dataclass
class EvalResult:
    map50: float                      # VOC all-point AP at IoU 0.5, mean over classes with ground truth
    map50_95: float                   # COCO 101-point AP averaged over IoU 0.50:0.95
    map50_coco: float                 # COCO 101-point AP at IoU 0.5 (pycocotools' AP50)
    ap50_per_class: dict[int, float]  # VOC AP@0.5 of each class with ground truth
    ap_per_class: np.ndarray          # (K, 10) COCO AP per class and IoU threshold; NaN without ground truth
    precision: float                  # at conf >= 0.25, IoU 0.5, over the scored classes
    recall: float
    n_images: int
    n_boxes: int
    images_per_s: float = 0.0
    n_difficult: int = 0              # VOC difficult boxes (ignore regions), not counted in n_boxes
    scored_classes: list[int] = dataclasses.field(default_factory=list)  # classes with ground truth
    num_classes: int = 0              # classes of the network

    def to_dict(self) -> dict:
        """JSON-ready: ap_per_class as K lists, None for classes without ground truth."""
        fields = dataclasses.asdict(self)
        fields["ap_per_class"] = [None if np.isnan(row).all() else row.tolist() for row in self.ap_per_class]
        return fields

    def scoring_note(self) -> str:
        """One sentence saying which classes were scored and what was ignored (printed by eval)."""
        note = (f"scored on the {len(self.scored_classes)} of {self.num_classes} classes with ground truth; "
                "detections of other classes are not counted")
        if self.n_difficult:
            note += f"; detections on the {self.n_difficult} difficult boxes are ignored (VOC)"
        return note


def evaluate(predictions: Sequence[ImagePrediction], dataset: Dataset, num_classes: int,
             pr_conf: float = 0.25) -> EvalResult:
    """mAP@0.5 (VOC devkit: its matching and all-point AP), mAP@0.5:0.95 (COCO greedy matching,
    101-point AP), and P/R at `pr_conf` (VOC matching); predictions[i] belongs to dataset.items[i]. Boxes are clipped to the image first (as Darknet's result writers do).
    Only classes with ground truth (ordinary boxes) are scored: a dataset labelling a subset of the
    network's classes (voc765: 20 of 80) says nothing about detections of the others, so they count
    neither in the means nor in P/R. Detections on `difficult` boxes are ignored (`ignored_detections`)."""
    if len(predictions) != len(dataset):
        raise ValueError(f"{len(predictions)} predictions for {len(dataset)} images")
    dataset.check_classes(num_classes)
    per_class_tp = [[] for _ in range(num_classes)]
    per_class_ignored = [[] for _ in range(num_classes)]
    per_class_scores = [[] for _ in range(num_classes)]
    n_gt = np.zeros(num_classes, np.int64)
    n_difficult = 0
    for pred, sample in zip(predictions, dataset.items):
        gt_boxes, gt_classes = ground_truth_pixels(sample, pred.width, pred.height)
        dif_boxes, dif_classes = labels_to_pixels(sample.difficult, pred.width, pred.height)
        n_difficult += len(dif_boxes)
        det_boxes = clip_boxes(pred.boxes, pred.width, pred.height)
        n_gt += np.bincount(gt_classes, minlength=num_classes)
        for c in np.union1d(np.unique(pred.classes), np.unique(gt_classes)):
            mine = np.flatnonzero(pred.classes == c)
            mine = mine[np.argsort(-pred.scores[mine], kind="mergesort")][:MAX_DETECTIONS]
            dets, gts, difs = det_boxes[mine], gt_boxes[gt_classes == c], dif_boxes[dif_classes == c]
            matched = match_image(dets, gts)
            voc_tp, voc_ignored = voc_match(dets, gts, difs)
            # rows 0..9: COCO greedy matching at each IoU threshold; row 10: the VOC devkit's at 0.5
            per_class_tp[c].append(np.vstack([matched, voc_tp]))
            per_class_ignored[c].append(np.vstack([ignored_detections(dets, difs, matched), voc_ignored]))
            per_class_scores[c].append(pred.scores[mine])
    ap50, tp_at_conf, det_at_conf = {}, 0, 0
    ap_all = np.full((num_classes, len(IOU_THRESHOLDS)), np.nan)
    for c in np.flatnonzero(n_gt > 0):
        if not per_class_tp[c]:
            continue
        tp = np.concatenate(per_class_tp[c], axis=1)
        ignored = np.concatenate(per_class_ignored[c], axis=1)
        scores = np.concatenate(per_class_scores[c])
        counted = (scores >= pr_conf) & ~ignored[-1]
        tp_at_conf += int(tp[-1, counted].sum())
        det_at_conf += int(counted.sum())
        coco, voc = average_precision(tp, scores, int(n_gt[c]), ignored)
        ap50[int(c)], ap_all[c] = float(voc[-1]), coco[:-1]
    total_gt = int(n_gt.sum())
    scored = ap_all[n_gt > 0]
    return EvalResult(
        map50=float(np.mean(list(ap50.values()))) if ap50 else 0.0,
        map50_95=float(scored.mean()) if len(scored) else 0.0,
        map50_coco=float(scored[:, 0].mean()) if len(scored) else 0.0,
        ap50_per_class=ap50, ap_per_class=ap_all,
        precision=tp_at_conf / det_at_conf if det_at_conf else 0.0,
        recall=tp_at_conf / total_gt if total_gt else 0.0,
        n_images=len(predictions), n_boxes=total_gt, n_difficult=n_difficult,
        scored_classes=[int(c) for c in np.flatnonzero(n_gt > 0)], num_classes=num_classes)


def fidelity_dataset(reference: Sequence[ImagePrediction], dataset: Dataset, conf: float = 0.25) -> Dataset:
    """The reference model's detections (score >= conf) as ground truth, to measure agreement."""
    items = []
    for pred, sample in zip(reference, dataset.items):
        keep = pred.scores >= conf
        b = pred.boxes[keep]
        w, h = pred.width, pred.height
        labels = np.stack([pred.classes[keep], (b[:, 0] + b[:, 2]) / 2 / w, (b[:, 1] + b[:, 3]) / 2 / h,
                           (b[:, 2] - b[:, 0]) / w, (b[:, 3] - b[:, 1]) / h], axis=1)
        items.append(Sample(sample.image, labels.astype(np.float32).reshape(-1, 5)))
    return Dataset(items, dataset.names, f"{dataset.source} (reference detections >= {conf})", dataset.classes)


def timed_predict(*args, **kwargs) -> tuple[list[ImagePrediction], float]:
    """predict() and the images per second it achieved (decode, preprocess, forward, NMS)."""
    start = time.perf_counter()
    predictions = predict(*args, **kwargs)
    return predictions, len(predictions) / max(time.perf_counter() - start, 1e-9)


def model_map50(model, dataset: Dataset, classes: int, use_letterbox: bool = True,
                progress: Progress | bool | None = None) -> float:
    """mAP@0.5 of `model` (a Network, or anything with forward, heads and info) on `dataset`, at its own
    input size."""
    preds = predict(model.forward, model.heads, dataset, model.info.width, model.info.height, use_letterbox,
                    progress=progress)
    return evaluate(preds, dataset, classes).map50


def compare_many(reference: Network, candidates: Sequence, dataset: Dataset, use_letterbox: bool = True,
                 progress: Progress | bool | None = None) -> list[dict]:
    """For each candidate: its fidelity to the reference (mAP@0.5 against the reference's detections) and,
    when `dataset` has labels, mAP@0.5 and @0.5:0.95 as [reference, candidate]. Every model runs at its own
    input size (a resized model keeps its size); the reference is predicted once."""
    def run(model):
        return predict(model.forward, model.heads, dataset, model.info.width, model.info.height, use_letterbox,
                       progress=progress)
    classes = reference.heads[0].classes
    ref_preds = run(reference)
    fidelity_set = fidelity_dataset(ref_preds, dataset)
    base = evaluate(ref_preds, dataset, classes) if dataset.num_boxes else None
    results = []
    for candidate in candidates:
        preds = run(candidate)
        out = {"fidelity_map50": evaluate(preds, fidelity_set, classes).map50}
        if base is not None:
            result = evaluate(preds, dataset, classes)
            out.update(map50=[base.map50, result.map50], map50_95=[base.map50_95, result.map50_95])
        results.append(out)
    return results


def compare_models(reference: Network, candidate, dataset: Dataset, use_letterbox: bool = True,
                   progress: Progress | bool | None = None) -> dict:
    """`compare_many` for one candidate."""
    return compare_many(reference, [candidate], dataset, use_letterbox, progress)[0]
