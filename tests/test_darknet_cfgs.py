"""AlexeyAB/darknet's 93 cfgs (../shared/data/cfg/alexeyab): `stats` on all of them, and for each that
works, random weights with calibrated BN run by the engine against OpenCV DNN (when OpenCV loads the
cfg) and against onnxruntime on an ONNX export."""
from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pytest

from dncompress.errors import DncompressError
from dncompress.export.onnx import build_onnx, onnx_forward
from dncompress.network import Network
from dncompress.stats import summary

from helpers import ROOT, SHARED
from darknet_reference import opencv_relative_diff, random_calibrated

# ../shared beside the checkout (main), or two levels up (a worktree under wt/)
ALEXEYAB = next((d / "cfg" / "alexeyab" for d in (SHARED, ROOT.parent.parent / "shared" / "data")
                 if (d / "cfg" / "alexeyab").is_dir()), SHARED / "cfg" / "alexeyab")
CFGS = sorted(ALEXEYAB.glob("*.cfg"))
pytestmark = pytest.mark.skipif(len(CFGS) != 93, reason="needs ../shared/data/cfg/alexeyab (93 cfgs)")
# measured: 85 of 93 (the rest: [rnn] [gru] [lstm] [crnn] x6, dilation=2, a missing comma)
STATS_WORKING = 85
SIZE = 128
# cfgs whose [crop] needs their own input size, and the deep cfgs whose float32 differences with OpenCV,
# accumulated over 100+ random layers, exceed 1e-4 of the output scale (measured at 96 and 128)
FAST = {"yolov3-tiny.cfg", "yolov4-tiny.cfg", "yolov7-tiny.cfg", "yolov2-tiny.cfg", "enet-coco.cfg", "darknet.cfg",
        "tiny.cfg", "writing.cfg", "yolov3-tiny-prn.cfg", "efficientnet_b0.cfg"}
TOLERANCE = {"yolov7-tiny.cfg": 2e-4, "cd53paspp-gamma.cfg": 3e-4, "csresnext50-panet-spp.cfg": 2e-4,
             "csresnext50-panet-spp-original-optimal.cfg": 2e-4, "yolov2.cfg": 2e-4}


# measured in the slow run (random weights, 128x128), max |diff| / max |output|, above 1e-4 through float32
# drift over 100+ random layers (not verified layer by layer); cspx-p7-mish: BN calibrated on 2 images of
# 1x1 maps overflows to NaN
KNOWN_DRIFT = {
    "cd53paspp-gamma.cfg": "onnxruntime 1.07e-4", "csresnext50-panet-spp.cfg": "onnxruntime 1.02e-4",
    "csresnext50-panet-spp-original-optimal.cfg": "onnxruntime 1.02e-4", "cspx-p7-mish.cfg": "NaN from BN calibration",
    "yolo.2.0.cfg": "OpenCV 1.1e-4", "yolov3-spp.cfg": "OpenCV 1.4e-4", "yolov3-voc.cfg": "OpenCV 1.1e-4",
    "yolov3-voc.yolov3-giou-40.cfg": "OpenCV 1.1e-4", "yolov3_5l.cfg": "OpenCV 2.1e-4",
}


def load(path: Path, **kwargs) -> Network:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Network.from_cfg(path, **kwargs)


def logits_network(net: Network) -> Network:
    """`net` with its logistic head convs made linear: compared on logits, as with OpenCV (random deep
    networks reach logits of 1000s, where a 1e-5 relative difference moves a sigmoid by 1e-3)."""
    sections = [s.copy() for s in net.sections]
    for head in net.heads:
        conv = net.layers[head.inputs[0]]
        if conv.type == "convolutional" and conv.activation == "logistic":
            sections[conv.index + 1].options["activation"] = "linear"
    return net.copy(sections)


def working() -> list[tuple[Path, int, bool]]:
    """(cfg, input size, slow) for every cfg `stats` accepts."""
    cases = []
    for path in CFGS:
        try:
            net = load(path, max_activation_mb=1e9)
        except DncompressError:
            continue
        # [crop] needs the cfg's own size; small-input cfgs (go 19x19, cifar 28x28) keep theirs
        size = net.info.width if "[crop]" in path.read_text() or net.info.width < SIZE else SIZE
        cases.append((path, size, path.name not in FAST))
    return cases


def test_stats_on_alexeyab_cfgs():
    ok, failures = [], {}
    for path in CFGS:
        try:
            figures = summary(load(path, max_activation_mb=1e9))
            assert figures["bflops"] > 0 and figures["params"] > 0
            ok.append(path.name)
        except DncompressError as err:
            failures[path.name] = str(err)
    assert len(ok) >= STATS_WORKING, failures
    for name, message in failures.items():
        # one line naming the file, the line and the section
        assert re.search(rf"{re.escape(name)}:line \d+ \[\w+\]", message) and "\n" not in message, message


def test_darknet_bflops():
    """Billions of operations as pjreddie.com's ImageNet and YOLO tables give them (2 x conv/connected
    MACs at the cfg's size)."""
    expected = {"alexnet.cfg": 2.27, "vgg-16.cfg": 30.94, "extraction.cfg": 8.52, "darknet53.cfg": 18.57,
                "densenet201.cfg": 10.85, "yolov3.cfg": 65.86, "yolov2.cfg": 29.47, "yolov3-tiny.cfg": 5.56}
    for name, bflops in expected.items():
        net = load(ALEXEYAB / name, max_activation_mb=1e9)
        assert summary(net)["bflops"] == pytest.approx(bflops, abs=0.011), name


@pytest.mark.parametrize("path, size", [
    pytest.param(p, s, id=p.name, marks=([pytest.mark.slow] if slow else []) + (
        [pytest.mark.xfail(reason=f"measured {KNOWN_DRIFT[p.name]} > 1e-4", strict=False)]
        if p.name in KNOWN_DRIFT else [])) for p, s, slow in working()])
def test_engine_matches_opencv_and_onnx(path, size):
    import cv2
    net = random_calibrated(path, size)
    x = np.random.default_rng(1).random((1, *net.input_shape), dtype=np.float32)
    logits = logits_network(net)
    ours = logits.forward(x)
    theirs = onnx_forward(build_onnx(logits))(x)
    for a, b in zip(theirs, ours):
        assert np.abs(a - b).max() <= 1e-4 * np.abs(b).max(), "onnxruntime"
    if any(getattr(layer, "xnor", False) for layer in net.layers):
        # measured: darknet53_448_xnor differs from OpenCV by 220x its output scale, while onnxruntime (with
        # the binarization in the graph) matches above and tests/test_darknet_layers.py checks xnor against
        # Darknet's C loop: OpenCV's importer runs xnor=1 convs as float convs
        pytest.skip("OpenCV DNN runs xnor=1 convs as float convs; compared with onnxruntime only")
    try:
        diff = opencv_relative_diff(net, x)
    except (cv2.error, KeyError) as err:
        pytest.skip(f"OpenCV DNN does not run this cfg: {str(err).strip().splitlines()[-1][:120]}")
    assert diff <= TOLERANCE.get(path.name, 1e-4)
