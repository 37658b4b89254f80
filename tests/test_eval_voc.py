"""Evaluation as Darknet and VOC do it: boxes clipped to the image, `labels_difficult/` as ignore regions,
only labelled classes scored. References: a loop-by-loop VOC devkit (`voc_eval.py`) implementation and
pycocotools."""
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from dncompress.cli import main
from dncompress.data import Dataset, Sample, difficult_label_path, load_dataset
from dncompress.eval import ImagePrediction, evaluate, labels_to_pixels, predict
from dncompress.detect import iou_matrix

VOC765 = Path(__file__).resolve().parents[2] / "shared" / "data" / "voc765"
if not VOC765.is_dir():
    VOC765 = Path("/work/shared/data/voc765")


def prediction(boxes, scores, classes, size=100):
    return ImagePrediction(size, size, np.array(boxes, float).reshape(-1, 4), np.array(scores, float),
                           np.array(classes, int))


def sample(rows, difficult=()):
    return Sample(None, np.array(rows, np.float32).reshape(-1, 5), np.array(difficult, np.float32).reshape(-1, 5))


def test_boxes_are_clipped_to_the_image_before_matching():
    """A detection hanging 20 px out of a 100 px image over a box at the border: IoU 0.75 unclipped,
    1.0 clipped (Darknet's COCO writer clips), so it is a true positive at every threshold up to .95."""
    ds = Dataset([sample([[0, 0.3, 0.5, 0.6, 0.2]])])
    preds = [prediction([[-20, 40, 60, 60]], [0.9], [0])]
    result = evaluate(preds, ds, 1)
    assert result.map50_95 == pytest.approx(1.0)


def test_detections_on_a_difficult_box_are_neither_true_nor_false_positives():
    """One ordinary box, one difficult box. Detections: 0.9 on the difficult box, 0.8 another on it,
    0.7 on the ordinary box. Without the ignore rule two FPs rank first (AP 1/3); with it AP = 1 and the
    difficult box does not count as a missed object (recall 1)."""
    ds = Dataset([sample([[0, 0.2, 0.2, 0.2, 0.2]], difficult=[[0, 0.7, 0.7, 0.2, 0.2]])])
    preds = [prediction([[60, 60, 80, 80], [60, 60, 80, 80], [10, 10, 30, 30]], [0.9, 0.8, 0.7], [0, 0, 0])]
    result = evaluate(preds, ds, 1)
    assert result.map50 == pytest.approx(1.0) and result.map50_95 == pytest.approx(1.0)
    assert result.precision == 1.0 and result.recall == 1.0
    assert result.n_boxes == 1 and result.n_difficult == 1
    # a difficult box of another class excuses nothing
    other = Dataset([sample([[0, 0.2, 0.2, 0.2, 0.2]], difficult=[[1, 0.7, 0.7, 0.2, 0.2]])])
    assert evaluate(preds, other, 2).map50 == pytest.approx(1 / 3)


def test_only_labelled_classes_are_scored():
    """Detections of a class without ground truth (cups on a VOC image) change neither mAP nor P/R."""
    ds = Dataset([sample([[0, 0.2, 0.2, 0.2, 0.2]])])
    base = evaluate([prediction([[10, 10, 30, 30]], [0.9], [0])], ds, 80)
    extra = evaluate([prediction([[10, 10, 30, 30], [50, 50, 90, 90]], [0.9, 0.95], [0, 41])], ds, 80)
    assert base.precision == extra.precision == 1.0 and base.map50 == extra.map50 == 1.0
    assert extra.scored_classes == [0] and "1 of 80 classes" in extra.scoring_note()


def voc_devkit_ap(preds, ds, cls, thresh=0.5):
    """The VOC devkit's voc_eval, one detection at a time: each detection (all images, by score) takes the
    ground truth of highest IoU among ordinary AND difficult boxes; difficult -> ignored, already detected
    -> FP; all-point AP. Boxes clipped first."""
    dets, gts, npos = [], {}, 0
    for i, (p, s) in enumerate(zip(preds, ds.items)):
        boxes, classes = labels_to_pixels(s.labels, p.width, p.height)
        dboxes, dclasses = labels_to_pixels(s.difficult, p.width, p.height)
        gts[i] = [[list(b), False, False] for b in boxes[classes == cls]] + \
                 [[list(b), True, False] for b in dboxes[dclasses == cls]]
        npos += int((classes == cls).sum())
        keep = np.flatnonzero(p.classes == cls)
        keep = keep[np.argsort(-p.scores[keep], kind="mergesort")][:100]
        for k in keep:
            box = np.clip(p.boxes[k], 0, [p.width, p.height] * 2)
            dets.append((float(p.scores[k]), i, box))
    dets.sort(key=lambda d: -d[0])
    tp, fp = [], []
    for score, i, box in dets:
        best, best_j = -1.0, None
        for j, (g, difficult, _) in enumerate(gts[i]):
            iou = iou_matrix(np.array([box]), np.array([g]))[0, 0]
            if iou > best:
                best, best_j = iou, j
        if best >= thresh:
            if gts[i][best_j][1]:
                continue
            if not gts[i][best_j][2]:
                gts[i][best_j][2] = True
                tp.append(1), fp.append(0)
            else:
                tp.append(0), fp.append(1)
        else:
            tp.append(0), fp.append(1)
    tp, fp = np.cumsum(tp), np.cumsum(fp)
    rec = tp / npos
    prec = tp / np.maximum(tp + fp, 1e-12)
    mrec = np.concatenate([[0.0], rec, [1.0]])
    mpre = np.concatenate([[0.0], prec, [0.0]])
    for k in range(len(mpre) - 2, -1, -1):
        mpre[k] = max(mpre[k], mpre[k + 1])
    idx = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[idx + 1] - mrec[idx]) * mpre[idx + 1]))


