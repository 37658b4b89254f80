"""Class specialization: sliced head rows equal the original's exactly, OpenCV DNN loads the result, the
kept classes' detections are unchanged (Darknet's NMS is per class), and bad class lists are refused."""
from __future__ import annotations

import re

import cv2
import numpy as np
import pytest

from dncompress.data import Dataset, Sample
from dncompress.detect import postprocess, read_names
from dncompress.errors import DncompressError
from dncompress.network import Network
from dncompress.prune.classes import head_rows, parse_class_list, remap_dataset, specialize_classes

from helpers import blob

VOC20 = [0, 1, 2, 3, 4, 5, 6, 8, 14, 15, 16, 17, 18, 19, 39, 56, 57, 58, 60, 62]


def test_head_rows_keep_box_objectness_and_the_chosen_classes():
    assert head_rows(2, 3, [2, 0]).tolist() == [0, 1, 2, 3, 4, 7, 5, 8, 9, 10, 11, 12, 15, 13]


def test_specialized_yolov3_tiny_rows_equal_the_original_and_opencv_agrees(tiny_net, tmp_path):
    ids = [16, 0, 2]  # dog, person, car: a new order too
    small = specialize_classes(tiny_net, ids)
    assert [h.classes for h in small.heads] == [3, 3]
    assert small.param_count() < tiny_net.param_count()
    x = blob()
    convs = {h.inputs[0] for h in tiny_net.heads}
    for head, big, mine in zip(tiny_net.heads, tiny_net.forward(x, keep=convs), small.forward(x, keep=convs)):
        np.testing.assert_array_equal(mine[0], big[0][head_rows(3, 80, ids)])
    small.save(tmp_path / "s.cfg", tmp_path / "s.weights")
    cv_net = cv2.dnn.readNetFromDarknet(str(tmp_path / "s.cfg"), str(tmp_path / "s.weights"))
    cv_net.enableWinograd(False)
    cv_net.setInput(x)
    theirs = cv_net.forward([f"conv_{i}" for i in sorted(convs)])
    ours = Network.from_cfg(tmp_path / "s.cfg", tmp_path / "s.weights").forward(x, keep=convs)
    for a, b in zip(ours, theirs):
        assert np.abs(a - b).max() <= 2e-4 * np.abs(a).max()
    # the kept classes' detections, renumbered, are the original's (NMS is per class)
    before = postprocess(tiny_net.heads, [o[0] for o in tiny_net.forward(x)], 768, 576, 0.05, 0.45, True)
    after = postprocess(small.heads, [o[0] for o in small.forward(x)], 768, 576, 0.05, 0.45, True)
    expected = sorted((ids.index(d.class_id), round(d.confidence, 6), d.box) for d in before if d.class_id in ids)
    assert expected and sorted((d.class_id, round(d.confidence, 6), d.box) for d in after) == expected


def test_parse_class_list_names_and_files(tmp_path):
    names = read_names(None, 80)
    assert parse_class_list("person, car,dog", names) == [0, 2, 16]
    (tmp_path / "voc.names").write_text("\n".join(names[i] for i in VOC20) + "\n")
    assert parse_class_list(str(tmp_path / "voc.names"), names) == VOC20
    with pytest.raises(DncompressError, match="unknown class 'carr'"):
        parse_class_list("person,carr", names)
    with pytest.raises(DncompressError, match="named twice"):
        parse_class_list("person,person", names)


def test_remap_dataset_matches_names_and_drops_other_classes(tmp_path):
    labels = np.array([[0, .5, .5, .1, .1], [16, .3, .3, .2, .2], [5, .1, .1, .1, .1]], np.float32)
    data = Dataset([Sample(tmp_path / "a.jpg", labels)])
    names = read_names(None, 80)
    out = remap_dataset(data, names, ["dog", "person"])
    assert out.items[0].labels[:, 0].tolist() == [1, 0]
    np.testing.assert_array_equal(out.items[0].labels[:, 1:], labels[:2, 1:])


def test_prune_cli_classes_alone_and_eval_maps_labels_by_name(tmp_path):
    from click.testing import CliRunner

    from helpers import COCO_FEW, small_network
    from dncompress.cli import main
    small_network(0).save(tmp_path / "m.cfg", tmp_path / "m.weights")
    out = str(tmp_path / "two")
    result = CliRunner().invoke(main, ["prune", str(tmp_path / "m.cfg"), str(tmp_path / "m.weights"),
                                       "--classes", "dog,person", "-o", out])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "two.names").read_text() == "dog\nperson\n"
    two = Network.from_cfg(f"{out}.cfg", f"{out}.weights")
    assert [h.classes for h in two.heads] == [2] * len(two.heads)
    result = CliRunner().invoke(main, ["eval", f"{out}.cfg", f"{out}.weights", "--data", str(COCO_FEW), "--json"])
    assert result.exit_code == 0, result.output
    import json
    fields = json.loads(result.output[result.output.index("{"):])
    labels = np.concatenate([np.loadtxt(p, ndmin=2)[:, 0] for p in (COCO_FEW / "labels").glob("*.txt")])
    assert fields["n_boxes"] == int(np.isin(labels, [0, 16]).sum())
    bad = CliRunner().invoke(main, ["prune", str(tmp_path / "m.cfg"), str(tmp_path / "m.weights"),
                                    "--classes", "dog,unicorn", "-o", str(tmp_path / "bad")])
    assert bad.exit_code == 2 and "unknown class 'unicorn'" in bad.output
    assert not list(tmp_path.glob("bad*"))


@pytest.mark.slow
def test_prune_cli_classes_with_a_cost_target_prunes_the_trunk_too(tiny_weights, tmp_path):
    """--classes beside --target-bflops (no --ratio) once wrote the specialized model unpruned, silently."""
    from click.testing import CliRunner

    from helpers import CFGS, ROOT, four_image_dataset
    from dncompress.cli import main
    from dncompress.stats import summary
    cfg = tmp_path / "tiny192.cfg"
    cfg.write_text((CFGS / "yolov3-tiny.cfg").read_text().replace("=416", "=192"))
    out = tmp_path / "p"
    data = four_image_dataset(tmp_path)
    result = CliRunner().invoke(main, ["prune", str(cfg), str(tiny_weights), "--classes", "person,kite,giraffe,zebra",
                                       "--target-bflops", "0.6", "--calib", str(ROOT / "samples"),
                                       "--calib-images", "4", "--data", str(data), "--min-fidelity", "0",
                                       "-o", str(out)])
    assert result.exit_code == 0, result.output
    # --data is measured on the specialized classes (labels renumbered by name), not skipped
    assert re.search(r"mAP@0.5 \d\.\d{4} -> \d\.\d{4}", result.output), result.output
    net = Network.from_cfg(f"{out}.cfg", f"{out}.weights")
    assert [h.classes for h in net.heads] == [4, 4]
    assert summary(net)["bflops"] <= 0.6 * 1.01
    assert (tmp_path / "p.names").read_text().split() == ["person", "kite", "giraffe", "zebra"]
