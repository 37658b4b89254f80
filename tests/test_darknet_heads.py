"""YOLOv1 [detection] decoding (detect, eval) against a transcription of Darknet's
get_detection_detections, and the ONNX decode of [detection] and [Gaussian_yolo] heads against the
numpy decoders (detect.decode_image)."""
from __future__ import annotations

import numpy as np
import pytest

from dncompress.cfg import parse_cfg
from dncompress.detect import decode_image, postprocess
from dncompress.errors import DncompressError
from dncompress.export.onnx import build_onnx, onnx_forward
from dncompress.network import Network

V1 = ("[net]\nwidth=48\nheight=48\nchannels=3\n"
      "[convolutional]\nfilters=4\nsize=3\nstride=4\npad=1\nactivation=leaky\n"
      "[connected]\noutput={outputs}\nactivation=linear\n"
      "[detection]\nclasses=4\ncoords=4\nside=3\nnum=2\nsoftmax={softmax}\nsqrt={sqrt}\n")
GAUSSIAN = ("[net]\nwidth=64\nheight=64\nchannels=3\n"
            "[convolutional]\nfilters=8\nsize=3\nstride=8\npad=1\nactivation=leaky\n"
            "[convolutional]\nfilters=30\nsize=1\nactivation=linear\n"
            "[Gaussian_yolo]\nmask=0,1\nanchors=10,14,23,27,37,58\nclasses=6\nnum=3\n")


def v1_network(softmax: int = 0, sqrt: int = 1) -> Network:
    net = Network(parse_cfg(V1.format(outputs=9 * (5 * 2 + 4), softmax=softmax, sqrt=sqrt), "v1.cfg"))
    net.init_random(0)
    return net


def darknet_v1(layer, predictions):
    """get_detection_detections (with forward_detection_layer's softmax), as C loops: relative boxes."""
    p = predictions.astype(np.float64).ravel().copy()
    side, n, k = layer.side, layer.num, layer.classes
    if layer.softmax:
        for i in range(side * side):
            e = np.exp(p[i * k:(i + 1) * k] - p[i * k:(i + 1) * k].max())
            p[i * k:(i + 1) * k] = e / e.sum()
    boxes, scores = [], []
    for i in range(side * side):
        row, col = i // side, i % side
        for m in range(n):
            scale = p[side * side * k + i * n + m]
            b = side * side * (k + n) + (i * n + m) * 4
            power = 2 if layer.sqrt else 1
            boxes.append([(p[b] + col) / side, (p[b + 1] + row) / side, p[b + 2] ** power, p[b + 3] ** power])
            scores.append([scale * p[i * k + j] for j in range(k)])
    return np.array(boxes), np.array(scores)


@pytest.mark.parametrize("softmax, sqrt", [(0, 1), (1, 0)])
def test_v1_decode_matches_darknet(softmax, sqrt):
    net = v1_network(softmax, sqrt)
    out = np.random.default_rng(softmax).normal(size=net.heads[0].in_shapes[0]).astype(np.float32)
    boxes, objectness, classes = decode_image(net.heads, [out])
    want_boxes, want_scores = darknet_v1(net.heads[0], out)
    np.testing.assert_allclose(boxes, want_boxes, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(objectness[:, None] * classes, want_scores, rtol=1e-5, atol=1e-6)


def test_v1_detections_and_onnx_decode():
    net = v1_network(softmax=1)
    x = np.random.default_rng(3).random((2, 3, 48, 48), dtype=np.float32)
    raw = net.forward(x)
    # boxes above a threshold: each one's score is the transcription's
    out = raw[0][0]
    dets = postprocess(net.heads, [out], 48, 48, thresh=0.0, nms_threshold=1.0, use_letterbox=False)
    _, want_scores = darknet_v1(net.heads[0], out)
    assert dets and all(np.isclose(want_scores[:, d.class_id], d.confidence, rtol=1e-5).any() for d in dets)
    boxes, scores = onnx_forward(build_onnx(net, decode=True, dynamic_batch=True))(x)
    for i in range(2):
        b, o, c = decode_image(net.heads, [r[i] for r in raw])
        np.testing.assert_allclose(boxes[i], b, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(scores[i], o[:, None] * c, rtol=1e-5, atol=1e-6)


def test_v1_refuses_a_mismatched_input():
    with pytest.raises(DncompressError, match=r"v1.cfg:line \d+ \[detection\].*side\*side"):
        Network(parse_cfg(V1.format(outputs=100, softmax=0, sqrt=1), "v1.cfg"))


def test_gaussian_yolo_onnx_decode():
    net = Network(parse_cfg(GAUSSIAN, "g.cfg"))
    net.init_random(1)
    x = np.random.default_rng(4).random((1, 3, 64, 64), dtype=np.float32)
    raw = net.forward(x)
    boxes, scores = onnx_forward(build_onnx(net, decode=True))(x)
    b, o, c = decode_image(net.heads, [r[0] for r in raw])
    np.testing.assert_allclose(boxes[0], b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(scores[0], o[:, None] * c, rtol=1e-5, atol=1e-6)
