"""Cost model against Darknet's printed figures, an ONNX-derived MAC count, and hand calculations."""
import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import numpy_helper, shape_inference

from dncompress.cfg import parse_cfg
from dncompress.cli import main
from dncompress.export.onnx import build_onnx
from dncompress.network import Network
from dncompress.stats import EnergyModel, activation_memory, layer_costs, summary

from helpers import CFGS, random_network


def test_yolov3_tiny_matches_darknet_table():
    net = Network.from_cfg(CFGS / "yolov3-tiny.cfg")
    figures = summary(net)
    assert figures["params"] == 8_858_734
    assert round(figures["bflops"], 3) == 5.565
    by_index = {row["index"]: row["bflops"] for row in figures["layers"]}
    assert round(by_index[12], 3) == 1.595 and round(by_index[21], 3) == 1.196


def onnx_macs(model: onnx.ModelProto) -> int:
    """MACs of every Conv node from ONNX shape inference: an independent count."""
    inferred = shape_inference.infer_shapes(model)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in list(inferred.graph.value_info) + list(inferred.graph.output)}
    weights = {t.name: numpy_helper.to_array(t).shape for t in model.graph.initializer}
    total = 0
    for node in model.graph.node:
        if node.op_type == "Conv":
            o, c, kh, kw = weights[node.input[1]]
            n, _, ho, wo = shapes[node.output[0]]
            total += o * c * kh * kw * ho * wo
    return total


@pytest.mark.parametrize("name", ["yolov3-tiny", "yolov4-tiny", "yolov2-tiny"])
def test_macs_match_onnx_shape_inference(name):
    net = random_network(name, width=320, height=256)
    assert sum(c.macs for c in layer_costs(net)) == onnx_macs(build_onnx(net))


TOY = "[net]\nwidth=8\nheight=8\nchannels=3\n[convolutional]\nfilters=4\nsize=3\npad=1\nactivation=leaky\n" \
      "[maxpool]\nsize=2\nstride=2\n[convolutional]\nfilters=20\nsize=1\nactivation=linear\n"


def test_energy_by_hand_on_a_toy_network():
    net = Network(parse_cfg(TOY))
    conv0, pool, conv2 = layer_costs(net)
    # conv0: M = 4*3*9*64 = 6912, P = 4 + 4*27 = 112, I = 192, O = 256, k = 3, one pass of 16 filters
    assert conv0.macs == 6912 and conv0.params == 112
    assert conv0.energy == {"mac": 6912, "register": 3 * 6912, "array": 2 * 3 * (192 + 256),
                            "buffer": 6 * (192 + 112 + 256), "dram": 200 * (192 + 112 + 256)}
    # maxpool moves 256 in and 64 out through DRAM
    assert pool.energy["dram"] == 200 * 320 and pool.total_energy == 200 * 320
    # conv2: 20 filters -> 2 passes; M = 20*4*16 = 1280, P = 20 + 80, I = 64, O = 320, k = 1
    assert conv2.energy["buffer"] == 6 * (64 * 2 + 100 + 320) and conv2.energy["array"] == 2 * (64 + 320)
    assert summary(net, EnergyModel())["energy"] == pytest.approx(sum(c.total_energy for c in (conv0, pool, conv2)))


def test_peak_activation_memory_by_hand():
    # outputs: conv0 4x8x8 = 256 floats, pool 64, conv2 320; the input (192) lives until layer 0 ran
    net = Network(parse_cfg(TOY))
    total, peak = activation_memory(net)
    assert total == 4 * (256 + 64 + 320)
    assert peak == 4 * max(192 + 256, 256 + 64, 64 + 320)


def test_yolov3_tiny_peak_is_at_the_first_maxpool():
    net = Network.from_cfg(CFGS / "yolov3-tiny.cfg")
    _, peak = activation_memory(net)
    # the peak is the first maxpool: its 416x416x16 input and 208x208x16 output (the image is gone)
    assert peak == 4 * max(3 * 416 * 416 + 16 * 416 * 416, 16 * 416 * 416 + 16 * 208 * 208)
    _, peak_320 = activation_memory(Network.from_cfg(CFGS / "yolov3-tiny.cfg", width=320, height=320))
    assert peak_320 < peak


def test_stats_cli_without_weights_and_json(tmp_path):
    runner = CliRunner()
    text = runner.invoke(main, ["stats", "yolov3-tiny"])
    assert text.exit_code == 0 and "5.565 BFLOPs" in text.stdout and "8,858,734" in text.stdout
    data = json.loads(runner.invoke(main, ["stats", "yolov3-tiny", "--imgsz", "608", "608", "--json"]).stdout)
    assert data["input"] == [3, 608, 608] and data["bflops"] == pytest.approx(5.565 * (608 / 416) ** 2, rel=1e-3)
    bad = tmp_path / "w.weights"
    bad.write_bytes(np.zeros(10, np.int32).tobytes())
    result = runner.invoke(main, ["stats", "yolov3-tiny", str(bad)])
    assert result.exit_code == 2 and "weights ran out" in result.stderr


def test_params_equal_the_weights_payload(tiny_weights):
    from dncompress.weights import read_weights
    _, payload, _ = read_weights(tiny_weights)
    costs = layer_costs(Network.from_cfg(CFGS / "yolov3-tiny.cfg"))
    assert sum(c.params for c in costs) == payload.size
    assert costs[0].activation_bytes == 4 * 16 * 416 * 416


def engine_peak(net):
    """Run the engine layer by layer, keeping an output only while a later layer reads it (heads to the
    end), and return the most bytes of distinct buffers alive right after a layer has run."""
    from dncompress.layers import HEAD_TYPES

    def root(a):
        while a.base is not None:
            a = a.base
        return a
    readers = {i: [layer.index for layer in net.layers if i in layer.inputs] for i in range(-1, len(net.layers))}
    alive = {-1: np.random.default_rng(0).random((1, *net.input_shape), dtype=np.float32)}
    peak = 0
    for layer in net.layers:
        alive[layer.index] = layer.forward([alive[i] for i in layer.inputs])
        peak = max(peak, sum({id(root(a)): root(a).nbytes for a in alive.values()}.values()))
        alive = {i: a for i, a in alive.items()
                 if any(r > layer.index for r in readers[i]) or (i >= 0 and net.layers[i].type in HEAD_TYPES)}
    return peak


@pytest.mark.parametrize("name", ["yolov3-tiny", "yolov4-tiny", "yolov2-tiny"])
def test_peak_activation_memory_matches_engine_replay(name):
    net = random_network(name, width=96, height=64)
    assert activation_memory(net)[1] == engine_peak(net)
