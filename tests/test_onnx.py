"""ONNX export beyond test_export.py: every layer type and opset, Darknet maxpool padding past the
kernel, [quantize_convolutional], the conv_hook (QDQ) entry point, raw dynamic batch, CLI failure."""
import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from dncompress.cfg import parse_cfg
from dncompress.detect import load_image, preprocess
from dncompress.errors import DncompressError
from dncompress.export import EMITTERS, build_onnx, onnx_forward, parity, save_onnx
from dncompress.network import Network

from helpers import ROOT

TOL = 1e-4
DOG = ROOT / "samples" / "dog.jpg"


def batch(net, n=1, seed=1):
    return np.random.default_rng(seed).random((n, *net.input_shape), dtype=np.float32)


def assert_parity(net, model, x):
    got, want = onnx_forward(model)(x), net.forward(x)
    assert [g.shape for g in got] == [w.shape for w in want]
    for g, w in zip(got, want):
        assert np.abs(g - w).max() <= TOL


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
[quantize_convolutional]
filters=18
size=1
activation=logistic
bitw=6
bita=0
quant_weights=affine
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
def test_every_layer_type_and_opset(toy_net, opset):
    """mish, swish, logistic, relu, grouped conv, [quantize_convolutional], shortcut, asymmetric
    maxpool pads, route groups (Slice), scaled upsample, concat, dropout, avgpool, region + yolo heads."""
    assert {layer.type for layer in toy_net.layers} <= set(EMITTERS)
    model = build_onnx(toy_net, opset=opset, dynamic_batch=True)
    assert {"Slice", "Resize", "Concat", "Softplus", "GlobalAveragePool"} <= {n.op_type for n in model.graph.node}
    assert_parity(toy_net, model, batch(toy_net, 2) * 4 - 2)
    assert parity(toy_net, build_onnx(toy_net, opset=opset, decode=True), decode=True) <= TOL


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


def test_raw_heads_with_dynamic_batch_of_two(tiny_net):
    model = build_onnx(tiny_net, dynamic_batch=True)
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param
    assert_parity(tiny_net, model, batch(tiny_net, 2))


def test_conv_hook_wraps_every_conv_weight(tiny_net):
    """The quantization entry point: a hook puts QuantizeLinear/DequantizeLinear on each conv weight;
    onnxruntime then matches the engine run with the same int8-rounded weights."""
    seen = []

    def qdq(g, layer, x, w):
        seen.append(layer.index)
        scale = g.const("wscale", np.float32(np.abs(layer.folded()[0]).max() / 127))
        zero = g.const("wzero", np.int8(0))
        w_name = g.const("w", w)
        return x, g.op("DequantizeLinear", [g.op("QuantizeLinear", [w_name, scale, zero]), scale, zero])

    model = build_onnx(tiny_net, conv_hook=qdq)
    convs = [layer.index for layer in tiny_net.layers if layer.type == "convolutional"]
    assert seen == convs
    assert sum(n.op_type == "DequantizeLinear" for n in model.graph.node) == len(convs)
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


def test_save_and_library_errors(tmp_path, tiny_net):
    path = tmp_path / "m.onnx"
    save_onnx(build_onnx(tiny_net), path)
    onnx.checker.check_model(str(path))
    assert_parity(tiny_net, str(path), batch(tiny_net))
    with pytest.raises(DncompressError, match="opset 9"):
        build_onnx(tiny_net, opset=9)
    with pytest.raises(DncompressError, match="no weights loaded"):
        build_onnx(Network(tiny_net.sections))


def run(*args):
    from dncompress.cli import main
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_export_cli_default_name_imgsz_and_force(tmp_path, tiny_weights, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert run("export", "yolov3-tiny", tiny_weights).exit_code == 0
    assert run("export", "yolov3-tiny", tiny_weights).exit_code == 2
    result = run("export", "yolov3-tiny", tiny_weights, "--force", "--imgsz", "320", "256")
    assert result.exit_code == 0, result.output
    shape = onnx.load(tmp_path / "yolov3-tiny.onnx").graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in shape] == [1, 3, 256, 320]


def test_export_cli_fails_when_onnxruntime_disagrees(tmp_path, tiny_weights, monkeypatch):
    """A wrong emitter (bilinear instead of nearest upsampling) must make the export exit non-zero."""
    def bilinear(g, layer, xs):
        return g.op("Resize", [xs[0], "", g.const("scales", np.array([1, 1, 2, 2], np.float32))], mode="linear")
    monkeypatch.setitem(EMITTERS, "upsample", bilinear)
    result = run("export", "yolov3-tiny", tiny_weights, "-o", tmp_path / "bad.onnx")
    assert result.exit_code == 2 and "differs from the numpy engine" in result.stderr
    assert not (tmp_path / "bad.onnx").exists()
