"""Head sensitivity for the one-shot allocation: the noise goes in before the activation, at the asked
relative energy, and the weights are the heads' distillation loss per unit of it."""
from __future__ import annotations

import numpy as np
import pytest

from dncompress.prune.head_weights import LEAKY_SLOPE, head_damage, head_sensitivity, noisy_output, output_rms

from helpers import small_network


def leaky(x):
    return np.where(x >= 0, x, LEAKY_SLOPE * x)


def test_noise_goes_in_before_the_leaky_activation():
    rng = np.random.default_rng(0)
    pre = rng.normal(0, 2, (2, 3, 5, 5)).astype(np.float32)
    std = np.array([0.0, 0.5, 2.0], np.float32)
    got = noisy_output(leaky(pre), "leaky", std, np.random.default_rng(7))
    noise = np.random.default_rng(7).standard_normal(pre.shape, dtype=np.float32) * std.reshape(1, -1, 1, 1)
    np.testing.assert_allclose(got, leaky(pre + noise), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got[:, 0], leaky(pre)[:, 0], rtol=1e-6)   # std 0: untouched


def test_noise_energy_per_channel():
    out = np.zeros((4, 2, 50, 50), np.float32)
    std = np.array([0.1, 3.0], np.float32)
    noise = noisy_output(out, "linear", std, np.random.default_rng(1))
    np.testing.assert_allclose(noise.std(axis=(0, 2, 3)), std, rtol=0.03)


def test_sensitivity_is_the_head_damage_per_unit_error():
    net = small_network(3)
    x = np.random.default_rng(2).random((2, *net.input_shape), dtype=np.float32)
    convs = [layer.index for layer in net.layers if layer.type == "convolutional"][:2]
    rms = {c: np.full(net.layers[c].filters, 0.5) for c in convs}
    weights = head_sensitivity(net, x, rms, level=0.04)
    assert set(weights) == set(convs) and all(np.isfinite(v) and v > 0 for v in weights.values())
    assert head_sensitivity(net, x, rms, level=0.04) == weights     # seeded: the same on every run
    clean = net.forward(x)
    assert head_damage(net, x, clean, clean) == pytest.approx(0.0, abs=1e-6)


def test_yolov3_tiny_head_inputs_weigh_most(tiny_net):
    """On the real weights, an error at the head convs (15, 22) costs far more at the heads than the same
    relative error deep in the trunk (10-13), which is what the allocation needs to know (the local errors
    alone gutted the head branches: docs/pruning.md)."""
    from dncompress.data import calibration_batch
    from helpers import ROOT
    images = calibration_batch(ROOT / "samples", 4, 416, 416)
    from dncompress.prune.oneshot import calibrate
    convs = {10, 12, 13, 15, 22}
    rms = output_rms(calibrate(tiny_net, images, convs, max_rows=4000).targets)  # as prune_oneshot takes it
    weights = head_sensitivity(tiny_net, images, rms)
    assert min(weights[15], weights[22]) > 5 * max(weights[10], weights[12], weights[13]), weights


def test_error_curve_counts_each_consumer_by_its_weight():
    """A group's curve is the sum of its consumers' relative errors, each times its head weight; with one
    consumer the weighted curve is the plain one scaled, and the removal order is unchanged."""
    from dncompress.prune.groups import channel_groups, channel_maps
    from dncompress.prune.oneshot import calibrate, consumers_of, error_curve
    net = small_network(4)
    images = np.random.default_rng(3).random((4, *net.input_shape), dtype=np.float32)
    maps = channel_maps(net)
    group = next(g for g in channel_groups(net) if g.prunable and len(consumers_of(net, g, maps)) == 1)
    consumers = consumers_of(net, group, maps)
    calib = calibrate(net, images, {c.conv for c in consumers}, max_rows=500)
    count = len(group.positions) // 2
    plain = error_curve(net, calib, consumers, count)
    weighted = error_curve(net, calib, consumers, count, weights={consumers[0].conv: 7.5})
    np.testing.assert_allclose(weighted, 7.5 * np.array(plain), rtol=1e-9)


def test_unknown_allocation_is_refused():
    from dncompress.errors import DncompressError
    from dncompress.prune.oneshot import prune_oneshot
    net = small_network(1)
    with pytest.raises(DncompressError, match="allocation must be"):
        prune_oneshot(net, np.zeros((1, *net.input_shape), np.float32), 0.5, "bflops", allocation="gamma")
