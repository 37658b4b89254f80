"""Quantizer arithmetic: grid round trips, per-channel vs per-tensor, DoReFa formulas, bit packing."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from dncompress.quant.packed import pack_bits, unpack_bits
from dncompress.quant.quantizers import (activation_params, channel_view, dequantize, dorefa_activation,
                                         dorefa_weights, fake_quantize_activation, quantize, quantize_weights,
                                         signed_range, unsigned_range)

BITS = range(2, 9)


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("per_channel", [True, False])
def test_round_trip_exact_on_grid(bits, per_channel):
    rng = np.random.default_rng(bits)
    qmin, qmax = signed_range(bits)
    q = rng.integers(qmin, qmax + 1, (6, 3, 3, 3))
    scale = rng.uniform(1e-4, 2.0, 6 if per_channel else ()).astype(np.float32)
    view = channel_view(scale, per_channel)
    assert np.array_equal(quantize(dequantize(q, view), view, 0, qmin, qmax), q)


@settings(max_examples=50, deadline=None)
@given(st.integers(2, 8), st.floats(-5, 0), st.floats(0.01, 5))
def test_activation_grid_round_trip_and_zero_exact(bits, lo, hi):
    scale, zero_point = activation_params(lo, hi, bits)
    qmin, qmax = unsigned_range(bits)
    q = np.arange(qmin, qmax + 1)
    assert np.array_equal(quantize(dequantize(q, scale, zero_point), scale, zero_point, qmin, qmax), q)
    assert fake_quantize_activation(np.zeros(3, np.float32), lo, hi, bits).tolist() == [0, 0, 0]


def test_weight_quantization_error_is_at_most_half_a_step():
    w = np.random.default_rng(0).normal(0, 1, (8, 4, 3, 3)).astype(np.float32)
    q, scale = quantize_weights(w, 4, per_channel=True)
    err = np.abs(dequantize(q, channel_view(scale, True)) - w)
    assert (err <= scale[:, None, None, None] / 2 * (1 + 1e-6)).all()
    assert q.min() >= -7 and q.max() <= 7 and np.abs(q).reshape(8, -1).max(axis=1).tolist() == [7] * 8


def test_per_channel_keeps_small_channels_that_per_tensor_zeroes():
    rng = np.random.default_rng(1)
    w = (rng.normal(0, 1, (16, 8, 3, 3)) * np.logspace(-2, 0, 16)[:, None, None, None]).astype(np.float32)
    small = {}
    for per_channel in (True, False):
        q, scale = quantize_weights(w, 4, per_channel)
        assert scale.shape == ((16,) if per_channel else ())
        error = dequantize(q, channel_view(scale, per_channel))[0] - w[0]
        small[per_channel] = np.sqrt(np.mean(error ** 2) / np.mean(w[0] ** 2))
    assert small[True] < 0.2 and small[False] == 1.0


def test_dorefa_matches_a_direct_float64_transcription():
    w = np.random.default_rng(2).normal(0, 0.2, (4, 3, 3, 3))
    for k in (1, 2, 4, 8):
        if k == 1:
            expected = np.sign(w) * np.mean(np.abs(w))
        else:
            n = 2.0 ** k - 1
            t = np.tanh(w)
            t = t / (2 * np.max(np.abs(t))) + 0.5
            expected = 2 * (np.round(t * n) / n) - 1
        np.testing.assert_allclose(dorefa_weights(w.astype(np.float32), k), expected, atol=1e-6)
    x = np.linspace(-3, 15, 1001).astype(np.float32)
    expected = np.round(np.clip(0.1 * x.astype(np.float64), 0, 1) * 15) / 15
    np.testing.assert_allclose(dorefa_activation(x, 4), expected, atol=1e-6)


@pytest.mark.parametrize("bits", BITS)
def test_pack_bits_round_trip_and_size(bits):
    values = np.random.default_rng(bits).integers(0, 1 << bits, 1001)
    data = pack_bits(values, bits)
    assert len(data) == -(-1001 * bits // 8)
    assert np.array_equal(unpack_bits(data, bits, 1001), values)


def test_pack_bits_nibble_and_crumb_order():
    assert pack_bits(np.array([1, 2, 15, 0]), 4) == bytes([0x21, 0x0F])
    assert pack_bits(np.array([1, 2, 3, 0]), 2) == bytes([0b00111001])
