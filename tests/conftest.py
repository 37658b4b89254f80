"""Shared fixtures: the packaged cfgs, real YOLOv3-tiny weights, sample images, random-weight networks."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
CFGS = ROOT / "darknet_cfgs"
SHARED = ROOT.parent / "shared" / "data"
IMAGES = sorted((ROOT / "samples").glob("*.jpg"))
COCO128 = SHARED / "coco128"
# the first 12 coco128 images and labels, shipped: fast tests run without ../shared
COCO_FEW = ROOT / "samples" / "coco12"

# a 96x96 four-conv detector with 80 classes for fast end-to-end runs; format it with lr=
SMALL_CFG = """[net]
width=96
height=96
channels=3
learning_rate={lr}
momentum=0.9
decay=0.0005
burn_in=0
hue=.1
saturation=1.5
exposure=1.5

[convolutional]
batch_normalize=1
filters=8
size=3
stride=1
pad=1
activation=leaky

[maxpool]
size=2
stride=2

[convolutional]
batch_normalize=1
filters=16
size=3
stride=2
pad=1
activation=leaky

[maxpool]
size=2
stride=2

[convolutional]
batch_normalize=1
filters=32
size=3
stride=2
pad=1
activation=leaky

[maxpool]
size=2
stride=1

[convolutional]
size=1
stride=1
pad=1
filters=255
activation=linear

[yolo]
mask=3,4,5
anchors=10,14, 23,27, 37,58, 81,82, 135,169, 344,319
classes=80
num=6
jitter=.2
ignore_thresh=.7

[route]
layers=-3

[upsample]
stride=2

[route]
layers=-1,3

[convolutional]
batch_normalize=1
filters=16
size=3
stride=1
pad=1
activation=leaky

[convolutional]
size=1
stride=1
pad=1
filters=255
activation=linear

[yolo]
mask=0,1,2
anchors=10,14, 23,27, 37,58, 81,82, 135,169, 344,319
classes=80
num=6
jitter=.2
ignore_thresh=.7
"""

if "DNCOMPRESS_CACHE" not in os.environ and (SHARED / "models").is_dir():
    os.environ["DNCOMPRESS_CACHE"] = str(SHARED / "models")


@pytest.fixture(scope="session")
def tiny_weights() -> Path:
    """The official COCO yolov3-tiny weights: from the cache, fetched (and sha256-checked) if absent."""
    from dncompress.zoo import fetch
    return fetch("yolov3-tiny", progress=False)


@pytest.fixture(scope="session")
def tiny_net(tiny_weights):
    from dncompress.network import Network
    return Network.from_cfg(CFGS / "yolov3-tiny.cfg", tiny_weights)


def small_network(seed: int = 0):
    """SMALL_CFG with seeded random weights, calibrated BN, and heads biased to predict almost nothing
    (evaluating random boxes by the thousand is slow)."""
    from dncompress.cfg import parse_cfg
    from dncompress.network import Network
    net = Network(parse_cfg(SMALL_CFG.format(lr=0.001)))
    net.init_random(seed)
    net.calibrate_batchnorm(np.random.default_rng(seed).random((2, *net.input_shape), dtype=np.float32))
    for head in net.heads:
        conv = net.layers[head.inputs[0]]
        conv.set_params(biases=np.full(conv.filters, -6, np.float32))
    return net


def random_network(name: str, seed: int = 0, width: int | None = None, height: int | None = None):
    """A packaged cfg with seeded random weights and BN statistics calibrated on a random batch."""
    from dncompress.network import Network
    net = Network.from_cfg(CFGS / f"{name}.cfg", width=width, height=height)
    net.init_random(seed)
    rng = np.random.default_rng(seed)
    net.calibrate_batchnorm(rng.random((2, *net.input_shape), dtype=np.float32))
    return net
