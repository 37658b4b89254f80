"""stats against Darknet's printout, the .weights payload, brute-force counts and a hand calculation."""
import json

import numpy as np
import pytest
from click.testing import CliRunner

from dncompress.cfg import parse_cfg
from dncompress.layers import HEAD_TYPES
from dncompress.network import Network
from dncompress.stats import layer_costs, live_bytes, summary
from dncompress.weights import read_weights

from conftest import CFGS, random_network


def brute_force_macs(net):
    """Run the engine and count, for every conv, (output values) x (weights per output value)."""
    keep = {layer.index for layer in net.layers if layer.type == "convolutional"}
    x = np.zeros((1, *net.input_shape), np.float32)
    outs = dict(zip(sorted(keep), net.forward(x, keep=keep)))
    return sum(outs[i][0].size * int(np.prod(net.layers[i].params["weights"].shape[1:])) for i in keep)


def test_yolov3_tiny_matches_darknet_table(tiny_net, tiny_weights):
    costs = layer_costs(tiny_net)
    totals = summary(tiny_net, costs)
    macs = brute_force_macs(tiny_net)
    assert 2_782_500_000 > macs > 2_782_400_000
    assert totals["macs"] == macs
    assert f"{totals['bflops']:.3f}" == "5.565"
    assert f"{costs[12].bflops:.3f}" == "1.595" and f"{costs[21].bflops:.3f}" == "1.196"
    _, payload, _ = read_weights(tiny_weights)
    assert totals["params"] == payload.size == 8_858_734
    assert totals["model_mb"] == pytest.approx(payload.nbytes / 1e6)


def engine_peak(net):
    """Run the engine layer by layer, keeping an output only while a later layer reads it (heads to the
    end), and sum the bytes of the distinct buffers alive after each layer runs."""
    def root(a):
        while a.base is not None:
            a = a.base
        return a
    readers = {i: [layer.index for layer in net.layers if i in layer.inputs] for i in range(-1, len(net.layers))}
    x = np.random.default_rng(0).random((1, *net.input_shape), dtype=np.float32)
    alive = {-1: x}
    peaks = []
    for layer in net.layers:
        alive[layer.index] = layer.forward([alive[i] for i in layer.inputs])
        buffers = {id(root(a)): root(a).nbytes for a in alive.values()}
        peaks.append(sum(buffers.values()))
        alive = {i: a for i, a in alive.items()
                 if any(r > layer.index for r in readers[i]) or (i >= 0 and net.layers[i].type in HEAD_TYPES)}
    return peaks


@pytest.mark.parametrize("name", ["yolov3-tiny", "yolov4-tiny", "yolov2-tiny"])
def test_peak_memory_matches_engine_simulation(name):
    net = random_network(name, width=96, height=64)
    assert live_bytes(net) == engine_peak(net)
    assert summary(net)["peak_activation_bytes"] == max(engine_peak(net))


TOY = """[net]
width=8
height=8
channels=3
[convolutional]
filters=4
size=3
stride=1
pad=1
activation=leaky
[convolutional]
filters=2
size=1
stride=1
activation=linear
"""


def test_energy_of_two_layer_toy_by_hand():
    """docs/energy.md's model worked out on paper for conv 3x3 3->4 and conv 1x1 4->2 on 8x8."""
    # layer 0: MACs 4*8*8*3*9 = 6912; weights 108, ifmap 192, ofmap 256; Wo = 8, k = 3, s = 1
    # dram 108+192+256 = 556; buffer 108 + 6912/9 + 2*6912/9 = 2412
    # array 6912/8 + 6912/3 + 2*6912/3 = 7776; rf 4*6912 = 27648
    # layer 1: MACs 2*64*4 = 512; weights 8, ifmap 256, ofmap 128; Wo = 8, k = 1
    # dram 392; buffer 8 + 512 + 1024 = 1544; array 64 + 512 + 1024 = 1600; rf 2048
    hand = {"mac": 6912 + 512, "dram": (556 + 392) * 200, "buffer": (2412 + 1544) * 6,
            "array": (7776 + 1600) * 2, "rf": 27648 + 2048}
    net = Network(parse_cfg(TOY))
    energy = summary(net)["energy"]
    assert energy["by_level"] == pytest.approx(hand)
    assert energy["total"] == pytest.approx(269208)
    assert energy["share"]["dram"] == pytest.approx(189600 / 269208)
    assert sum(c.energy for c in layer_costs(net)) == pytest.approx(269208)


def test_stats_cli_on_pruned_cfg_without_weights(tmp_path):
    from dncompress.cli import main
    text = (CFGS / "yolov3-tiny.cfg").read_text().replace("filters=1024", "filters=512", 1)
    pruned = tmp_path / "pruned.cfg"
    pruned.write_text(text)
    result = CliRunner().invoke(main, ["stats", str(pruned), "--json", "--imgsz", "320", "320"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["input"] == [3, 320, 320]
    assert report["layers"][12]["filters"] == 512 and report["layers"][12]["out_shape"] == [512, 10, 10]
    net = Network(parse_cfg(text))
    assert report["totals"]["params"] == net.param_count() < 8_858_734
    table = CliRunner().invoke(main, ["stats", str(pruned)])
    assert table.exit_code == 0 and "BFLOPs" in table.stdout and "peak activation memory" in table.stdout
