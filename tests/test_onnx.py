"""ONNX export against the numpy engine: raw heads, decode, NMS, dynamic batch, every layer type."""
import functools
import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from dncompress.cfg import parse_cfg
from dncompress.detect import decode_region, decode_yolo, iou_matrix, load_image, nms, preprocess
from dncompress.errors import DncompressError
from dncompress.export import EMITTERS, build_onnx, onnx_forward, save_onnx
from dncompress.network import Network

from conftest import ROOT, random_network

TOL = 1e-4
DOG = ROOT / "samples" / "dog.jpg"


@functools.lru_cache(maxsize=None)
def random_net(name):
    """Random-weight packaged networks, built once per test session."""
    return random_network(name)


def batch(net, n=1, seed=1):
    return np.random.default_rng(seed).random((n, *net.input_shape), dtype=np.float32)


def assert_parity(net, model, x):
    got, want = onnx_forward(model)(x), net.forward(x)
    assert [g.shape for g in got] == [w.shape for w in want]
    for g, w in zip(got, want):
        assert np.abs(g - w).max() <= TOL


def test_yolov3_tiny_real_weights_parity(tiny_net):
    assert_parity(tiny_net, build_onnx(tiny_net), preprocess(load_image(DOG), 416, 416))


@pytest.mark.parametrize("name", ["yolov4-tiny", "yolov2-tiny",
                                  pytest.param("yolov3", marks=pytest.mark.slow)])
def test_random_weights_parity(name):
    net = random_net(name)
    assert_parity(net, build_onnx(net), batch(net))


TOY = """[net]
width=20
height=20
channels=3
[convolutional]
filters=8
size=3
stride=2
pad=1
activation=mish
[convolutional]
batch_normalize=1
filters=8
size=3
groups=2
pad=1
activation=swish
[shortcut]
from=-2
activation=leaky
[maxpool]
size=3
stride=2
padding=2
[route]
layers=-1
groups=4
group_id=3
[upsample]
stride=2
scale=0.5
[route]
layers=-1,-4
[maxpool]
size=2
stride=1
[dropout]
probability=.3
[convolutional]
filters=18
size=1
activation=logistic
[convolutional]
filters=18
size=1
activation=relu
[region]
anchors=1,1,2,2,3,3
classes=1
num=3
softmax=1
[route]
layers=-2
[avgpool]
[convolutional]
filters=12
size=1
activation=linear
[yolo]
mask=0,1
anchors=10,14,23,27,37,58
classes=1
num=3
scale_x_y=1.1
"""


@pytest.fixture(scope="module")
def toy_net():
    net = Network(parse_cfg(TOY, "toy.cfg"), "toy.cfg")
    net.init_random(3)
    return net


@pytest.mark.parametrize("opset", [13, 17, 21])
def test_every_layer_type_parity(toy_net, opset):
    """mish, swish, logistic, relu, grouped conv, shortcut, asymmetric maxpool pads,
    route groups (Slice), scaled upsample, concat, dropout, avgpool, region and yolo heads."""
    assert {layer.type for layer in toy_net.layers} <= set(EMITTERS)
    model = build_onnx(toy_net, opset=opset, dynamic_batch=True)
    assert {"Slice", "Resize", "Concat", "Softplus", "GlobalAveragePool"} <= \
        {n.op_type for n in model.graph.node}
    assert_parity(toy_net, model, batch(toy_net, 2) * 4 - 2)


def test_maxpool_padding_beyond_kernel_uses_explicit_pad():
    """Darknet's size=1 padding=1 adds a row and column that see only padding (-inf, like the engine);
    onnxruntime refuses MaxPool pads >= kernel, so the export pads explicitly."""
    cfg = "[net]\nwidth=5\nheight=4\nchannels=6\n[maxpool]\nsize=1\nstride=1\npadding=1\n" \
          "[yolo]\nmask=0\nanchors=1,1\nclasses=1\n"
    net = Network(parse_cfg(cfg))
    model = build_onnx(net)
    assert "Pad" in {n.op_type for n in model.graph.node}
    x = batch(net) - 0.5
    got, want = onnx_forward(model)(x)[0], net.forward(x)[0]
    assert got.shape == (1, 6, 5, 6) and np.isneginf(want[:, :, -1]).all()
    np.testing.assert_array_equal(got, want)


def decoded_reference(net, raw):
    """detect.decode_yolo / decode_region on each head of image 0, concatenated in head order."""
    parts = [(decode_yolo if h.type == "yolo" else decode_region)(h, out[0]) for h, out in zip(net.heads, raw)]
    return [np.concatenate([p[i] for p in parts]) for i in range(3)]


@pytest.mark.parametrize("name", ["yolov4-tiny", "yolov2-tiny", "toy"])
def test_decode_matches_detect_decoders(name, toy_net):
    net = toy_net if name == "toy" else random_net(name)
    x = batch(net)
    got = onnx_forward(build_onnx(net, decode=True))(x)
    for g, w in zip(got, decoded_reference(net, net.forward(x))):
        assert g.shape[1:] == w.shape
        np.testing.assert_allclose(g[0], w, rtol=1e-4, atol=TOL)


