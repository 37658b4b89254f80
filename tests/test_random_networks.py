"""Random valid small networks (conv, maxpool, route, shortcut, upsample, yolo): cfg + weights written
and read back give the same sections, bit-identical tensors and identical forward outputs."""
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from dncompress.cfg import parse_cfg, write_cfg
from dncompress.network import Network
from dncompress.weights import WeightsHeader

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ACTIVATIONS = ["leaky", "linear", "relu", "logistic", "mish", "swish"]


def conv_lines(draw, shape, filters=None, size=None):
    """A [convolutional] block valid on `shape` (C, H, W) and its output shape."""
    c, h, w = shape
    filters = filters or draw(st.integers(1, 12))
    size = size or draw(st.sampled_from([1, 3, 5]))
    stride = draw(st.sampled_from([1, 1, 2])) if min(h, w) >= 4 else 1
    divisors = [g for g in range(1, min(c, filters) + 1) if c % g == 0 and filters % g == 0]
    groups = draw(st.sampled_from(divisors))
    pad = draw(st.booleans())
    padding = size // 2 if pad else 0
    if min(h, w) + 2 * padding < size:
        pad, padding = True, size // 2
    lines = ["[convolutional]", f"batch_normalize={int(draw(st.booleans()))}", f"filters={filters}",
             f"size={size}", f"stride={stride}", f"pad={int(pad)}", f"activation={draw(st.sampled_from(ACTIVATIONS))}"]
    if groups > 1:
        lines.append(f"groups={groups}")
    out = (filters, (h + 2 * padding - size) // stride + 1, (w + 2 * padding - size) // stride + 1)
    return lines, out


@st.composite
def random_cfg(draw) -> str:
    """Cfg text of a random valid network ending in one or two [yolo] heads."""
    width, height = draw(st.sampled_from([16, 32, 48])), draw(st.sampled_from([16, 32]))
    channels = draw(st.integers(1, 4))
    lines = ["[net]", f"width={width}", f"height={height}", f"channels={channels}"]
    shapes: list[tuple[int, int, int]] = []
    current = (channels, height, width)
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["conv", "conv", "maxpool", "route", "shortcut", "upsample"]))
        if kind == "maxpool" and min(current[1:]) >= 2:
            size, stride = draw(st.sampled_from([(2, 2), (2, 1), (3, 1), (3, 2)]))
            block = ["[maxpool]", f"size={size}", f"stride={stride}"]
            current = (current[0], *((v + size - 1 - size) // stride + 1 for v in current[1:]))
        elif kind == "route" and shapes:
            same = [i for i, s in enumerate(shapes) if s[1:] == current[1:]]
            picks = draw(st.lists(st.sampled_from(same), min_size=1, max_size=2))
            refs = [i - len(shapes) if draw(st.booleans()) else i for i in picks]
            block = ["[route]", "layers=" + ",".join(map(str, refs))]
            current = (sum(shapes[i][0] for i in picks), *current[1:])
        elif kind == "shortcut" and any(s == current for s in shapes[:-1]):
            source = draw(st.sampled_from([i for i, s in enumerate(shapes[:-1]) if s == current]))
            block = ["[shortcut]", f"from={source - len(shapes)}",
                     f"activation={draw(st.sampled_from(['linear', 'leaky']))}"]
        elif kind == "upsample" and max(current[1:]) <= 32:
            block = ["[upsample]", "stride=2"]
            current = (current[0], current[1] * 2, current[2] * 2)
        else:
            block, current = conv_lines(draw, current)
        lines += block
        shapes.append(current)
    classes = draw(st.integers(1, 3))
    masks = draw(st.sampled_from([[[0, 1, 2]], [[1], [0, 2]], [[0, 1]]]))
    anchors = "anchors=" + ",".join(str(v) for v in draw(st.lists(st.integers(1, 60), min_size=6, max_size=6)))
    for i, mask in enumerate(masks):
        if i:
            lines += ["[route]", f"layers={-3}"]
        block, _ = conv_lines(draw, current, filters=len(mask) * (5 + classes), size=1)
        lines += block + ["[yolo]", "mask=" + ",".join(map(str, mask)), anchors, f"classes={classes}",
                          "num=3"]
    return "\n".join(lines) + "\n"


def assert_same_network(a: Network, b: Network) -> None:
    assert [(s.type, s.options) for s in a.sections] == [(s.type, s.options) for s in b.sections]
    assert a.header == b.header
    for ta, tb in zip(a.weight_tensors(), b.weight_tensors(), strict=True):
        assert ta.shape == tb.shape and np.array_equal(ta.view(np.uint32), tb.view(np.uint32))


def check_roundtrip(text: str, seed: int) -> None:
    net = Network(parse_cfg(text, "random.cfg"), "random.cfg")
    net.init_random(seed)
    net.header = WeightsHeader(0, 2, 5, seen=seed)
    x = np.random.default_rng(seed).random((2, *net.input_shape), dtype=np.float32)
    with tempfile.TemporaryDirectory() as folder:
        cfg, weights = Path(folder) / "r.cfg", Path(folder) / "r.weights"
        net.save(cfg, weights)
        assert cfg.read_text() == write_cfg(parse_cfg(text))
        again = Network.from_cfg(cfg, weights)
    assert_same_network(net, again)
    everything = set(range(len(net.layers)))
    for ya, yb in zip(net.forward(x, keep=everything), again.forward(x, keep=everything), strict=True):
        assert np.array_equal(ya, yb)


@FAST
@given(random_cfg(), st.integers(0, 2**31))
def test_random_networks_roundtrip_bit_exact(text, seed):
    check_roundtrip(text, seed)


@pytest.mark.slow
@SLOW
@given(random_cfg(), st.integers(0, 2**31))
def test_random_networks_roundtrip_many(text, seed):
    check_roundtrip(text, seed)
