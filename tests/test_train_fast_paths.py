"""The training speed-ups keep gradients exact: the tiled maxpool backward against the general one, and the
gradients that are skipped change nothing else."""
from __future__ import annotations

import numpy as np
import pytest

from dncompress.engine.backward import maxpool2d_backward
from dncompress.engine.pool import maxpool2d
from dncompress.train.runner import TrainRun

from helpers import CONV, build, check_network


@pytest.mark.parametrize("shape", [(2, 3, 8, 6), (1, 2, 4, 4)])
def test_tiled_maxpool_backward_matches_general_path_with_ties(shape):
    rng = np.random.default_rng(1)
    x = rng.integers(0, 3, size=shape).astype(np.float32)  # many ties inside windows
    out = maxpool2d(x, 2, 2, 1)
    grad = rng.normal(size=out.shape).astype(np.float32)
    fast = maxpool2d_backward(x, grad, 2, 2, 1, out)
    general = maxpool2d_backward(x, grad, 2, 2, 1)
    np.testing.assert_array_equal(fast, general)
    assert (np.count_nonzero(fast.reshape(-1)) <= grad.size)


def test_skipped_gradients_are_not_computed_and_the_rest_is_unchanged():
    body = (CONV.format(bn=1, f=4, k=3, s=1, p=1, g=1, a="leaky") + "[maxpool]\nsize=2\nstride=2\n"
            + CONV.format(bn=1, f=3, k=3, s=1, p=1, g=1, a="leaky"))
    net = build(body, h=8, w=8)
    x = np.random.default_rng(2).normal(size=(2, 3, 8, 8))
    gates = {0: np.linspace(0.2, 1.0, 4)}
    full = TrainRun(net, np.float64, dict(gates), input_grad=True)
    lean = TrainRun(net, np.float64, dict(gates), param_grads=False)
    probes = [np.ones_like(full.forward(x, update_stats=False, outputs=[2])[0])]
    lean.forward(x, update_stats=False, outputs=[2])
    param_grads = full.backward(probes)
    assert param_grads and full.input_grad is not None
    assert lean.backward(probes) == {} and lean.input_grad is None
    np.testing.assert_allclose(lean.gate_grads[0], full.gate_grads[0], rtol=1e-12)


@pytest.mark.parametrize("activation", ["leaky", "mish"])
def test_gradients_with_channel_slices_over_two_threads(activation):
    """16 channels split in two slices: BN statistics, activation and their backward per slice stay exact."""
    from dncompress import threads
    threads.configure(2)
    try:
        check_network(build(CONV.format(bn=1, f=16, k=3, s=1, p=1, g=1, a=activation), c=16, h=5, w=4),
                      samples=3)
    finally:
        threads.configure(1)


@pytest.mark.parametrize("block", [5, 40, 1 << 15])
def test_blocked_batchnorm_pool_and_conv_gradients_stay_exact(monkeypatch, block):
    """Cache blocks of 5 elements (part of one channel's rows), 40 (whole channels of one image) and the
    default: the gradient check of BN, leaky, the tiled 2x2 maxpool and the convs stays exact."""
    from dncompress.engine import activations
    monkeypatch.setattr(activations, "CACHE_BLOCK", block)
    body = (CONV.format(bn=1, f=4, k=3, s=1, p=1, g=1, a="leaky") + "[maxpool]\nsize=2\nstride=2\n"
            + CONV.format(bn=1, f=3, k=3, s=1, p=1, g=1, a="mish") + CONV.format(bn=1, f=5, k=1, s=1, p=0, g=1,
                                                                               a="leaky"))
    check_network(build(body, h=8, w=6), samples=4)


@pytest.mark.parametrize("block", [5, 1 << 15])
def test_blocked_batchnorm_forward_matches_the_formula(monkeypatch, block):
    """Batch mean, unbiased variance, normalization, scale, bias and leaky, against float64 numpy."""
    from types import SimpleNamespace
    from dncompress.engine import activations
    from dncompress.layers.conv import BN_EPS
    from dncompress.train.graph import normalize_activate
    monkeypatch.setattr(activations, "CACHE_BLOCK", block)
    rng = np.random.default_rng(3)
    z = (rng.normal(size=(3, 4, 5, 7)) * 3 + 40).astype(np.float32)  # a large mean: variance must be centred
    params = {"scales": rng.uniform(0.5, 2, 4).astype(np.float32), "biases": rng.normal(size=4).astype(np.float32)}
    layer = SimpleNamespace(params=params, batch_normalize=1, activation="leaky")
    ref = z.astype(np.float64)
    mean, var = ref.mean(axis=(0, 2, 3)), ref.var(axis=(0, 2, 3), ddof=1)
    pre = ((ref - mean.reshape(1, -1, 1, 1)) / np.sqrt(var.reshape(1, -1, 1, 1) + BN_EPS)
           * params["scales"].reshape(1, -1, 1, 1) + params["biases"].reshape(1, -1, 1, 1))
    cache = {}
    out = normalize_activate(layer, z.copy(), cache)
    np.testing.assert_allclose(cache["mean"], mean, rtol=1e-6)
    np.testing.assert_allclose(cache["var"], var, rtol=1e-4)
    np.testing.assert_allclose(out, np.maximum(pre, 0.1 * pre), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("block", [5, 1 << 15])
def test_tiled_maxpool_forward_matches_window_max(monkeypatch, block):
    from dncompress.engine import activations
    monkeypatch.setattr(activations, "CACHE_BLOCK", block)
    x = np.random.default_rng(4).normal(size=(2, 3, 8, 6)).astype(np.float32)
    for k in (2, 3):
        xs = x[:, :, :6, :6] if k == 3 else x
        n, c, h, w = xs.shape
        expected = xs.reshape(n, c, h // k, k, w // k, k).max(axis=(3, 5))
        np.testing.assert_array_equal(maxpool2d(np.ascontiguousarray(xs), k, k, 1), expected)
