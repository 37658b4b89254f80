"""The static layer graph (graph.py) and the layers' declared capabilities."""
from __future__ import annotations

import pytest

from dncompress.export.onnx import EMITTERS
from dncompress.graph import Graph, convs
from dncompress.layers import CONV_TYPES, HEAD_TYPES, LAYERS
from dncompress.network import Network
from dncompress.train.graph import NOT_TRAINABLE, TRAIN_LAYERS

from helpers import CFGS, small_network

LAYER_TYPES = sorted({cls.type for cls in LAYERS.values()})


@pytest.mark.parametrize("name", LAYER_TYPES)
def test_every_layer_exports_and_trains_or_says_why_not(name):
    assert name in EMITTERS, f"[{name}] has no ONNX emitter"
    if name in TRAIN_LAYERS:
        forward, backward = TRAIN_LAYERS[name]
        assert callable(forward) and callable(backward)
        assert name not in NOT_TRAINABLE
    else:
        assert len(NOT_TRAINABLE.get(name, "")) > 10, f"[{name}] neither trains nor says why not"


def test_not_trainable_lists_only_registered_layers():
    assert set(NOT_TRAINABLE) <= set(LAYER_TYPES)


def test_capabilities_name_the_expected_sections():
    assert set(HEAD_TYPES) == {"yolo", "region", "gaussian_yolo", "detection"}
    assert set(CONV_TYPES) == {"convolutional", "quantize_convolutional"}
    assert LAYERS["conv"].is_conv and not LAYERS["summax_convolutional"].is_conv
    assert LAYERS["quantize_convolutional"].is_quantized and not LAYERS["convolutional"].is_quantized


def brute_force(net: Network) -> tuple[list[list[int]], list[int]]:
    """Readers and last use straight from the definition: scan every later layer's inputs."""
    n = len(net.layers)
    readers = [[j for j in range(n) for source in net.layers[j].inputs if source == i] for i in range(n)]
    outputs = {layer.index for layer in net.layers if layer.type in ("yolo", "region", "gaussian_yolo")} or {n - 1}
    last = [n if i in outputs else max([i, *readers[i]]) for i in range(n)]
    return readers, last


@pytest.mark.parametrize("name", ["yolov3-tiny", "yolov4-tiny", "yolov3"])
def test_graph_matches_a_brute_force_scan(name):
    net = Network.from_cfg(CFGS / f"{name}.cfg")
    readers, last = brute_force(net)
    assert net.graph.readers == readers
    assert net.last_use == last
    assert net.graph.head_inputs == [h.inputs[0] for h in net.heads]
    assert all(net.layers[i].is_conv for i in net.graph.head_inputs)


def test_graph_of_a_small_network():
    net = small_network(0)
    graph = Graph.of(net.layers)
    # SMALL_CFG: convs 0, 2, 4, 6, 11, 12; heads 7 and 13 read convs 6 and 12; [route] 8 reads the
    # maxpool 5, [route] 10 reads the upsample 9 and the maxpool 3
    assert [c.index for c in convs(net.layers)] == [0, 2, 4, 6, 11, 12]
    assert graph.head_inputs == [6, 12] and graph.outputs == [7, 13]
    assert graph.readers[5] == [6, 8] and graph.last_use[5] == 8
    assert graph.readers[3] == [4, 10] and graph.last_use[3] == 10
    assert graph.last_use[7] == graph.last_use[13] == len(net.layers)
    assert graph.feeds_head(6) and not graph.feeds_head(4)
