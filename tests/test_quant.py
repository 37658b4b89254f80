"""Quantization: quantizers against direct formulas, [quantize_convolutional] semantics, formats (darknet in
OpenCV, packed round trip, QDQ ONNX in onnxruntime), CLI."""
import cv2
import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from dncompress.cfg import parse_cfg, read_cfg, write_cfg
from dncompress.cli import main
from dncompress.data import calibration_batch
from dncompress.detect import detect_image, load_image
from dncompress.engine.quantize import (affine_params, dequantize, dorefa_activations, dorefa_weights,
                                        fake_quantize, quantize, signed_range, snap_to_grid)
from dncompress.export.onnx import onnx_forward
from dncompress.network import Network
from dncompress.quant.apply import QuantConfig, layer_bits, plain_convolutional, quantize_network
from dncompress.quant.packed import read_packed, write_packed
from dncompress.quant.qdq import build_qdq_onnx

from helpers import CFGS, COCO_FEW, ROOT


@pytest.fixture(scope="module")
def calib():
    return calibration_batch(COCO_FEW, 6, 416, 416)


@pytest.mark.parametrize("bits", range(2, 9))
def test_round_trip_exact_on_grid(bits):
    rng = np.random.default_rng(bits)
    qmin, qmax = signed_range(bits)
    q = rng.integers(qmin, qmax + 1, 1000)
    scale = 0.0173
    assert np.array_equal(quantize(dequantize(q, scale, 0), scale, 0, qmin, qmax), q)
    w = rng.normal(size=(6, 3, 3, 3)).astype(np.float32)
    for per_channel in (True, False):
        once = snap_to_grid(w, bits, per_channel)
        assert np.array_equal(snap_to_grid(once, bits, per_channel), once)
        levels = [len(np.unique(c)) for c in once] if per_channel else [len(np.unique(once))]
        assert max(levels) <= 2 * qmax + 1


def test_affine_params_cover_the_range_and_zero():
    scale, zero = affine_params(-1.0, 3.0, 8)
    assert scale == pytest.approx(4 / 255) and zero == 64
    x = np.array([-1.0, 0.0, 3.0, 5.0])
    np.testing.assert_allclose(fake_quantize(x, scale, zero, 0, 255), [-64 * scale, 0.0, 191 * scale, 191 * scale])


def test_dorefa_matches_the_convention_formula():
    w = np.random.default_rng(0).normal(size=(4, 2, 3, 3))
    k, n = 3, 2 ** 3 - 1
    t = np.tanh(w)
    t = t / (2 * np.abs(t).max()) + 0.5
    np.testing.assert_allclose(dorefa_weights(w.astype(np.float32), k), 2 * np.round(t * n) / n - 1, atol=1e-6)
    np.testing.assert_allclose(dorefa_weights(w.astype(np.float32), 1), np.sign(w) * np.abs(w).mean(), atol=1e-6)
    x = np.linspace(-5, 20, 101)
    np.testing.assert_allclose(dorefa_activations(x.astype(np.float32), 4), np.round(np.clip(0.1 * x, 0, 1) * 15) / 15,
                               atol=1e-6)


def test_public_quantize_convolutional_without_keys_uses_dorefa_8(tiny_weights):
    """A file written by the public projects: [convolutional] renamed, no bit keys."""
    text = (CFGS / "yolov3-tiny.cfg").read_text().replace("[convolutional]", "[quantize_convolutional]", 3)
    net = Network(parse_cfg(text, "public.cfg"), "public.cfg")
    net.load_weights(tiny_weights)
    layer = net.layers[0]
    assert (layer.type, layer.bitw, layer.bita, layer.method) == ("quantize_convolutional", 8, 8, "dorefa")
    reference = Network.from_cfg(CFGS / "yolov3-tiny.cfg", tiny_weights)
    x = np.random.default_rng(0).random((1, 3, 416, 416), dtype=np.float32)
    expected = reference.layers[0].fold(dorefa_weights(reference.layers[0].params["weights"], 8))
    out = net.forward(x, keep={0})[0]
    from dncompress.engine.conv import conv2d
    manual = conv2d(dorefa_activations(x, 8), *expected, 1, 1)
    np.testing.assert_allclose(out, np.maximum(manual, 0.1 * manual), atol=1e-5)
    assert write_cfg(net.sections).count("[quantize_convolutional]") == 3