def test_voc_ap_with_difficult_matches_the_devkit_on_random_scenes():
    """About 40% of the objects difficult; detections on ordinary and difficult boxes, duplicates,
    wrong classes and misses."""
    rng = np.random.default_rng(7)
    items, preds = [], []
    for _ in range(15):
        centres = [(0.15 + 0.23 * (k % 4), 0.15 + 0.23 * (k // 4)) for k in rng.permutation(16)[:6]]
        cls = rng.integers(0, 2, 6)
        difficult = rng.random(6) < 0.4
        rows = [[c, x, y, 0.12, 0.12] for c, (x, y) in zip(cls, centres)]
        items.append(sample([r for r, d in zip(rows, difficult) if not d], [r for r, d in zip(rows, difficult) if d]))
        boxes, scores, classes = [], [], []
        for c, (x, y) in zip(cls, centres):
            for _ in range(rng.integers(0, 3)):      # 0, 1 or 2 (a duplicate) detections per object
                jitter = rng.normal(0, 1.5, 4)
                boxes.append([(x - 0.06) * 200 + jitter[0], (y - 0.06) * 200 + jitter[1],
                              (x + 0.06) * 200 + jitter[2], (y + 0.06) * 200 + jitter[3]])
                scores.append(rng.random())
                classes.append(c if rng.random() < 0.8 else 1 - c)
        boxes.append([-10, -10, 5, 5]), scores.append(rng.random()), classes.append(0)  # off any object
        preds.append(prediction(boxes, scores, classes, size=200))
    ds = Dataset(items)
    result = evaluate(preds, ds, 2)
    assert ds.num_difficult > 10
    for c in (0, 1):
        assert result.ap50_per_class[c] == pytest.approx(voc_devkit_ap(preds, ds, c), abs=1e-12)


def test_labels_difficult_beside_labels(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels_difficult").mkdir()
    import cv2
    cv2.imwrite(str(tmp_path / "images" / "a.jpg"), np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "labels" / "a.txt").write_text("1 .5 .5 .2 .2\n")
    (tmp_path / "labels_difficult" / "a.txt").write_text("2 .3 .3 .1 .1\n")
    assert difficult_label_path(tmp_path / "images" / "a.jpg") == tmp_path / "labels_difficult" / "a.txt"
    ds = load_dataset(tmp_path)
    np.testing.assert_allclose(ds.items[0].difficult, [[2, 0.3, 0.3, 0.1, 0.1]])
    assert ds.num_boxes == 1 and ds.num_difficult == 1
    (tmp_path / "labels_difficult" / "a.txt").write_text("2 .3 .3 .1\n")
    with pytest.raises(Exception, match=r"labels_difficult/a.txt"):
        load_dataset(tmp_path)


@pytest.mark.skipif(not (VOC765 / "labels_difficult").is_dir(), reason="needs ../shared/data/voc765")
def test_voc765_subset_against_the_devkit(tiny_net):
    """yolov3-tiny on 24 voc765 images: every class's AP@0.5 is the devkit's."""
    ds = load_dataset(VOC765 / "eval200.txt")
    ds.items = ds.items[:24]
    assert ds.num_difficult > 0
    preds = predict(tiny_net.forward, tiny_net.heads, ds, 416, 416, progress=False)
    result = evaluate(preds, ds, 80)
    assert len(result.scored_classes) >= 5
    for c in result.scored_classes:
        assert result.ap50_per_class[c] == pytest.approx(voc_devkit_ap(preds, ds, c), abs=1e-12)


def test_eval_cli_states_what_was_scored(tmp_path, tiny_weights):
    from helpers import coco128_folder
    folder = coco128_folder(tmp_path / "ds", 2)
    out = CliRunner().invoke(main, ["eval", "yolov3-tiny", str(tiny_weights), "--data", str(folder)])
    assert out.exit_code == 0, out.output
    assert "classes with ground truth; detections of other classes are not counted" in out.stdout
