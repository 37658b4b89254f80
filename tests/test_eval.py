"""mAP against hand computations, a brute-force VOC formula and pycocotools; fidelity; the eval CLI."""
import contextlib
import io
import json

import numpy as np
import pytest
from click.testing import CliRunner

from dncompress.cli import main
from dncompress.data import Dataset, Sample, load_dataset
from dncompress.detect import detect_image, load_image
from dncompress.eval import ImagePrediction, evaluate, fidelity_dataset, ground_truth_pixels, predict

from helpers import COCO128, COCO_FEW, coco128_folder


def prediction(boxes, scores, classes, size=100):
    return ImagePrediction(size, size, np.array(boxes, float).reshape(-1, 4), np.array(scores, float),
                           np.array(classes, int))


def sample(rows):
    return Sample(None, np.array(rows, np.float32).reshape(-1, 5))


def test_perfect_predictions_score_one():
    ds = Dataset([sample([[0, 0.5, 0.5, 0.2, 0.2], [1, 0.2, 0.2, 0.1, 0.1]])])
    preds = [prediction([[40, 40, 60, 60], [15, 15, 25, 25]], [0.9, 0.8], [0, 1])]
    result = evaluate(preds, ds, 3)
    assert result.map50 == result.map50_95 == 1.0 and result.precision == result.recall == 1.0
    # class 2 has no ground truth: a NaN row, left out of the means, null in JSON
    assert result.ap_per_class.shape == (3, 10) and np.isnan(result.ap_per_class[2]).all()
    assert (result.ap_per_class[:2] == 1.0).all() and result.ap50_per_class == {0: 1.0, 1: 1.0}
    assert json.loads(json.dumps(result.to_dict(), allow_nan=False))["ap_per_class"][2] is None


def test_precision_recall_at_conf_and_per_threshold_ap():
    """Two ground truths. Detections: TP 0.9 with IoU 0.81 (true positive up to threshold 0.8), a duplicate
    0.6 on the same box (false positive), TP 0.1 below conf 0.25. At conf 0.25: 1 TP of 2 detections,
    recall 1/2. AP at IoU 0.5: precision 1 to recall 1/2, then 2/3 at recall 1 -> VOC 1/2 + 1/2 * 2/3."""
    ds = Dataset([sample([[0, 0.5, 0.5, 0.2, 0.2], [0, 0.15, 0.15, 0.1, 0.1]])])
    preds = [prediction([[40, 40, 58, 58], [40, 40, 60, 60], [10, 10, 20, 20]], [0.9, 0.6, 0.1], [0, 0, 0])]
    result = evaluate(preds, ds, 1)
    assert result.precision == 0.5 and result.recall == 0.5
    assert result.map50 == pytest.approx(0.5 + 0.5 * 2 / 3)
    # COCO: the duplicate takes the box left free at IoU 1.0 thresholds above 0.81; thresholds
    # 0.50..0.80 (7): 51 points at 1, 50 at 2/3; 0.85..0.95 (3): the duplicate is the first TP
    # (precision 1/2 to recall 1/2, then 2/3 at recall 1 -> envelope 2/3 everywhere)
    high, low = (51 + 50 * 2 / 3) / 101, 2 / 3
    np.testing.assert_allclose(result.ap_per_class[0], [high] * 7 + [low] * 3)


def test_false_positive_ranked_first():
    """Class 0: FP (0.9), TP (0.8) for 2 ground truths; the second is missed.
    Precision at the TP is 1/2, recall 1/2 -> VOC all-point AP = 0.5 * 0.5 = 0.25.
    COCO: 101 recall points, 0..0.5 (51 points) at precision 0.5 -> 25.5 / 101."""
    ds = Dataset([sample([[0, 0.5, 0.5, 0.2, 0.2], [0, 0.1, 0.1, 0.1, 0.1]])])
    preds = [prediction([[70, 70, 90, 90], [40, 40, 60, 60]], [0.9, 0.8], [0, 0])]
    result = evaluate(preds, ds, 1)
    assert result.map50 == pytest.approx(0.25)
    assert result.map50_coco == pytest.approx(51 * 0.5 / 101)