def test_keys_survive_write_and_read(tiny_net, calib, tmp_path):
    q = quantize_network(tiny_net, QuantConfig(4, 8), calib, progress=False)
    q.save(tmp_path / "q.cfg", tmp_path / "q.weights")
    sections = read_cfg(tmp_path / "q.cfg")
    convs = [s for s in sections if s.type == "quantize_convolutional"]
    assert len(convs) == 13 and {s.options["bitw"] for s in convs} == {"4", "8"}
    assert all("act_min" in s.options and s.options["batch_normalize"] == "0" for s in convs)
    again = Network.from_cfg(tmp_path / "q.cfg", tmp_path / "q.weights")
    x = calib[:1]
    for a, b in zip(q.forward(x), again.forward(x)):
        np.testing.assert_array_equal(a, b)


def test_keep_first_last_gives_first_and_head_convs_8_bits(tiny_net):
    bits = layer_bits(tiny_net, QuantConfig(4, keep_first_last=8))
    assert bits[0] == bits[15] == bits[22] == 8 and bits[12] == 4
    assert set(layer_bits(tiny_net, QuantConfig(4, keep_first_last=0)).values()) == {4}


def test_w8a8_stays_close_to_fp32_on_dog(tiny_net, calib):
    q = quantize_network(tiny_net, QuantConfig(8, 8), calib, progress=False)
    img = load_image(ROOT / "samples" / "dog.jpg")
    ours = detect_image(q.forward, q.heads, img, 416, 416, 0.5)
    ref = detect_image(tiny_net.forward, tiny_net.heads, img, 416, 416, 0.5)
    assert sorted(d.name for d in ours) == sorted(d.name for d in ref)
    from dncompress.detect import iou_matrix
    for a in ours:
        match = max((b for b in ref if b.name == a.name),
                    key=lambda b: iou_matrix(np.array([a.box]), np.array([b.box]))[0, 0])
        # measured: the dog box moves most, IoU 0.78 with the float one
        assert iou_matrix(np.array([a.box]), np.array([match.box]))[0, 0] > 0.7
        assert abs(a.confidence - match.confidence) < 0.1


def test_weights_only_darknet_format_matches_opencv(tiny_net, tmp_path):
    q = quantize_network(tiny_net, QuantConfig(4, None, keep_first_last=0), None, progress=False)
    plain = plain_convolutional(q)
    plain.save(tmp_path / "p.cfg", tmp_path / "p.weights")
    assert "[quantize_convolutional]" not in (tmp_path / "p.cfg").read_text()
    cv_net = cv2.dnn.readNetFromDarknet(str(tmp_path / "p.cfg"), str(tmp_path / "p.weights"))
    cv_net.enableWinograd(False)
    x = cv2.dnn.blobFromImage(cv2.imread(str(ROOT / "samples" / "dog.jpg")), 1 / 255, (416, 416), swapRB=True)
    cv_net.setInput(x)
    theirs = cv_net.forward(["conv_15", "conv_22"])
    for a, b in zip(q.forward(x, keep={15, 22}), theirs):
        assert np.abs(a - b).max() <= 2e-4
    w = plain.layers[12].params["weights"]
    assert max(len(np.unique(row)) for row in w.reshape(len(w), -1)) <= 15


@pytest.mark.parametrize("bits, per_channel", [(4, True), (2, True), (3, False), (8, True)])
def test_packed_round_trip_is_bit_exact_and_small(tiny_net, calib, tmp_path, bits, per_channel):
    q = quantize_network(tiny_net, QuantConfig(bits, 8, per_channel, keep_first_last=0), calib, progress=False)
    size = write_packed(q, tmp_path / "m.dnq")
    back = read_packed(tmp_path / "m.dnq")
    for a, b in zip(q.layers, back.layers):
        for name in a.param_shapes():
            np.testing.assert_array_equal(a.params[name], b.params[name])
    # integers at `bits` each, plus per filter a float64 scale and a float32 bias (3,694 filters), plus the cfg
    assert size < tiny_net.param_count() * bits / 8 + 3694 * 12 + 10_000


