"""ONNX export: onnxruntime against the numpy engine, decode and NMS against numpy references, CLI."""
import numpy as np
import pytest
from click.testing import CliRunner

from dncompress.cfg import parse_cfg
from dncompress.cli import main
from dncompress.detect import decode_image, nms
from dncompress.export.onnx import build_onnx, onnx_forward, parity
from dncompress.network import Network

from helpers import ROOT, random_network

TOL = 1e-4

EVERY_LAYER = """[net]
width=64
height=48
channels=3
[convolutional]
batch_normalize=1
filters=8
size=3
stride=1
pad=1
activation=mish
[maxpool]
size=3
stride=2
[convolutional]
batch_normalize=1
filters=8
size=3
stride=2
pad=1
activation=swish
[route]
layers=-1
groups=2
group_id=1
[convolutional]
filters=8
size=1
activation=relu
[shortcut]
from=-3
activation=leaky
[maxpool]
size=2
stride=1
[dropout]
probability=.5
[upsample]
stride=2
[route]
layers=-1,-8
[convolutional]
filters=21
size=1
activation=logistic
[convolutional]
filters=21
size=3
pad=1
activation=linear
[yolo]
mask=0,1,2
anchors=4,5, 8,9, 12,13
classes=2
"""


def every_layer_network():
    net = Network(parse_cfg(EVERY_LAYER, "every.cfg"), "every.cfg")
    net.init_random(3)
    net.calibrate_batchnorm(np.random.default_rng(3).random((2, *net.input_shape), dtype=np.float32))
    return net


@pytest.mark.parametrize("make", [every_layer_network, lambda: random_network("yolov4-tiny", 1),
                                  lambda: random_network("yolov2-tiny", 1),
                                  pytest.param(lambda: random_network("yolov3", 1), marks=pytest.mark.slow)],
                         ids=["every-layer", "yolov4-tiny", "yolov2-tiny", "yolov3"])
def test_random_networks_match_onnxruntime(make):
    net = make()
    assert parity(net, build_onnx(net)) <= TOL


def test_real_yolov3_tiny_matches_onnxruntime_on_images(tiny_net):
    import cv2
    forward = onnx_forward(build_onnx(tiny_net))
    for name in ("dog.jpg", "kite.jpg"):
        blob = cv2.dnn.blobFromImage(cv2.imread(str(ROOT / "samples" / name)), 1 / 255, (416, 416), swapRB=True)
        for a, b in zip(tiny_net.forward(blob), forward(blob)):
            assert a.shape == b.shape and np.abs(a - b).max() <= TOL


@pytest.mark.parametrize("make", [lambda: random_network("yolov4-tiny", 2), lambda: random_network("yolov2-tiny", 2),
                                  every_layer_network], ids=["yolo+scale_x_y", "region+softmax", "every-layer"])
def test_decode_matches_numpy_decode_with_dynamic_batch(make):
    net = make()
    assert parity(net, build_onnx(net, decode=True, dynamic_batch=True), decode=True, batch=2) <= TOL


def test_in_graph_nms_matches_numpy_nms(tiny_net):
    from dncompress.detect import load_image, preprocess
    x = preprocess(load_image(ROOT / "samples" / "dog.jpg"), 416, 416)
    boxes, scores, selected = onnx_forward(build_onnx(tiny_net, decode=True, nms=True, nms_score=0.05))(x)
    b, obj, cls = decode_image(tiny_net.heads, [o[0] for o in tiny_net.forward(x)])
    corners = np.concatenate([b[:, :2] - b[:, 2:] / 2, b[:, :2] + b[:, 2:] / 2], axis=1)
    expected = set()
    for c in range(80):
        candidates = np.flatnonzero(obj * cls[:, c] > 0.05)
        if len(candidates):
            kept = candidates[nms(corners[candidates], (obj * cls[:, c])[candidates], 0.45)][:100]
            expected |= {(c, int(i)) for i in kept}
    assert len(expected) > 5
    assert {(int(c), int(i)) for _, c, i in selected} == expected


def test_detect_backends_agree_on_dog(tmp_path, tiny_weights):
    runner = CliRunner()
    outs = [runner.invoke(main, ["detect", str(ROOT / "samples" / "dog.jpg"), "--backend", backend, "--json",
                                 "--out", str(tmp_path / backend)]) for backend in ("numpy", "onnx")]
    import json
    dets = [json.loads(o.stdout)[0]["detections"] for o in outs]
    assert [d["class"] for d in dets[0]] == [d["class"] for d in dets[1]] and len(dets[0]) >= 5
    for a, b in zip(*dets):
        assert abs(a["confidence"] - b["confidence"]) < 1e-4
        assert np.allclose(a["box"], b["box"], atol=0.05)


def test_export_cli_writes_checks_and_refuses_overwrite(tmp_path, tiny_weights):
    out = tmp_path / "m.onnx"
    runner = CliRunner()
    first = runner.invoke(main, ["export", "yolov3-tiny", str(tiny_weights), "-o", str(out), "--decode"])
    assert first.exit_code == 0, first.output
    assert "of the output scale" in first.stdout and out.stat().st_size > 30e6
    again = runner.invoke(main, ["export", "-o", str(out)])
    assert again.exit_code == 2 and "--force" in again.stderr
    bad = runner.invoke(main, ["export", "-o", str(tmp_path / "x.onnx"), "--nms"])
    assert bad.exit_code == 2 and "--nms needs --decode" in bad.stderr and not (tmp_path / "x.onnx").exists()
