"""Engine kernels against brute-force float64 formulas, whole networks against OpenCV DNN."""
import cv2
import numpy as np
import pytest

from dncompress.engine.activations import ACTIVATIONS
from dncompress.engine.conv import conv2d, conv3x3_winograd, winograd_weights
from dncompress.engine.pool import maxpool2d, upsample_nearest
from dncompress.weights import write_weights

from helpers import CFGS, IMAGES, random_network
from helpers import brute_conv

TOL = 2e-4


@pytest.mark.parametrize("k, stride, pad, groups", [(3, 1, 1, 1), (3, 2, 1, 1), (1, 1, 0, 1),
                                                     (5, 2, 2, 1), (3, 1, 1, 2), (3, 1, 0, 4), (2, 2, 0, 1)])
def test_conv2d_matches_brute_force(k, stride, pad, groups):
    rng = np.random.default_rng(k * 10 + stride)
    x = rng.normal(size=(2, 8, 9, 7)).astype(np.float32)
    w = rng.normal(size=(8, 8 // groups, k, k)).astype(np.float32)
    b = rng.normal(size=8).astype(np.float32)
    np.testing.assert_allclose(conv2d(x, w, b, stride, pad, groups), brute_conv(x, w, b, stride, pad, groups),
                               atol=1e-4)


@pytest.mark.parametrize("h, w, pad", [(9, 7, 1), (8, 8, 1), (13, 13, 1), (6, 5, 0), (4, 4, 0)])
def test_winograd_conv_matches_brute_force(h, w, pad):
    rng = np.random.default_rng(h * w + pad)
    x = rng.normal(size=(2, 5, h, w)).astype(np.float32)
    weights = rng.normal(size=(6, 5, 3, 3)).astype(np.float32)
    b = rng.normal(size=6).astype(np.float32)
    np.testing.assert_allclose(conv3x3_winograd(x, winograd_weights(weights), b, pad),
                               brute_conv(x, weights, b, 1, pad, 1), atol=1e-4)


def brute_maxpool(x, k, stride, padding):
    n, c, h, w = x.shape
    off = -(padding // 2)
    ho, wo = (h + padding - k) // stride + 1, (w + padding - k) // stride + 1
    y = np.full((n, c, ho, wo), -np.inf)
    for i in range(ho):
        for j in range(wo):
            for dy in range(k):
                for dx in range(k):
                    r, s = off + i * stride + dy, off + j * stride + dx
                    if 0 <= r < h and 0 <= s < w:
                        y[:, :, i, j] = np.maximum(y[:, :, i, j], x[:, :, r, s])
    return y


@pytest.mark.parametrize("k, stride, padding, size", [(2, 2, 1, 8), (2, 1, 1, 13), (2, 2, 1, 7), (3, 2, 2, 9),
                                                       (5, 1, 4, 6), (3, 1, 2, 5), (2, 2, 0, 6)])
def test_maxpool_darknet_padding_matches_brute_force(k, stride, padding, size):
    x = np.random.default_rng(size).normal(size=(1, 3, size, size + 1)).astype(np.float32)
    np.testing.assert_array_equal(maxpool2d(x, k, stride, padding), brute_maxpool(x, k, stride, padding))


def test_upsample_nearest_repeats_blocks():
    x = np.arange(6, dtype=np.float32).reshape(1, 1, 2, 3)
    np.testing.assert_array_equal(upsample_nearest(x, 2)[0, 0], np.kron(x[0, 0], np.ones((2, 2))))


@pytest.mark.parametrize("name, formula", [
    ("leaky", lambda v: np.where(v > 0, v, 0.1 * v)),
    ("relu", lambda v: np.maximum(v, 0)),
    ("logistic", lambda v: 1 / (1 + np.exp(-v))),
    ("mish", lambda v: v * np.tanh(np.log1p(np.exp(v)))),
    ("swish", lambda v: v / (1 + np.exp(-v))),
    ("linear", lambda v: v),
])
def test_activations_match_formulas(name, formula):
    v = np.linspace(-30, 30, 601)
    np.testing.assert_allclose(ACTIVATIONS[name](v.astype(np.float32)), formula(v), rtol=1e-5, atol=1e-6)


def opencv_head_inputs(cfg, weights, blob, head_inputs):
    """Raw outputs of the convs feeding the heads, from OpenCV DNN (Winograd off: it costs precision)."""
    net = cv2.dnn.readNetFromDarknet(str(cfg), str(weights))
    net.enableWinograd(False)
    net.setInput(blob)
    return net.forward([f"conv_{i}" for i in head_inputs])


def image_blob(path, width, height):
    return cv2.dnn.blobFromImage(cv2.imread(str(path)), 1 / 255.0, (width, height), swapRB=True, crop=False)


def test_yolov3_tiny_real_weights_match_opencv_on_every_sample(tiny_net, tiny_weights):
    heads = [h.index - 1 for h in tiny_net.heads]
    assert len(IMAGES) >= 7
    for path in IMAGES:
        blob = image_blob(path, 416, 416)
        ours = tiny_net.forward(blob, keep=set(heads))
        theirs = opencv_head_inputs(CFGS / "yolov3-tiny.cfg", tiny_weights, blob, heads)
        for a, b in zip(ours, theirs):
            assert a.shape == b.shape
            assert np.abs(a - b).max() <= TOL, path.name


@pytest.mark.parametrize("name", ["yolov4-tiny", "yolov2-tiny", pytest.param("yolov3", marks=pytest.mark.slow)])
def test_random_weights_match_opencv(name, tmp_path):
    net = random_network(name, seed=1)
    weights = tmp_path / f"{name}.weights"
    write_weights(weights, net.header, net.weight_tensors())
    blob = image_blob(IMAGES[0], net.info.width, net.info.height)
    heads = [h.index - 1 for h in net.heads]
    ours = net.forward(blob, keep=set(heads))
    theirs = opencv_head_inputs(CFGS / f"{name}.cfg", weights, blob, heads)
    for a, b in zip(ours, theirs):
        assert a.shape == b.shape
        assert np.abs(a).max() > 1.0, "degenerate random network"
        assert np.abs(a - b).max() <= TOL


def test_forward_returns_head_inputs_and_keeps_requested_layers(tiny_net):
    x = np.random.default_rng(0).random((2, 3, 416, 416), dtype=np.float32)
    heads = tiny_net.forward(x)
    assert [h.shape for h in heads] == [(2, 255, 13, 13), (2, 255, 26, 26)]
    kept = tiny_net.forward(x, keep={0, 15})
    assert kept[0].shape == (2, 16, 416, 416)
    np.testing.assert_array_equal(kept[1], heads[0])



@pytest.mark.parametrize("k, pad, h, w", [(3, 1, 9, 7), (3, 0, 6, 8), (5, 2, 7, 10), (2, 0, 5, 5)])
def test_kn2row_conv_matches_brute_force(k, pad, h, w):
    """Convs with few outputs beside their inputs (a quarter or less) sum each tap's shifted product; the
    GEMM rows and output channels split over two threads."""
    from dncompress import threads
    from dncompress.engine import conv
    rng = np.random.default_rng(k * 7 + h)
    x = rng.normal(size=(2, 20, h, w)).astype(np.float32)
    weights = rng.normal(size=(5, 20, k, k)).astype(np.float32)
    b = rng.normal(size=5).astype(np.float32)
    assert conv.uses_kn2row(20, 5, k, 1, 1) and not conv.banded_rows(20, k, 1, h, w)
    expected = brute_conv(x, weights, b, 1, pad, 1)
    for count in (1, 2):
        threads.configure(count)
        try:
            y = conv2d(x, weights, b, 1, pad, 1, lambda v: np.maximum(v, 0.1 * v, out=v))
        finally:
            threads.configure(1)
        np.testing.assert_allclose(y, np.maximum(expected, 0.1 * expected), atol=1e-4)
    np.testing.assert_allclose(conv.conv2d_kn2row(x.astype(np.float64), weights.astype(np.float64), None, pad),
                               brute_conv(x, weights, np.zeros(5), 1, pad, 1), atol=1e-10)
