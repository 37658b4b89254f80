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


def random_network(name: str, seed: int = 0, width: int | None = None, height: int | None = None):
    """A packaged cfg with seeded random weights and BN statistics calibrated on a random batch."""
    from dncompress.network import Network
    net = Network.from_cfg(CFGS / f"{name}.cfg", width=width, height=height)
    net.init_random(seed)
    rng = np.random.default_rng(seed)
    net.calibrate_batchnorm(rng.random((2, *net.input_shape), dtype=np.float32))
    return net