def brute_voc_ap(scores, is_tp, n_gt):
    """VOC 2010+ all-point interpolation, written out with loops."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    tp = fp = 0
    points = []
    for i in order:
        tp, fp = tp + is_tp[i], fp + (not is_tp[i])
        points.append((tp / n_gt, tp / (tp + fp)))
    ap, prev_r = 0.0, 0.0
    for k, (r, _) in enumerate(points):
        ap += (r - prev_r) * max(p for _, p in points[k:])
        prev_r = r
    return ap


def test_voc_ap_matches_brute_force_on_random_single_class():
    rng = np.random.default_rng(4)
    gts = rng.uniform(0.2, 0.8, (30, 2))
    ds = Dataset([sample([[0, x, y, 0.1, 0.1] for x, y in gts])])
    # half the detections sit on a ground truth (IoU 1), half nowhere near one
    on = [[(x - 0.05) * 100, (y - 0.05) * 100, (x + 0.05) * 100, (y + 0.05) * 100] for x, y in gts[:20]]
    off = [[1000 + i, 1000, 1010 + i, 1010] for i in range(20)]
    scores = rng.random(40)
    result = evaluate([prediction(on + off, scores, [0] * 40)], ds, 1)
    assert result.map50 == pytest.approx(brute_voc_ap(list(scores), [True] * 20 + [False] * 20, 30))


def coco_reference(preds, ds, num_classes, clip=True):
    """pycocotools on our labels; detections clipped to the image first, as Darknet's COCO writer does."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    images, anns, dets = [], [], []
    for i, (p, s) in enumerate(zip(preds, ds.items)):
        images.append({"id": i, "width": p.width, "height": p.height})
        boxes, classes = ground_truth_pixels(s, p.width, p.height)
        for b, c in zip(boxes, classes):
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": int(c), "iscrowd": 0,
                         "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "area": (b[2] - b[0]) * (b[3] - b[1])})
        boxes = np.clip(p.boxes, 0, [p.width, p.height] * 2) if clip else p.boxes
        for b, score, c in zip(boxes, p.scores, p.classes):
            dets.append({"image_id": i, "category_id": int(c), "score": float(score),
                         "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]]})
    gt = COCO()
    gt.dataset = {"images": images, "annotations": anns, "categories": [{"id": k} for k in range(num_classes)]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        run = COCOeval(gt, gt.loadRes(dets), "bbox")
        run.evaluate()
        run.accumulate()
        run.summarize()
    return run.stats[0], run.stats[1]


def check_against_pycocotools(net, ds):
    preds = predict(net.forward, net.heads, ds, 416, 416, progress=False)
    result = evaluate(preds, ds, 80)
    ref_map, ref_ap50 = coco_reference(preds, ds, 80)
    assert abs(result.map50_95 - ref_map) <= 0.005
    assert abs(result.map50_coco - ref_ap50) <= 0.005
    return result, preds


def test_matches_pycocotools_on_a_few_coco128_images(tiny_net):
    ds = load_dataset(COCO_FEW)
    ds.items = ds.items[:12]
    result, _ = check_against_pycocotools(tiny_net, ds)
    assert result.map50 > 0.1


def coco_json_reference(preds, ds):
    """pycocotools on the ORIGINAL COCO annotations (with crowd regions, which excuse detections on them)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(COCO128 / "annotations" / "instances_train2017_first128.json"))
    category = sorted(gt.getCatIds())
    dets = [{"image_id": int(item.image.stem), "category_id": category[c], "score": float(score),
             "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]]}
            for p, item in zip(preds, ds)
            for b, score, c in zip(np.clip(p.boxes, 0, [p.width, p.height] * 2), p.scores, p.classes)]
    with contextlib.redirect_stdout(io.StringIO()):
        run = COCOeval(gt, gt.loadRes(dets), "bbox")
        run.evaluate()
        run.accumulate()
        run.summarize()
    crowd = sum(a["iscrowd"] for a in gt.dataset["annotations"])
    return run.stats[0], len(gt.dataset["annotations"]) - crowd


@pytest.mark.slow
@pytest.mark.skipif(not COCO128.is_dir(), reason="the full coco128 lives in ../shared/data/coco128")
def test_matches_pycocotools_on_coco128(tiny_net):
    ds = load_dataset(COCO128)
    result, preds = check_against_pycocotools(tiny_net, ds)
    assert 0.2 < result.map50 < 0.5
    # sanity against the original json: same non-crowd boxes; crowd regions there only raise the mAP a little
    json_map, json_boxes = coco_json_reference(preds, ds)
    assert json_boxes == result.n_boxes == 929
    assert 0 <= json_map - result.map50_95 <= 0.01


def test_predict_in_batches_equals_detect_image_one_by_one(tiny_net):
    ds = load_dataset(COCO_FEW)
    ds.items = ds.items[1:3]
    preds = predict(tiny_net.forward, tiny_net.heads, ds, 416, 416, use_letterbox=False, batch=2, progress=False)
    for pred, item in zip(preds, ds):
        img = load_image(item.image)
        alone = detect_image(tiny_net.forward, tiny_net.heads, img, 416, 416, 0.005, 0.45, False)
        assert (pred.width, pred.height) == (img.shape[1], img.shape[0]) and len(pred) == len(alone) >= 10
        assert [d.class_id for d in pred] == [d.class_id for d in alone]
        np.testing.assert_allclose([d.confidence for d in pred], [d.confidence for d in alone], atol=1e-5)
        np.testing.assert_allclose([d.box for d in pred], [d.box for d in alone], atol=1e-2)


def test_fidelity_of_a_model_against_itself_is_one(tiny_net):
    ds = load_dataset(COCO_FEW)
    ds.items = ds.items[:10]
    preds = predict(tiny_net.forward, tiny_net.heads, ds, 416, 416, progress=False)
    reference = fidelity_dataset(preds, ds)
    assert reference.num_boxes >= 5
    assert evaluate(preds, reference, 80).map50 == pytest.approx(1.0)


def test_eval_cli_json_and_fidelity(tmp_path, tiny_weights):
    folder = coco128_folder(tmp_path / "ds", 3)
    runner = CliRunner()
    result = runner.invoke(main, ["eval", "yolov3-tiny", str(tiny_weights), "--data", str(folder), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["n_images"] == 3 and 0 < data["map50"] <= 1 and data["images_per_s"] > 0
    fidelity = runner.invoke(main, ["eval", "--data", str(folder), "--reference", "yolov3-tiny", str(tiny_weights),
                                    "--json"])
    fidelity = json.loads(fidelity.stdout)
    assert fidelity["map50"] == pytest.approx(1.0) and fidelity["ground_truth"].startswith("detections of yolov3")
    assert data["ground_truth"] == "labels"
    (folder / "labels" / "000000000025.txt").write_text("1 .5 .5 .1 .1\n\n99 .5 .5 .1 .1\n")
    bad = runner.invoke(main, ["eval", "--data", str(folder)])
    assert bad.exit_code == 2
    assert "000000000025.txt:line 3: class 99 but the network has 80 classes" in bad.stderr


def test_eval_cli_onnx_backend_agrees_with_numpy(tmp_path, tiny_weights):
    folder = coco128_folder(tmp_path / "ds", 3)
    results = {}
    for backend in ("numpy", "onnx"):
        out = CliRunner().invoke(main, ["eval", "yolov3-tiny", str(tiny_weights), "--data", str(folder),
                                        "--backend", backend, "--resize", "--json"])
        assert out.exit_code == 0, out.output
        results[backend] = json.loads(out.stdout)
    assert results["numpy"]["map50"] > 0.2
    for key in ("map50", "map50_95", "precision", "recall"):
        assert results["onnx"][key] == pytest.approx(results["numpy"][key], abs=1e-3)


def test_eval_cli_without_labels_points_to_reference(tmp_path):
    folder = coco128_folder(tmp_path / "ds", 2, labels=False)
    out = CliRunner().invoke(main, ["eval", "--data", str(folder)])
    assert out.exit_code == 2 and "Traceback" not in out.stderr
    assert "no image has a labelled object" in out.stderr and "--reference" in out.stderr


def test_eval_cli_refuses_a_data_file_for_another_class_count(tmp_path, tiny_weights):
    folder = coco128_folder(tmp_path / "ds", 1)
    (folder / "valid.txt").write_text("".join(f"{p}\n" for p in (folder / "images").iterdir()))
    (folder / "voc.data").write_text("classes = 20\nvalid = valid.txt\n")
    out = CliRunner().invoke(main, ["eval", "yolov3-tiny", str(tiny_weights), "--data", str(folder / "voc.data")])
    assert out.exit_code == 2 and "voc.data:classes: classes=20 but the network has 80 classes" in out.stderr
