"""GPTQ rounding against a direct float64 OBQ implementation and round-to-nearest; sampled im2col columns
against the engine's im2col; sequential quantization of a small network (grid, bias correction, ranges)."""
import numpy as np
import pytest

from dncompress.data import calibration_batch
from dncompress.engine.conv import conv2d, im2col
from dncompress.engine.quantize import snap_to_grid, symmetric_scale
from dncompress.errors import DncompressError
from dncompress.quant.apply import QuantConfig, quantize_network
from dncompress.quant.calibrate import output_error_clip
from dncompress.quant.gptq import gptq_round, obq_round_reference, sample_columns

from helpers import COCO_FEW, small_network


def correlated_inputs(rng, k: int, n: int) -> np.ndarray:
    """(K, N) inputs with unequal energies and correlated pairs, as conv inputs have."""
    mix = np.eye(k) + 0.6 * rng.normal(size=(k, k)) * (rng.random((k, k)) < 0.2)
    return (mix @ rng.normal(size=(k, n))) * rng.uniform(0.2, 2.0, size=(k, 1))


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_gptq_equals_direct_obq_in_float64(bits):
    rng = np.random.default_rng(bits)
    w = rng.normal(size=(5, 18))
    x = correlated_inputs(rng, 18, 300)
    scale = symmetric_scale(np.abs(w).max(axis=1), bits)
    # blocks of 4 columns exercise the lazy updates across block boundaries
    ours = gptq_round(w, x @ x.T, scale, bits, block=4, act_order=False)
    np.testing.assert_array_equal(ours, obq_round_reference(w, x @ x.T, scale, bits))


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_gptq_output_error_below_round_to_nearest_on_held_out_inputs(bits):
    rng = np.random.default_rng(10 + bits)
    w = rng.normal(size=(16, 40))
    mix = np.eye(40) + 0.6 * rng.normal(size=(40, 40)) * (rng.random((40, 40)) < 0.2)
    energy = rng.uniform(0.2, 2.0, size=(40, 1))
    fit, held_out = ((mix @ rng.normal(size=(40, 2000))) * energy for _ in range(2))   # one distribution
    scale = symmetric_scale(np.abs(w).max(axis=1), bits)[:, None]
    nearest = np.clip(np.round(w / scale), -(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1)
    q = gptq_round(w, fit @ fit.T, scale[:, 0], bits)
    error = lambda ints: np.linalg.norm((w - ints * scale) @ held_out)
    assert error(q) < 0.9 * error(nearest)
    # the largest weight of each row stays at +-qmax: the stored scale is recomputed from it
    assert np.array_equal(np.abs(q).max(axis=1), np.full(16, 2 ** (bits - 1) - 1))


def test_sample_columns_are_im2col_columns():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 3, 9, 11)).astype(np.float32)
    for kernel, stride, pad in ((3, 1, 1), (3, 2, 1), (1, 1, 0), (2, 2, 0)):
        cols = im2col(x, kernel, stride, pad)                   # (N, K, P)
        every = sample_columns(x, kernel, stride, pad, 10_000, rng)
        np.testing.assert_array_equal(every, cols.transpose(0, 2, 1).reshape(-1, cols.shape[1]))
        some = sample_columns(x, kernel, stride, pad, 5, np.random.default_rng(1))
        picks = np.random.default_rng(1).choice(cols.shape[2], 5, replace=False)
        np.testing.assert_array_equal(some, cols[:, :, picks].transpose(0, 2, 1).reshape(-1, cols.shape[1]))


def test_output_error_clip_weights_errors_by_input_energy():
    """A weight on a loud input keeps its value; minimizing the weight error alone would clip it."""
    w = np.array([[1.0, 0.05, -0.04, 0.03, 0.06, -0.05, 0.02, 0.04]])
    quiet = np.array([[100.0] + [0.01] * 7])
    assert output_error_clip(w, quiet, 3)[0] == pytest.approx(1.0)
    loud_small = np.array([[0.01] + [100.0] * 7])
    assert output_error_clip(w, loud_small, 3)[0] < 0.5


@pytest.fixture(scope="module")
def small():
    net = small_network(3)
    return net, calibration_batch(COCO_FEW, 8, 96, 96)


def layer_output_error(net, quantized, x, index):
    ref = net.forward(x, keep={index})[0]
    return float(np.square(quantized.forward(x, keep={index})[0] - ref).mean())


def test_gptq_network_weights_on_grid_and_closer_than_nearest(small):
    net, calib = small
    x = calib[-2:]
    errors = {}
    for rounding in ("nearest", "gptq"):
        q = quantize_network(net, QuantConfig(3, 8, keep_first_last=0, rounding=rounding), calib[:6])
        for layer in q.layers:
            if layer.type == "quantize_convolutional":
                w = layer.params["weights"]
                np.testing.assert_array_equal(snap_to_grid(w, 3, True), w)
        errors[rounding] = layer_output_error(net, q, x, len(net.layers) - 2)
    assert errors["gptq"] < errors["nearest"]


def test_bias_correction_removes_the_mean_shift(small):
    net, calib = small
    index = 4                                                   # the last conv, after three quantized ones
    shifts = {}
    for correct in (False, True):
        q = quantize_network(net, QuantConfig(2, 8, keep_first_last=0, bias_correction=correct), calib)
        ref = net.forward(calib, keep={index})[0]
        shifts[correct] = float(np.abs((q.forward(calib, keep={index})[0] - ref).mean(axis=(0, 2, 3))).mean())
    assert shifts[True] < 0.5 * shifts[False]


def test_mse_ranges_not_worse_than_minmax(small):
    """The fixed mse: ranges chosen by output error do not lose to min-max on the images they fit."""
    net, calib = small
    errors = {}
    for method in ("minmax", "mse"):
        q = quantize_network(net, QuantConfig(3, 4, keep_first_last=0, method=method), calib)
        errors[method] = layer_output_error(net, q, calib, len(net.layers) - 2)
    assert errors["mse"] <= errors["minmax"] * 1.02


def test_requantizing_a_quantized_model_is_refused(small):
    net, calib = small
    q = quantize_network(net, QuantConfig(4, 8), calib[:2])
    with pytest.raises(DncompressError, match="already"):
        quantize_network(q, QuantConfig(4, 8), calib[:2])


def test_grouped_conv_bias_correction_uses_its_groups():
    from dncompress.cfg import parse_cfg
    from dncompress.network import Network
    cfg = ("[net]\nwidth=16\nheight=16\nchannels=4\n\n[convolutional]\nfilters=6\nsize=3\nstride=1\npad=1\n"
           "groups=2\nactivation=linear\n")
    net = Network(parse_cfg(cfg))
    net.init_random(0)
    x = np.random.default_rng(0).random((4, 4, 16, 16), dtype=np.float32)
    q = quantize_network(net, QuantConfig(2, None, keep_first_last=0, bias_correction=True, rounding="gptq",
                                          positions=10_000), x)
    w, b = net.layers[0].folded()
    shift = (conv2d(x, q.layers[0].params["weights"], q.layers[0].params["biases"], 1, 1, 2)
             - conv2d(x, w, b, 1, 1, 2)).mean(axis=(0, 2, 3))
    np.testing.assert_allclose(shift, 0, atol=1e-4)
