import hashlib

import numpy as np
import pytest

from dncompress.errors import DncompressError
from dncompress.network import Network
from dncompress.weights import WeightsHeader, parse_header, read_weights, write_weights

from helpers import CFGS, random_network


def test_real_weights_roundtrip_bit_exact(tiny_weights, tmp_path):
    net = Network.from_cfg(CFGS / "yolov3-tiny.cfg", tiny_weights)
    assert net.param_count() == 8_858_734
    out = tmp_path / "copy.weights"
    write_weights(out, net.header, net.weight_tensors())
    assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(tiny_weights.read_bytes()).digest()


@pytest.mark.parametrize("major, minor, size", [(0, 1, 16), (0, 2, 20), (1, 0, 20)])
def test_header_seen_width_depends_on_version(major, minor, size):
    header = WeightsHeader(major, minor, 0, seen=123456789)
    data = header.to_bytes()
    assert len(data) == size
    assert parse_header(data + b"\0" * 8) == header


def test_old_header_roundtrip_through_network(tmp_path):
    net = random_network("yolov2-tiny")
    net.header = WeightsHeader(0, 1, 0, seen=64)
    path = tmp_path / "old.weights"
    write_weights(path, net.header, net.weight_tensors())
    header, payload, stray = read_weights(path)
    assert header.seen == 64 and payload.size == net.param_count() and stray == 0


def test_truncated_weights_name_the_layer(tiny_weights, tmp_path):
    data = tiny_weights.read_bytes()
    cut = tmp_path / "cut.weights"
    cut.write_bytes(data[: len(data) // 2])
    net = Network.from_cfg(CFGS / "yolov3-tiny.cfg")
    with pytest.raises(DncompressError, match=r"cut.weights:layer \d+ \[convolutional\] \w+: weights ran out"):
        net.load_weights(cut)


def test_oversized_weights_count_leftover_floats(tiny_weights, tmp_path):
    long = tmp_path / "long.weights"
    long.write_bytes(tiny_weights.read_bytes() + np.zeros(7, np.float32).tobytes())
    with pytest.raises(DncompressError, match="7 floats and 0 bytes left over"):
        Network.from_cfg(CFGS / "yolov3-tiny.cfg", long)


def test_garbage_header_is_rejected(tmp_path):
    bad = tmp_path / "bad.weights"
    bad.write_bytes(np.array([123456, 7, 9, 0, 0], "<i4").tobytes())
    with pytest.raises(DncompressError, match="not a Darknet"):
        read_weights(bad)


def test_derived_networks_copy_the_header():
    """Training a pruned/quantized/copied network advances its own `seen`, never the original's."""
    from dncompress.prune.apply import prune_network
    from dncompress.prune.criteria import CRITERIA
    from dncompress.prune.groups import channel_groups
    from dncompress.prune.plan import plan_pruning
    from dncompress.quant.apply import QuantConfig, quantize_network
    net = random_network("yolov3-tiny", width=64, height=64)
    net.header.seen = 1000
    derived = [net.copy(), prune_network(net, plan_pruning(channel_groups(net), CRITERIA['l1'](net), 0.3, 'layer', 0.1, 1)), quantize_network(net, QuantConfig(8, None), None, progress=False)]
    for other in derived:
        assert other.header == net.header and other.header is not net.header
        other.header.seen += 64
    assert net.header.seen == 1000
