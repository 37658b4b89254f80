"""The banded im2col conv (columns of a band of output rows at a time) against brute force, with bands
that do not divide the output, strides, padding and the work split over two threads."""
import numpy as np
import pytest

from dncompress import threads
from dncompress.engine import conv
from dncompress.engine.activations import leaky
from helpers import brute_conv



@pytest.fixture
def two_threads():
    threads.configure(2)
    yield
    threads.configure(1)


@pytest.mark.parametrize("k, stride, pad, h, w", [(3, 1, 1, 11, 9), (3, 2, 1, 12, 13), (5, 1, 2, 7, 10),
                                                  (3, 1, 0, 9, 9), (2, 2, 0, 10, 6)])
@pytest.mark.parametrize("channels, filters, bias", [(4, 6, True), (4, 8, True), (3, 11, True), (5, 7, False)])
def test_banded_conv_matches_brute_force(monkeypatch, two_threads, k, stride, pad, h, w, channels, filters, bias):
    """Odd widths: the GEMM runs on weights padded with zero rows to a multiple of 4 filters, the bias in the
    GEMM as one more column (against a row of ones under the columns)."""
    rng = np.random.default_rng(k + stride * 7 + h)
    x = rng.normal(size=(3, channels, h, w)).astype(np.float32)
    wt = rng.normal(size=(filters, channels, k, k)).astype(np.float32)
    b = rng.normal(size=filters).astype(np.float32)
    ho, wo = conv.conv_output_size(h, k, stride, pad), conv.conv_output_size(w, k, stride, pad)
    # bands of 2 output rows (the last one shorter when ho is odd): the banded path is taken
    monkeypatch.setattr(conv, "COLUMN_BLOCK", 2 * channels * k * k * wo + 1)
    calls = []
    original = conv.conv2d_banded
    monkeypatch.setattr(conv, "conv2d_banded", lambda *a: calls.append(a) or original(*a))
    y = conv.conv2d(x, wt, b if bias else None, stride, pad, 1, leaky)
    assert calls and y.shape == (3, filters, ho, wo)
    expected = brute_conv(x, wt, b if bias else np.zeros(filters), stride, pad, 1)
    np.testing.assert_allclose(y, np.maximum(expected, 0.1 * expected), atol=1e-4)


def test_inference_bands_wider_convs_than_training(monkeypatch):
    """A pruned 57-channel 3x3 conv (513 im2col rows) is banded in inference, not in training's backward;
    with few filters (a kn2row shape) banding comes first."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1, 57, 24, 25)).astype(np.float32)
    wt = rng.normal(size=(5, 57, 3, 3)).astype(np.float32)
    b = rng.normal(size=5).astype(np.float32)
    assert conv.banded_rows(57, 3, 1, 24, 25, conv.FORWARD_MAX_ROWS) and not conv.banded_rows(57, 3, 1, 24, 25)
    calls = []
    original = conv.conv2d_banded
    monkeypatch.setattr(conv, "conv2d_banded", lambda *a: calls.append(a) or original(*a))
    y = conv.conv2d(x, wt, b, 1, 1, 1)
    assert calls
    np.testing.assert_allclose(y, brute_conv(x, wt, b, 1, 1, 1), atol=1e-3)


def test_band_height_caps_the_pixels():
    assert conv.band_height(27, 416) == conv.BAND_PIXELS // 416
    assert conv.band_height(261, 104) == conv.COLUMN_BLOCK // 261 // 104
    assert conv.band_height(500, 5000) == 1


def test_banded_conv_keeps_float64():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1, 2, 40, 40))
    wt = rng.normal(size=(3, 2, 3, 3))
    y = conv.conv2d_banded(x, wt, None, 1, 1)
    assert y.dtype == np.float64
    np.testing.assert_allclose(y, brute_conv(x, wt, np.zeros(3), 1, 1, 1), atol=1e-10)


@pytest.mark.parametrize("k, stride, pad, h, w", [(3, 1, 1, 11, 9), (3, 2, 1, 12, 13), (2, 2, 0, 10, 6)])
def test_banded_conv_backward_matches_the_whole_image_one(monkeypatch, two_threads, k, stride, pad, h, w):
    """Input and weight gradients of the banded backward equal the im2col/col2im ones (float64)."""
    from dncompress.engine import backward
    rng = np.random.default_rng(k * 3 + h)
    x = rng.normal(size=(3, 4, h, w))
    wt = rng.normal(size=(5, 4, k, k))
    ho, wo = conv.conv_output_size(h, k, stride, pad), conv.conv_output_size(w, k, stride, pad)
    grad = rng.normal(size=(3, 5, ho, wo))
    whole = backward.conv2d_backward(x, wt, grad, stride, pad)
    for module in (conv, backward):  # the eligibility test (conv.banded_rows) and the band size
        monkeypatch.setattr(module, "COLUMN_BLOCK", 4 * k * k * wo - 1)
    calls = []
    original = backward.conv2d_backward_banded
    monkeypatch.setattr(backward, "conv2d_backward_banded", lambda *a: calls.append(a) or original(*a))
    banded = backward.conv2d_backward(x, wt, grad, stride, pad)
    assert calls
    for a, b in zip(banded, whole):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)
    dx, dw = backward.conv2d_backward(x, wt, grad, stride, pad, need_input=False)
    assert dx is None and np.allclose(dw, whole[1])
    dx, dw = backward.conv2d_backward(x, wt, grad, stride, pad, need_weights=False)
    assert dw is None and np.allclose(dx, whole[0])
