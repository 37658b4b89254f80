"""The training speed-ups keep gradients exact: Winograd forward and input gradient (float64 checks against
central differences), the tiled maxpool backward against the general one, and skipped gradients."""
from __future__ import annotations

import numpy as np
import pytest

from dncompress.engine.backward import conv2d_backward, maxpool2d_backward
from dncompress.engine.pool import maxpool2d
from dncompress.train.runner import TrainRun

from test_train_grad import CONV, build, check_network


def test_winograd_conv_gradients():
    """64 input channels and 64 filters: the forward and the input gradient both take the Winograd path."""
    net = build(CONV.format(bn=1, f=64, k=3, s=1, p=1, g=1, a="leaky"), c=64, h=6, w=5)
    assert net.layers[0].uses_winograd
    check_network(net, samples=4)


def test_winograd_input_gradient_equals_col2im_path():
    """The transposed-conv input gradient matches the im2col/col2im one (Winograd applies from 64 filters)."""
    rng = np.random.default_rng(0)
    x, w = rng.normal(size=(2, 5, 9, 7)), rng.normal(size=(64, 5, 3, 3))
    grad = rng.normal(size=(2, 64, 9, 7))
    fast, dw = conv2d_backward(x, w, grad, 1, 1)
    # the same conv split in two 32-filter halves stays below the Winograd threshold
    slow = sum(conv2d_backward(x, w[sl], grad[:, sl], 1, 1)[0] for sl in (slice(0, 32), slice(32, 64)))
    np.testing.assert_allclose(fast, slow, rtol=1e-10, atol=1e-10)
    assert dw.shape == w.shape


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
