"""The int8 ONNX export: onnxruntime runs it on integer kernels, and it computes what the engine's
quantized model computes (same quantized tensors, same ranges)."""
import numpy as np
import onnx
import onnxruntime as ort
import pytest

from dncompress.data import calibration_batch
from dncompress.engine.quantize import affine_params
from dncompress.quant.apply import QuantConfig, quantize_network
from dncompress.quant.ort_int8 import engine_int8_onnx, int8_agreement
from dncompress.quant.qdq import reader_grids
from dncompress.quant.workflow import default_holdout, load_calibration


@pytest.fixture(scope="module")
def int8_pair(tiny_net):
    """yolov3-tiny W8A8 with quantized conv outputs (2 packaged images + mirrors) and its int8 ONNX."""
    calib, _, _ = load_calibration(tiny_net, None, 2)
    quantized = quantize_network(tiny_net, QuantConfig(8, 8, rounding="nearest", out_bits=8), calib)
    return quantized, engine_int8_onnx(quantized)


def test_onnxruntime_fuses_every_conv_but_the_heads_into_integer_convs(int8_pair, tmp_path):
    quantized, model = int8_pair
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    ops = [n.op_type for n in onnx.load(tmp_path / "optimized.onnx").graph.node]
    # 13 convs: the 11 not feeding a head run as QLinearConv; the 2 head convs keep float outputs (logits)
    assert ops.count("QLinearConv") == 11 and ops.count("Conv") == 2
    assert ops.count("QLinearLeakyRelu") >= 9


def test_int8_onnx_matches_the_engine_quantized_model(tiny_net, int8_pair):
    """Raw head outputs on held-out images: onnxruntime vs the engine differ only where a float sum
    rounds to the other side of a grid step, far less than either differs from the float model."""
    quantized, model = int8_pair
    images = calibration_batch(default_holdout(), 2, 416, 416)
    engine, float_ = quantized.forward(images), tiny_net.forward(images)
    quantization_error = sum(np.abs(a - b).sum() for a, b in zip(engine, float_)) / sum(np.abs(a).sum() for a in engine)
    agreement = int8_agreement(quantized, model, images)
    assert agreement < 0.05 * quantization_error, (agreement, quantization_error)


def test_conv_output_is_quantized_before_the_activation(int8_pair):
    """Brute force: conv + bias, rounded onto the [out_min, out_max] uint8 grid, then leaky."""
    quantized, _ = int8_pair
    layer = quantized.layers[13]                      # 1x1 conv, leaky
    assert layer.bito == 8
    x = np.random.default_rng(0).uniform(-1, 8, (1, *layer.in_shapes[0])).astype(np.float32)
    w, b = layer.folded()
    xq = layer.quantize_input(x).astype(np.float64)
    y = np.einsum("oc,nchw->nohw", w[:, :, 0, 0].astype(np.float64), xq) + b.reshape(1, -1, 1, 1)
    scale, zero = affine_params(*layer.out_range, 8)
    y = (np.clip(np.round(y / scale) + zero, 0, 255) - zero) * scale
    expected = np.maximum(y, 0.1 * y)
    got = layer.forward([x])
    # a float32 sum may round to the neighbouring step: allow one step on a few outputs
    steps = np.abs(got - expected) / scale
    assert (steps < 1e-3).mean() > 0.999 and steps.max() < 1.01


def test_activations_are_quantized_where_all_readers_share_a_grid(int8_pair):
    """conv8's output feeds conv10 (through a maxpool) and conv21 (through the concat) with different
    input ranges: no grid after its activation; conv18's only reader is conv21: its grid."""
    quantized, _ = int8_pair
    grids = reader_grids(quantized)
    assert 8 not in grids and 15 not in grids and 22 not in grids
    assert grids[18] == affine_params(*quantized.layers[21].act_range, 8)
    assert grids[0] == affine_params(*quantized.layers[2].act_range, 8)


def test_onnx_int8_needs_8_bit_activations(tmp_path):
    from click.testing import CliRunner

    from dncompress.cli import main
    result = CliRunner().invoke(main, ["quantize", "--format", "onnx-int8", "--act-bits", "none",
                                       "-o", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert result.output.count("error:") == 1 and "--act-bits 8" in result.output
    assert not list(tmp_path.iterdir())


def test_quantized_outputs_survive_the_packed_file(int8_pair, tmp_path):
    from dncompress.quant.packed import read_packed, write_packed
    quantized, _ = int8_pair
    write_packed(quantized, tmp_path / "m.dnq")
    back = read_packed(tmp_path / "m.dnq")
    assert [getattr(l, "out_range", None) for l in back.layers] == [getattr(l, "out_range", None)
                                                                      for l in quantized.layers]
    images = calibration_batch(default_holdout(), 1, 416, 416)
    for a, b in zip(back.forward(images), quantized.forward(images)):
        assert np.array_equal(a, b)
