"""[quantize_convolutional] semantics, quantize_network, packed files, Darknet/OpenCV and ONNX exports."""
import dataclasses

import cv2
import numpy as np
import pytest

from dncompress.cfg import parse_cfg, write_cfg
from dncompress.detect import detect_image, load_image, preprocess
from dncompress.engine.conv import conv2d
from dncompress.layers.conv import BN_EPS
from dncompress.network import Network
from dncompress.quant.apply import QuantConfig, bit_plan, edge_convs, quantize_model, quantize_network, to_plain
from dncompress.quant.calibrate import collect_stats
from dncompress.quant.packed import read_packed, write_packed
from dncompress.quant.quantizers import dorefa_activation, dorefa_weights, fake_quantize_activation, signed_range

from conftest import CFGS, COCO128, ROOT, random_network

DOG = ROOT / "samples" / "dog.jpg"

ONE_CONV = """[net]
width=8
height=8
channels=3
[{type}]
batch_normalize=1
filters=4
size=3
stride=1
pad=1
activation=leaky
{keys}
"""


def one_conv(type_, keys=""):
    net = Network(parse_cfg(ONE_CONV.format(type=type_, keys=keys)))
    net.init_random(3)
    return net


def reference_conv(x, w, layer):
    """Float64 conv + BN + leaky from the raw parameters."""
    p = layer.params
    y = conv2d(x.astype(np.float64), w.astype(np.float64), None, 1, 1, 1)
    scale = p["scales"] / np.sqrt(p["rolling_variance"].astype(np.float64) + BN_EPS)
    y = (y - p["rolling_mean"][:, None, None]) * scale[:, None, None] + p["biases"][:, None, None]
    return np.where(y > 0, y, 0.1 * y)


def test_section_without_bit_keys_is_dorefa_8_bits_on_raw_weights_and_inputs():
    net = one_conv("quantize_convolutional")
    layer = net.layers[0]
    assert (layer.quant_weights, layer.bitw, layer.bita, layer.act_range) == ("dorefa", 8, 8, None)
    x = np.random.default_rng(0).uniform(-2, 14, (2, 3, 8, 8)).astype(np.float32)
    expected = reference_conv(dorefa_activation(x, 8), dorefa_weights(layer.params["weights"], 8), layer)
    np.testing.assert_allclose(net.forward(x, keep={0})[0], expected, atol=1e-4)


def test_affine_keys_quantize_folded_weights_and_inputs():
    keys = "bitw=4\nbita=3\nact_min=-0.5\nact_max=2\nquant_scheme=per_tensor"
    net = one_conv("quantize_convolutional", keys)
    layer = net.layers[0]
    w, b = layer.folded()
    q, scale = layer.weight_codes()
    assert scale.shape == () and np.abs(q).max() == 7 and len(np.unique(q)) <= 15
    np.testing.assert_array_equal(w, q.astype(np.float32) * scale)
    x = np.random.default_rng(1).uniform(-1, 3, (1, 3, 8, 8)).astype(np.float32)
    xq = fake_quantize_activation(x, -0.5, 2.0, 3)
    step = 2.5 / 7
    # 8 levels; rounding the zero point (zero stays exact) may shift the grid by under one step
    assert len(np.unique(xq)) == 8 and -0.5 - step < xq.min() < 0 < 2 < xq.max() + step
    y = conv2d(xq.astype(np.float64), w.astype(np.float64), b.astype(np.float64), 1, 1, 1)
    np.testing.assert_allclose(net.forward(x, keep={0})[0], np.where(y > 0, y, 0.1 * y), atol=1e-5)


def test_bita_absent_means_float_activations():
    net = one_conv("quantize_convolutional", "bitw=8")
    assert net.layers[0].bita == 0
    x = np.random.default_rng(2).random((1, 3, 8, 8), np.float32)
    assert np.array_equal(net.layers[0].quantize_input(x), x)


@pytest.mark.parametrize("keys, message", [("bitw=9", "bitw=9 must be between 2 and 8"),
                                           ("bitw=4\nquant_scheme=rows", "quant_scheme=rows"),
                                           ("bitw=4\nbita=4\nact_min=x", "is not a number")])
def test_bad_keys_name_the_key(keys, message):
    with pytest.raises(Exception, match=message):
        one_conv("quantize_convolutional", keys)


def test_cfg_round_trip_keeps_quantization_keys():
    text = ONE_CONV.format(type="quantize_convolutional", keys="bitw=4\nbita=8\nact_min=-0.25\nact_max=3.5")
    net = Network(parse_cfg(text))
    written = write_cfg(net.sections)
    for line in ("[quantize_convolutional]", "bitw=4", "bita=8", "act_min=-0.25", "act_max=3.5"):
        assert line in written.splitlines()
    again = Network(parse_cfg(written)).layers[0]
    assert (again.bitw, again.bita, again.act_range) == (4, 8, (-0.25, 3.5))


def test_edge_convs_are_first_and_head_feeding(tiny_net):
    assert edge_convs(tiny_net) == {0, 15, 22}


