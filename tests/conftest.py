"""Fixtures: real YOLOv3-tiny weights (the `real_weights` marker), the cache. Helpers shared by test files
(paths, tiny networks, references) live in helpers.py."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from helpers import CFGS, SHARED

if "DNCOMPRESS_CACHE" not in os.environ and (SHARED / "models").is_dir():
    os.environ["DNCOMPRESS_CACHE"] = str(SHARED / "models")

# tests that read the official weights: marked `real_weights`, so that the inner loop
# `pytest -m "not slow and not real_weights"` runs the tiny synthetic networks only
REAL_WEIGHT_FIXTURES = {"tiny_weights", "tiny_net"}


def pytest_collection_modifyitems(items):
    for item in items:
        if REAL_WEIGHT_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.real_weights)


@pytest.fixture(scope="session")
def tiny_weights() -> Path:
    """The official COCO yolov3-tiny weights: from the cache, fetched (and sha256-checked) if absent."""
    from dncompress.zoo import fetch
    return fetch("yolov3-tiny", progress=False)


@pytest.fixture(scope="session")
def tiny_net(tiny_weights):
    from dncompress.model_io import open_model
    return open_model(CFGS / "yolov3-tiny.cfg", tiny_weights)