def test_truncated_packed_file_is_a_clear_error(tiny_net, tmp_path):
    from dncompress.errors import DncompressError
    q = quantize_network(tiny_net, QuantConfig(4, None), None, progress=False)
    write_packed(q, tmp_path / "m.dnq")
    data = (tmp_path / "m.dnq").read_bytes()
    (tmp_path / "cut.dnq").write_bytes(data[:-100])
    with pytest.raises(DncompressError, match="truncated"):
        read_packed(tmp_path / "cut.dnq")
    (tmp_path / "bad.dnq").write_bytes(b"nope" + data[4:])
    with pytest.raises(DncompressError, match="no DNCQ header"):
        read_packed(tmp_path / "bad.dnq")


def quantize_linear_outputs(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    names = [n.output[0] for n in model.graph.node if n.op_type == "QuantizeLinear"]
    extended = onnx.ModelProto()
    extended.CopyFrom(model)
    for name in names:
        extended.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.UINT8, None))
    return extended, names


@pytest.mark.parametrize("bits, act_bits, opset, exact", [(4, 4, 13, False), (8, 8, 13, False), (4, 8, 21, False)])
def test_qdq_onnx_activations_within_one_quantization_step(tiny_net, calib, bits, act_bits, opset, exact):
    """Every integer activation onnxruntime computes against the engine's. The first quantized input is
    the image: identical. Deeper, float rounding differences in the convs move values across rounding
    boundaries now and then (measured: at most 3% of
    any tensor, the last head's input, more than one step away)."""
    q = quantize_network(tiny_net, QuantConfig(bits, act_bits), calib, progress=False)
    model, names = quantize_linear_outputs(build_qdq_onnx(q, opset))
    x = calib[:1]
    theirs = onnx_forward(model)(x)[len(q.heads):]
    convs = [layer for layer in q.layers if layer.type == "quantize_convolutional"]
    sources = {c.inputs[0] for c in convs if c.inputs[0] >= 0}
    inputs = dict(zip(sorted(sources), q.forward(x, keep=sources)))
    inputs[-1] = x
    for n, (layer, ort_q) in enumerate(zip(convs, theirs)):
        scale, zero = affine_params(*layer.act_range, layer.bita)
        ours = np.clip(np.round(inputs[layer.inputs[0]] / np.float32(scale)) + zero, 0, 2 ** layer.bita - 1)
        diff = np.abs(ours.astype(int) - ort_q.astype(int))
        if exact or n == 0:
            assert diff.max() == 0, layer.index
        assert (diff > 1).mean() <= 0.05, layer.index


def test_qdq_weights_only_matches_engine(tiny_net):
    q = quantize_network(tiny_net, QuantConfig(4, None), None, progress=False)
    x = np.random.default_rng(1).random((1, 3, 416, 416), dtype=np.float32)
    for a, b in zip(q.forward(x), onnx_forward(build_qdq_onnx(q, 21))(x)):
        assert np.abs(a - b).max() <= 1e-4


def test_quantize_cli_formats_and_errors(tmp_path, tiny_weights):
    runner = CliRunner()
    calib_dir = str(COCO_FEW / "images")
    result = runner.invoke(main, ["quantize", "--bits", "4", "--format", "packed", "--calib", calib_dir,
                                  "--calib-images", "4", "--rounding", "nearest", "-o", str(tmp_path / "m")])
    assert result.exit_code == 0, result.output
    assert "MB packed" in result.stdout and (tmp_path / "m-packed.dnq").stat().st_size < 5.5e6
    detected = runner.invoke(main, ["detect", str(ROOT / "samples" / "dog.jpg"), "--cfg",
                                    str(tmp_path / "m-packed.dnq"), "--out", str(tmp_path / "d"), "--json"])
    assert detected.exit_code == 0 and "dog" in detected.stdout
    bad = runner.invoke(main, ["quantize", "--format", "darknet", "-o", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "--act-bits none" in bad.stderr
    again = runner.invoke(main, ["quantize", "--bits", "4", "--format", "packed", "--calib", calib_dir,
                                 "-o", str(tmp_path / "m")])
    assert again.exit_code == 2 and "--force" in again.stderr
