"""`dncompress classify`: top-5 of a Darknet classifier against OpenCV DNN on the same weights and blob."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from dncompress.classify import resize_min_crop
from dncompress.cli import main
from dncompress.detect import load_image
from dncompress.network import Network
from helpers import IMAGES

# a small classifier: conv/maxpool stack, 1x1 conv to 10 classes, global avgpool, softmax, cost
CLASSIFIER = """[net]
width=64
height=64
channels=3
[convolutional]
batch_normalize=1
filters=16
size=3
stride=1
pad=1
activation=leaky
[maxpool]
size=2
stride=2
[convolutional]
batch_normalize=1
filters=32
size=3
stride=1
pad=1
activation=leaky
[maxpool]
size=2
stride=2
[convolutional]
filters=10
size=1
stride=1
pad=1
activation=linear
[avgpool]
[softmax]
groups=1
[cost]
type=sse
"""


def test_classify_top5_matches_opencv(tmp_path):
    cfg, weights = tmp_path / "c.cfg", tmp_path / "c.weights"
    cfg.write_text(CLASSIFIER)
    net = Network.from_cfg(cfg)
    net.init_random(3)
    net.calibrate_batchnorm(np.random.default_rng(0).random((2, 3, 64, 64), dtype=np.float32))
    net.save(cfg, weights)
    names = tmp_path / "names.txt"
    names.write_text("\n".join(f"class{i}" for i in range(10)) + "\n")
    result = CliRunner().invoke(main, ["classify", str(cfg), str(weights), "--image", str(IMAGES[0]),
                                       "--names", str(names), "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    top = json.loads(result.stdout)[0]["top"]
    cv_net = cv2.dnn.readNetFromDarknet(str(cfg), str(weights))
    cv_net.setInput(resize_min_crop(load_image(IMAGES[0]), 64, 64))
    probs = cv_net.forward().reshape(-1)
    assert [p["class_id"] for p in top] == list(np.argsort(-probs)[:5])
    assert [p["class"] for p in top] == [f"class{i}" for i in np.argsort(-probs)[:5]]
    np.testing.assert_allclose([p["score"] for p in top], np.sort(probs)[::-1][:5], atol=1e-5)


@pytest.mark.real_weights
def test_classify_refuses_detectors(tmp_path):
    result = CliRunner().invoke(main, ["classify", "yolov3-tiny", "--image", str(IMAGES[0])])
    assert result.exit_code == 2 and "use `dncompress detect`" in result.output


def test_resize_min_crop_shape_and_centre():
    img = np.random.default_rng(0).random((30, 60, 3), dtype=np.float32)
    blob = resize_min_crop(img, 20, 20)
    assert blob.shape == (1, 3, 20, 20)
    # shorter side 30 -> 20, so the width becomes 40 and the crop starts at column 10
    from dncompress.detect import darknet_resize
    np.testing.assert_allclose(blob[0].transpose(1, 2, 0), darknet_resize(img, 40, 20)[:, 10:30])