def test_in_graph_nms_matches_detect_nms(tiny_net):
    x = preprocess(load_image(DOG), 416, 416)
    thresh, iou = 0.3, 0.45
    boxes, objectness, scores, selected = onnx_forward(build_onnx(tiny_net, decode=True, nms=True,
                                                                  thresh=thresh, iou=iou))(x)
    corners = np.concatenate([boxes[0, :, :2] - boxes[0, :, 2:] / 2, boxes[0, :, :2] + boxes[0, :, 2:] / 2], 1)
    score = objectness[0, :, None] * scores[0]
    expected = set()
    for k in range(score.shape[1]):
        candidates = np.flatnonzero(score[:, k] > thresh)
        expected |= {(k, int(i)) for i in candidates[nms(corners[candidates], score[candidates, k], iou)]}
    assert len(expected) >= 4
    assert {(int(k), int(i)) for _, k, i in selected} == expected
    assert iou_matrix(corners[:1], corners[:1])[0, 0] == pytest.approx(1.0)


def test_dynamic_batch_of_two(tiny_net):
    model = build_onnx(tiny_net, dynamic_batch=True)
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"
    assert_parity(tiny_net, model, batch(tiny_net, 2))


def test_conv_hook_wraps_every_conv_weight(tiny_net):
    """The quantization entry point: a hook puts QuantizeLinear/DequantizeLinear on each conv weight."""
    seen = []

    def qdq(b, layer, x, w):
        seen.append(layer.index)
        scale = b.const(f"conv_{layer.index}_wscale", np.float32(np.abs(layer.folded()[0]).max() / 127))
        zero = b.const(f"conv_{layer.index}_wzero", np.int64(0))
        zero = b.node("Cast", [zero], f"conv_{layer.index}_wzero8", to=onnx.TensorProto.INT8)
        q = b.node("QuantizeLinear", [w, scale, zero], f"conv_{layer.index}_wq")
        return x, b.node("DequantizeLinear", [q, scale, zero], f"conv_{layer.index}_wdq")

    model = build_onnx(tiny_net, conv_hook=qdq)
    convs = [layer.index for layer in tiny_net.layers if layer.type == "convolutional"]
    assert seen == convs
    assert sum(n.op_type == "DequantizeLinear" for n in model.graph.node) == len(convs)
    # reference: the engine with every folded conv weight rounded to the same int8 grid in numpy
    reference = Network(tiny_net.sections)
    reference.load_payload(tiny_net.header, np.concatenate([t.ravel() for t in tiny_net.weight_tensors()]))
    for layer in reference.layers:
        if layer.type == "convolutional":
            w, b = layer.folded()
            scale = np.float32(np.abs(w).max() / 127)
            layer._folded = (np.round(w / scale).clip(-128, 127).astype(np.float32) * scale, b)
    x = preprocess(load_image(DOG), 416, 416)
    assert_parity(reference, model, x)
    assert max(np.abs(g - w).max() for g, w in zip(onnx_forward(model)(x), tiny_net.forward(x))) > 0.01


def test_save_and_errors(tmp_path, tiny_net):
    path = tmp_path / "m.onnx"
    save_onnx(build_onnx(tiny_net), path)
    onnx.checker.check_model(str(path))
    assert_parity(tiny_net, str(path), batch(tiny_net))
    with pytest.raises(DncompressError, match="--nms needs --decode"):
        build_onnx(tiny_net, nms=True)
    with pytest.raises(DncompressError, match="opset 9"):
        build_onnx(tiny_net, opset=9)
    unloaded = Network(tiny_net.sections)
    with pytest.raises(DncompressError, match="no weights loaded"):
        build_onnx(unloaded)


def run(*args):
    from dncompress.cli import main
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_export_cli_checks_and_refuses_overwrite(tmp_path, tiny_weights, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run("export", "yolov3-tiny", tiny_weights, "--decode", "--nms", "--dynamic-batch")
    assert result.exit_code == 0, result.output
    diff = float(result.stdout.rsplit(" ", 1)[1])
    assert 0 < diff <= TOL
    model = onnx.load(tmp_path / "yolov3-tiny.onnx")
    assert [o.name for o in model.graph.output] == ["boxes", "objectness", "class_scores", "selected_indices"]
    again = run("export", "yolov3-tiny", tiny_weights)
    assert again.exit_code == 2 and "--force" in again.stderr
    assert run("export", "yolov3-tiny", tiny_weights, "--force", "--imgsz", "320", "256").exit_code == 0
    shape = onnx.load(tmp_path / "yolov3-tiny.onnx").graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in shape] == [1, 3, 256, 320]


def test_export_cli_fails_when_onnxruntime_disagrees(tmp_path, tiny_weights, monkeypatch):
    """A wrong emitter (bilinear instead of nearest upsampling) must make the export exit non-zero."""
    def bilinear(b, layer, xs):
        scales = b.const("scales", [1.0, 1.0, 2.0, 2.0])
        return b.node("Resize", [xs[0], "", scales], "bad_upsample", mode="linear")
    monkeypatch.setitem(EMITTERS, "upsample", bilinear)
    result = run("export", "yolov3-tiny", tiny_weights, "-o", tmp_path / "bad.onnx")
    assert result.exit_code == 2 and "differs from the numpy engine" in result.stderr


def test_detect_backend_onnx_same_detections(tmp_path, tiny_weights):
    outputs = []
    for backend in ("numpy", "onnx"):
        result = run("detect", DOG, "--backend", backend, "--out", tmp_path / backend, "--json")
        assert result.exit_code == 0, result.output
        outputs.append(json.loads(result.stdout)[0]["detections"])
    numpy_dets, onnx_dets = outputs
    assert len(numpy_dets) >= 5 and [d["class"] for d in numpy_dets] == [d["class"] for d in onnx_dets]
    for a, b in zip(numpy_dets, onnx_dets):
        assert abs(a["confidence"] - b["confidence"]) <= 1e-4
        np.testing.assert_allclose(a["box"], b["box"], atol=0.05)