@pytest.mark.parametrize("bits", range(2, 9))
def test_every_bit_width_quantizes_writes_and_packs(bits, tmp_path):
    net = random_network("yolov3-tiny", seed=bits, width=96, height=96)
    qnet, codes = quantize_network(net, QuantConfig(bits, 0, keep_first_last=bits))
    assert set(codes) == {i for i, l in enumerate(net.layers) if l.type == "convolutional"}
    for i, code in codes.items():
        layer = qnet.layers[i]
        assert layer.type == "quantize_convolutional" and layer.bitw == bits and not layer.batch_normalize
        assert signed_range(bits)[0] <= code.q.min() and code.q.max() <= signed_range(bits)[1]
        # reading the file back re-quantizes on-grid weights to the same grid (within a float32 ulp)
        np.testing.assert_allclose(layer.folded()[0], layer.params["weights"], rtol=1e-6, atol=1e-12)
    qnet.save(tmp_path / "q.cfg", tmp_path / "q.weights")
    write_packed(tmp_path / "q.dnq", qnet, codes)
    restored = read_packed(tmp_path / "q.dnq")
    reloaded = Network.from_cfg(tmp_path / "q.cfg", tmp_path / "q.weights")
    for a, b in zip(restored.weight_tensors(), reloaded.weight_tensors()):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    ratio = (tmp_path / "q.dnq").stat().st_size / (tmp_path / "q.weights").stat().st_size
    # weights dominate: ~bits/32 of the float file, plus per-channel scales, biases and the cfg
    assert bits / 32 < ratio < bits / 32 + 0.02, ratio


def test_darknet_format_loads_in_opencv_and_matches_fake_quant(tiny_net, tmp_path):
    qnet, _ = quantize_network(tiny_net, QuantConfig(4, 0))
    plain = to_plain(qnet)
    assert {l.type for l in plain.layers} == {"convolutional", "maxpool", "route", "upsample", "yolo"}
    plain.save(tmp_path / "p.cfg", tmp_path / "p.weights")
    blob = cv2.dnn.blobFromImage(cv2.imread(str(DOG)), 1 / 255.0, (416, 416), swapRB=True, crop=False)
    heads = [h.index - 1 for h in qnet.heads]
    ocv = cv2.dnn.readNetFromDarknet(str(tmp_path / "p.cfg"), str(tmp_path / "p.weights"))
    ocv.enableWinograd(False)
    ocv.setInput(blob)
    ours = qnet.forward(blob, keep=set(heads))
    float_out = tiny_net.forward(blob, keep=set(heads))
    for a, b, f in zip(ours, ocv.forward([f"conv_{i}" for i in heads]), float_out):
        assert np.abs(a - b).max() <= 2e-4
        assert np.abs(a - f).max() > 0.05, "4-bit weights must change the output"


@pytest.fixture(scope="module")
def calib_images():
    images = sorted((COCO128 / "images").glob("*.jpg"))[:8]
    if len(images) < 8:
        pytest.skip("needs ../shared/data/coco128")
    return images


@pytest.fixture(scope="module")
def w8a8(tiny_net, calib_images):
    return quantize_model(tiny_net, QuantConfig(8, 8), calib_images, batch=4)[0]


def test_w8a8_close_to_float_and_same_detections(tiny_net, w8a8):
    x = preprocess(load_image(DOG), 416, 416)
    for a, b in zip(w8a8.forward(x), tiny_net.forward(x)):
        # measured 0.07 / 0.08 of the output range (max abs diff / max abs); W4A8 gives 0.45 / 0.33
        assert np.abs(a - b).max() / np.abs(b).max() < 0.12
    img = load_image(DOG)
    classes = [sorted(d.class_id for d in detect_image(n.forward, n.heads, img, 416, 416, 0.5)) for n in (tiny_net, w8a8)]
    assert classes[0] == classes[1] and len(classes[0]) == 5


def test_bias_correction_removes_the_mean_output_shift(tiny_net, calib_images):
    config = QuantConfig(2, 0)
    stats = collect_stats(tiny_net, sorted(bit_plan(tiny_net, config)), calib_images[:4], batch=4)
    x = preprocess(load_image(calib_images[0]), 416, 416)
    conv_in = tiny_net.forward(x, keep={1})[0]
    shifts = []
    for correct in (False, True):
        qnet, _ = quantize_network(tiny_net, dataclasses.replace(config, bias_correction=correct), stats)
        out = [conv2d(conv_in, *n.layers[2].folded(), 1, 1, 1) for n in (tiny_net, qnet)]
        shifts.append(np.abs((out[1] - out[0]).mean(axis=(0, 2, 3))).mean())
    assert shifts[1] < shifts[0] / 3, shifts


def test_packed_reader_rejects_other_files_and_truncation(tmp_path):
    net = random_network("yolov3-tiny", seed=0, width=64, height=64)
    qnet, codes = quantize_network(net, QuantConfig(4, 0))
    write_packed(tmp_path / "q.dnq", qnet, codes)
    data = (tmp_path / "q.dnq").read_bytes()
    (tmp_path / "cut.dnq").write_bytes(data[:-100])
    with pytest.raises(Exception, match="truncated in layer 22"):
        read_packed(tmp_path / "cut.dnq")
    (tmp_path / "w.dnq").write_bytes(b"\0" * 64)
    with pytest.raises(Exception, match="bad magic"):
        read_packed(tmp_path / "w.dnq")
