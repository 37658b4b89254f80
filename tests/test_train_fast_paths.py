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
