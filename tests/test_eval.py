"""mAP against hand computations, a brute-force VOC formula and pycocotools; fidelity; the eval CLI."""
import contextlib
import io
import json

import numpy as np
import pytest
from click.testing import CliRunner

from dncompress.cli import main
from dncompress.data import Dataset, Sample, load_dataset
from dncompress.eval import ImagePrediction, evaluate, fidelity_dataset, ground_truth_pixels, predict

from conftest import COCO128


def prediction(boxes, scores, classes, size=100):
    return ImagePrediction(size, size, np.array(boxes, float).reshape(-1, 4), np.array(scores, float),
                           np.array(classes, int))


def sample(rows):
    return Sample(None, np.array(rows, np.float32).reshape(-1, 5))


def test_perfect_predictions_score_one():
    ds = Dataset([sample([[0, 0.5, 0.5, 0.2, 0.2], [1, 0.2, 0.2, 0.1, 0.1]])])
    preds = [prediction([[40, 40, 60, 60], [15, 15, 25, 25]], [0.9, 0.8], [0, 1])]
    result = evaluate(preds, ds, 2)
    assert result.map50 == result.map50_95 == 1.0 and result.precision == result.recall == 1.0


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


def coco_reference(preds, ds, num_classes):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    images, anns, dets = [], [], []
    for i, (p, s) in enumerate(zip(preds, ds.items)):
        images.append({"id": i, "width": p.width, "height": p.height})
        boxes, classes = ground_truth_pixels(s, p.width, p.height)
        for b, c in zip(boxes, classes):
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": int(c), "iscrowd": 0,
                         "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "area": (b[2] - b[0]) * (b[3] - b[1])})
        for b, score, c in zip(p.boxes, p.scores, p.classes):
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
    return result


def test_matches_pycocotools_on_a_few_coco128_images(tiny_net):
    ds = load_dataset(COCO128)
    ds.items = ds.items[:12]
    result = check_against_pycocotools(tiny_net, ds)
    assert result.map50 > 0.1


@pytest.mark.slow
def test_matches_pycocotools_on_coco128(tiny_net):
    result = check_against_pycocotools(tiny_net, load_dataset(COCO128))
    assert 0.2 < result.map50 < 0.5


def test_fidelity_of_a_model_against_itself_is_one(tiny_net):
    ds = load_dataset(COCO128)
    ds.items = ds.items[:10]
    preds = predict(tiny_net.forward, tiny_net.heads, ds, 416, 416, progress=False)
    reference = fidelity_dataset(preds, ds)
    assert reference.num_boxes >= 5
    assert evaluate(preds, reference, 80).map50 == pytest.approx(1.0)


def test_eval_cli_json_and_fidelity(tmp_path, tiny_weights):
    folder = tmp_path / "ds"
    (folder / "images").mkdir(parents=True)
    (folder / "labels").mkdir()
    for image in sorted((COCO128 / "images").glob("*.jpg"))[:4]:
        (folder / "images" / image.name).write_bytes(image.read_bytes())
        (folder / "labels" / f"{image.stem}.txt").write_bytes((COCO128 / "labels" / f"{image.stem}.txt").read_bytes())
    runner = CliRunner()
    result = runner.invoke(main, ["eval", "yolov3-tiny", str(tiny_weights), "--data", str(folder), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["n_images"] == 4 and 0 < data["map50"] <= 1 and data["images_per_s"] > 0
    fidelity = runner.invoke(main, ["eval", "--data", str(folder), "--reference", "yolov3-tiny", str(tiny_weights),
                                    "--json"])
    assert json.loads(fidelity.stdout)["map50"] == pytest.approx(1.0)
    (folder / "labels" / f"{sorted((folder / 'images').glob('*.jpg'))[0].stem}.txt").write_text("99 .5 .5 .1 .1\n")
    bad = runner.invoke(main, ["eval", "--data", str(folder)])
    assert bad.exit_code == 2 and "class 99 but the network has 80 classes" in bad.stderr
