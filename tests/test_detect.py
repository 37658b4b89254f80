"""Preprocessing against Darknet's C loops, decoding and NMS against brute force, dog.jpg against Darknet."""
import numpy as np
import pytest

from dncompress.detect import (darknet_resize, detect_image, iou_matrix, letterbox, load_image, nms,
                               read_names)
from dncompress.errors import DncompressError

from helpers import IMAGES, ROOT


def darknet_resize_loops(im, w, h):
    """A line-by-line transcription of Darknet's resize_image() (image.c)."""
    ih, iw, c = im.shape
    part = np.zeros((ih, w, c), np.float32)
    w_scale = np.float32(iw - 1) / (w - 1)
    h_scale = np.float32(ih - 1) / (h - 1)
    for r in range(ih):
        for col in range(w):
            if col == w - 1 or iw == 1:
                val = im[r, iw - 1]
            else:
                sx = np.float32(col * w_scale)
                ix = int(sx)
                dx = sx - ix
                val = (1 - dx) * im[r, ix] + dx * im[r, ix + 1]
            part[r, col] = val
    out = np.zeros((h, w, c), np.float32)
    for r in range(h):
        sy = np.float32(r * h_scale)
        iy = int(sy)
        dy = sy - iy
        out[r] = (1 - dy) * part[iy]
        if r == h - 1 or ih == 1:
            continue
        out[r] += dy * part[iy + 1]
    return out


@pytest.mark.parametrize("src, dst", [((7, 9), (5, 4)), ((5, 4), (13, 11)), ((6, 6), (6, 6))])
def test_darknet_resize_matches_c_loops(src, dst):
    im = np.random.default_rng(0).random((*src, 3), dtype=np.float32)
    np.testing.assert_allclose(darknet_resize(im, *dst), darknet_resize_loops(im, *dst), atol=1e-6)


def test_letterbox_centres_on_grey():
    im = np.ones((576, 768, 3), np.float32)
    boxed = letterbox(im, 416, 416)
    assert boxed.shape == (416, 416, 3)
    assert np.all(boxed[:52] == 0.5) and np.all(boxed[-52:] == 0.5) and np.all(boxed[52:364] == 1.0)


def test_nms_matches_brute_force():
    rng = np.random.default_rng(3)
    xy = rng.uniform(0, 50, (60, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(5, 30, (60, 2))], axis=1)
    scores = rng.random(60)
    keep = list(nms(boxes, scores, 0.45))
    alive = list(np.argsort(-scores))
    expected = []
    while alive:
        best = alive.pop(0)
        expected.append(best)
        alive = [j for j in alive if iou_matrix(boxes[[best]], boxes[[j]])[0, 0] <= 0.45]
    assert keep == expected


def test_dog_matches_darknet_detections(tiny_net):
    """Darknet (pjreddie) `detector test ... dog.jpg -thresh 0.5` with yolov3-tiny prints these five."""
    img = load_image(ROOT / "samples" / "dog.jpg")
    dets = detect_image(tiny_net.forward, tiny_net.heads, img, 416, 416, 0.5, 0.45, True, read_names(None, 80))
    expected = [("car", 0.62), ("bicycle", 0.59), ("dog", 0.57), ("truck", 0.56), ("car", 0.52)]
    assert len(dets) == len(expected)
    for det, (name, conf) in zip(dets, expected):
        assert det.name == name and abs(det.confidence - conf) <= 0.02
    dog = next(d for d in dets if d.name == "dog")
    x1, y1, x2, y2 = dog.box
    assert 100 < x1 < 160 and 170 < y1 < 240 and 340 < x2 < 400 and 490 < y2 < 576


def test_resize_mode_detects_too(tiny_net):
    img = load_image(IMAGES[0])
    dets = detect_image(tiny_net.forward, tiny_net.heads, img, 416, 416, 0.25, 0.45, False)
    assert dets and all(0 <= d.confidence <= 1 for d in dets)


def test_unreadable_images(tmp_path):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"not a jpeg at all")
    for path in (empty, junk, tmp_path / "missing.jpg"):
        with pytest.raises(DncompressError, match=path.name):
            load_image(path)
