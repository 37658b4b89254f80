"""Training augmentation on (image (H, W, 3) RGB float32 in [0, 1], labels (M, 5) [class, cx, cy, w, h]
normalized): HSV jitter, scale/aspect/translate jitter into a letterbox canvas, horizontal flip."""
from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from ..detect import letterbox_geometry

MIN_BOX = 0.002  # boxes cropped below this (fraction of the input) are dropped


@dataclasses.dataclass
class Augment:
    """Strengths from [net] (hue, saturation, exposure) and [yolo] jitter; flip with probability 1/2."""

    hue: float = 0.0
    saturation: float = 1.0
    exposure: float = 1.0
    jitter: float = 0.0
    flip: bool = False

    @classmethod
    def from_network(cls, net) -> "Augment":
        s = net.net_section
        jitter = max((h.section.get_float("jitter", 0.0) for h in net.heads), default=0.0)
        return cls(s.get_float("hue", 0.0), s.get_float("saturation", 1.0), s.get_float("exposure", 1.0),
                   min(jitter, 0.5), bool(s.get_int("flip", 1)))


def random_scale(rng: np.random.Generator, amount: float) -> float:
    """Darknet rand_scale: amount or 1/amount, uniform in between, each with probability 1/2."""
    scale = rng.uniform(1, max(amount, 1.0))
    return scale if rng.random() < 0.5 else 1 / scale


def hsv_jitter(img: np.ndarray, rng: np.random.Generator, aug: Augment) -> np.ndarray:
    """Shift hue by up to +-aug.hue (of a turn) and scale saturation and value by rand_scale."""
    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
    hsv[..., 0] = (hsv[..., 0] + 360 * rng.uniform(-aug.hue, aug.hue)) % 360
    hsv[..., 1] = np.clip(hsv[..., 1] * random_scale(rng, aug.saturation), 0, 1)
    hsv[..., 2] = np.clip(hsv[..., 2] * random_scale(rng, aug.exposure), 0, 1)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def place(img: np.ndarray, labels: np.ndarray, net_w: int, net_h: int, scale: float = 1.0, aspect: float = 1.0,
          shift: tuple[float, float] = (0.5, 0.5)) -> tuple[np.ndarray, np.ndarray]:
    """Letterbox img at `scale` times its fitting size (width stretched by `aspect`) on a 0.5-grey net_w x net_h
    canvas; `shift` in [0, 1] places it (0.5 = centred, the plain letterbox). Labels follow, clipped."""
    fit_w, fit_h = letterbox_geometry(img.shape[1], img.shape[0], net_w, net_h)
    new_w, new_h = max(1, round(fit_w * scale * aspect)), max(1, round(fit_h * scale))
    left, top = round((net_w - new_w) * shift[0]), round((net_h - new_h) * shift[1])
    resized = cv2.resize(img, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    canvas = np.full((net_h, net_w, img.shape[2]), 0.5, dtype=np.float32)
    src_x, src_y = max(0, -left), max(0, -top)
    dst_x, dst_y = max(0, left), max(0, top)
    cw, ch = min(new_w - src_x, net_w - dst_x), min(new_h - src_y, net_h - dst_y)
    if cw > 0 and ch > 0:
        canvas[dst_y:dst_y + ch, dst_x:dst_x + cw] = resized[src_y:src_y + ch, src_x:src_x + cw]
    x1 = np.clip(((labels[:, 1] - labels[:, 3] / 2) * new_w + left) / net_w, 0, 1)
    x2 = np.clip(((labels[:, 1] + labels[:, 3] / 2) * new_w + left) / net_w, 0, 1)
    y1 = np.clip(((labels[:, 2] - labels[:, 4] / 2) * new_h + top) / net_h, 0, 1)
    y2 = np.clip(((labels[:, 2] + labels[:, 4] / 2) * new_h + top) / net_h, 0, 1)
    out = np.stack([labels[:, 0], (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], axis=1).astype(np.float32)
    return canvas, out[(out[:, 3] > MIN_BOX) & (out[:, 4] > MIN_BOX)]


def augment(img: np.ndarray, labels: np.ndarray, net_w: int, net_h: int, aug: Augment,
            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One training sample: (net_h, net_w, 3) image and its (M', 5) labels in net-input coordinates."""
    if aug.hue or aug.saturation != 1 or aug.exposure != 1:
        img = hsv_jitter(img, rng, aug)
    j = aug.jitter
    scale = rng.uniform(1 - j, 1 + j) if j else 1.0
    aspect = rng.uniform(1 - j, 1 + j) / rng.uniform(1 - j, 1 + j) if j else 1.0
    shift = (rng.uniform(0, 1), rng.uniform(0, 1)) if j else (0.5, 0.5)
    img, labels = place(img, labels, net_w, net_h, scale, aspect, shift)
    if aug.flip and rng.random() < 0.5:
        img = img[:, ::-1]
        labels = labels.copy()
        labels[:, 1] = 1 - labels[:, 1]
    return np.ascontiguousarray(img), labels
