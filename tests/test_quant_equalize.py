"""Activation equalization: the float function is unchanged, and the conv inputs' channels fill their
tensor's range more evenly without widening it."""
import numpy as np
import pytest

from dncompress.data import calibration_batch
from dncompress.quant.equalize import channel_factors, equalizable, equalize_activations
from dncompress.quant.workflow import default_calibration, default_holdout


@pytest.fixture(scope="module")
def equalized(tiny_net):
    calib = calibration_batch(default_calibration(), 1, 416, 416)
    return equalize_activations(tiny_net, calib, 1.0), calib


def conv_input_ranges(net, images):
    """(2, C) per-channel min/max of each conv's input."""
    found = {}

    def run(layer, xs):
        if layer.type == "convolutional":
            found[layer.index] = np.stack([xs[0].min(axis=(0, 2, 3)), xs[0].max(axis=(0, 2, 3))])
        return layer.forward(xs)
    net.forward(images, run=run)
    return found


def test_equalized_network_computes_the_same_function(tiny_net, equalized):
    """Held-out images (none used for the ranges): the heads agree to float32 round-off."""
    net, _ = equalized
    images = calibration_batch(default_holdout(), 1, 416, 416)
    for a, b in zip(net.forward(images), tiny_net.forward(images)):
        assert np.abs(a - b).max() < 1e-4 * max(1.0, np.abs(b).max())


def test_channels_fill_the_range_without_widening_it(tiny_net, equalized):
    net, calib = equalized
    before, after = conv_input_ranges(tiny_net, calib), conv_input_ranges(net, calib)
    # the concat into conv 21 (conv 18's upsampled output, then conv 8's) is rescaled at both offsets
    assert equalizable(tiny_net)[8] == [(10, 0), (21, 128)] and equalizable(tiny_net)[18] == [(21, 0)]
    for index in (2, 4, 6, 21):
        lo_b, hi_b = before[index][0].min(), before[index][1].max()
        lo_a, hi_a = after[index][0].min(), after[index][1].max()
        assert lo_a >= lo_b * (1 + 1e-5) - 1e-6 and hi_a <= hi_b * (1 + 1e-5) + 1e-6
        # median channel peak relative to the tensor's: strength 1 brings each channel's max (or min) to it
        assert np.median(after[index][1]) / hi_a > 1.5 * np.median(before[index][1]) / hi_b


def test_channel_factors():
    ranges = np.array([[-1.0, -0.1, 0.0, -2.0], [10.0, 1.0, 0.0, 5.0]])
    # channel 0 holds the max, channel 3 the min: neither moves; 1 grows until its max (10x) or min (20x)
    # reaches the tensor's; an all-zero channel stays
    assert np.allclose(channel_factors(ranges, ranges, 1.0), [1.0, 10.0, 1.0, 1.0])
    assert np.allclose(channel_factors(ranges, ranges, 0.5), [1.0, np.sqrt(10.0), 1.0, 1.0])
    # a wider reader tensor (other channels beside these, as in a concat) lets them grow further
    assert np.allclose(channel_factors(ranges[:, :2], np.array([[-4.0], [20.0]]), 1.0), [2.0, 20.0])
