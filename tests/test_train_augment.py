"""Augmentation moves labels with the pixels: a white box drawn at its label stays under its label."""
from __future__ import annotations

import numpy as np
import pytest

from dncompress.train.augment import Augment, augment, place


def white_box_image(w: int = 200, h: int = 120) -> tuple[np.ndarray, np.ndarray]:
    img = np.zeros((h, w, 3), np.float32)
    img[30:70, 120:180] = 1.0
    labels = np.array([[3, 150 / w, 50 / h, 60 / w, 40 / h]], np.float32)
    return img, labels


def box_of_white(img: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(img[..., 0] > 0.75)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], float)


def label_pixels(labels: np.ndarray, w: int, h: int) -> np.ndarray:
    _, cx, cy, bw, bh = labels[0]
    return np.array([(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h])


@pytest.mark.parametrize("seed", range(6))
def test_jitter_and_flip_keep_labels_on_the_object(seed):
    img, labels = white_box_image()
    out, moved = augment(img, labels, 96, 96, Augment(jitter=0.3, flip=True), np.random.default_rng(seed))
    assert out.shape == (96, 96, 3) and moved[0, 0] == 3
    np.testing.assert_allclose(label_pixels(moved, 96, 96), box_of_white(out), atol=1.5)


def test_plain_place_is_a_centred_letterbox():
    img, labels = white_box_image()
    out, moved = place(img, labels, 100, 100)
    assert out[0, 0, 0] == 0.5 and out[50, 0, 0] == 0.0  # grey bars above and below, image between
    np.testing.assert_allclose(label_pixels(moved, 100, 100), [60, 20 + 15, 90, 20 + 35], atol=1e-4)


def test_hsv_jitter_keeps_values_in_range():
    img = np.random.default_rng(0).random((20, 30, 3), dtype=np.float32)
    out, _ = augment(img, np.zeros((0, 5), np.float32), 32, 32, Augment(hue=0.1, saturation=1.5, exposure=1.5),
                     np.random.default_rng(1))
    assert out.min() >= 0 and out.max() <= 1 and not np.allclose(out[6:26], 0.5)
