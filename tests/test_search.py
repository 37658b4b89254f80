"""Pruning-as-search: the indicators' BFLOPs and gradients, the gated training run, the CLI."""
from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from dncompress.cli import main
from dncompress.network import Network
from dncompress.prune.apply import prune_network
from dncompress.prune.search import Indicators, apply_search
from dncompress.stats import summary
from dncompress.train.runner import TrainRun

from helpers import COCO_FEW, random_network, small_network


@pytest.mark.parametrize("name", ["yolov3-tiny", "yolov4-tiny"])
def test_indicator_bflops_equal_the_pruned_networks(name):
    net = random_network(name, width=64, height=64)
    indicators = Indicators(net)
    rng = np.random.default_rng(0)
    indicators.values = rng.random(len(indicators.values))
    bflops, _ = indicators.bflops()
    pruned = prune_network(net, indicators.keep(), with_compensation=False)
    assert bflops == pytest.approx(summary(pruned)["bflops"], rel=1e-9)
    full = Indicators(net).bflops()[0]
    assert full == pytest.approx(summary(net)["bflops"], rel=1e-9)


def test_bflops_gradient_is_the_effect_of_switching_a_position_off():
    net = random_network("yolov3-tiny", width=64, height=64)
    indicators = Indicators(net)
    full, grad = indicators.bflops()
    for position in np.random.default_rng(1).choice(len(indicators.values), 12, replace=False):
        indicators.values[:] = 1
        indicators.values[position] = 0
        assert full - indicators.bflops()[0] == pytest.approx(grad[position], rel=1e-9)


def test_keep_saves_the_best_position_of_a_group_switched_off():
    net = random_network("yolov3-tiny", width=64, height=64)
    indicators = Indicators(net)
    indicators.values[:] = 0
    first = indicators.groups[0]
    indicators.values[3] = 0.4
    keep = indicators.keep()
    conv = first.convs[0]
    assert {ch for ch in keep if ch[0] == conv} == set(first.positions[3])
    for group in indicators.groups:
        assert sum(1 for ch in keep if ch[0] == group.convs[0]) == group.multiplicity(group.convs[0])


def test_gate_gradients_match_finite_differences():
    net = small_network()
    rng = np.random.default_rng(2)
    x = rng.random((2, 3, 96, 96))
    gates = {0: rng.random(8), 2: rng.random(16)}
    weights = [rng.normal(size=o.shape) for o in TrainRun(net, np.float64, gates).forward(x, update_stats=False)]

    def loss(g):
        run = TrainRun(net, np.float64, g)
        return sum(np.sum(o * w) for o, w in zip(run.forward(x, update_stats=False), weights)), run
    _, run = loss(gates)
    run.backward(weights)
    for layer, channel in ((0, 3), (2, 11)):
        eps = 1e-5
        up = {k: v.copy() for k, v in gates.items()}
        down = {k: v.copy() for k, v in gates.items()}
        up[layer][channel] += eps
        down[layer][channel] -= eps
        numeric = (loss(up)[0] - loss(down)[0]) / (2 * eps)
        assert run.gate_grads[layer][channel] == pytest.approx(numeric, rel=1e-4, abs=1e-6)


def test_search_cli_reaches_a_smaller_network(tmp_path):
    net = small_network()
    net.save(tmp_path / "small.cfg", tmp_path / "small.weights")
    full = summary(net)["bflops"]
    runner = CliRunner()
    args = ["prune", "search", str(tmp_path / "small.cfg"), str(tmp_path / "small.weights"), "--data", str(COCO_FEW),
            "--target-bflops", f"{full * 0.6:.6f}", "--epochs", "3", "--batch", "4", "--gate-lr", "0.3",
            "--penalty", "1000", "--weight-lr", "0", "-o", str(tmp_path / "found")]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    found = Network.from_cfg(tmp_path / "found.cfg", tmp_path / "found.weights")
    assert summary(found)["bflops"] < full * 0.9
    assert [layer.filters for layer in found.layers if layer.type == "convolutional"][-1] == 255
    assert runner.invoke(main, args).exit_code == 2
    missing = runner.invoke(main, args[:4] + ["--data", str(COCO_FEW), "-o", str(tmp_path / "x")])
    assert missing.exit_code == 2 and "--target-bflops" in missing.output


def test_apply_search_reestimates_batchnorm_of_the_pruned_network():
    net = random_network("yolov3-tiny", width=64, height=64)
    indicators = Indicators(net)
    indicators.values = np.random.default_rng(3).random(len(indicators.values))
    x = np.random.default_rng(4).random((3, 3, 64, 64), dtype=np.float32)
    pruned = apply_search(net, indicators, x)
    assert summary(pruned)["bflops"] == pytest.approx(indicators.bflops()[0], rel=1e-9)
    conv = pruned.layers[4]
    raw = conv.kernel_output(pruned.forward(x, keep={3})[0]).astype(np.float64)
    np.testing.assert_allclose(conv.params["rolling_mean"], raw.mean(axis=(0, 2, 3)), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(conv.params["rolling_variance"], raw.var(axis=(0, 2, 3)), rtol=1e-3, atol=1e-5)


def test_threshold_for_is_the_lowest_threshold_within_the_target():
    net = random_network("yolov3-tiny", width=64, height=64)
    indicators = Indicators(net)
    indicators.values = np.round(np.random.default_rng(5).random(len(indicators.values)), 2)
    target = 0.6 * indicators.bflops(0.0)[0]
    threshold = indicators.threshold_for(target)
    candidates = np.unique(np.append(indicators.values, 0.5))
    within = [t for t in candidates if indicators.bflops(t)[0] <= target]
    assert threshold == within[0]
    assert indicators.bflops(threshold)[0] <= target < indicators.bflops(candidates[candidates < threshold][-1])[0]


def test_search_cli_refuses_unlabelled_data_and_unreachable_targets(tmp_path):
    small_network().save(tmp_path / "small.cfg", tmp_path / "small.weights")
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.jpg").write_bytes((COCO_FEW / "images" / "000000000009.jpg").read_bytes())
    runner = CliRunner()
    base = ["prune", "search", str(tmp_path / "small.cfg"), str(tmp_path / "small.weights"), "-o", str(tmp_path / "o")]
    unlabelled = runner.invoke(main, base + ["--data", str(tmp_path), "--target-bflops", "0.001"])
    assert unlabelled.exit_code == 2 and "has none" in unlabelled.output
    too_big = runner.invoke(main, base + ["--data", str(COCO_FEW), "--target-bflops", "100"])
    assert too_big.exit_code == 2 and "nothing to prune" in too_big.output
    assert not (tmp_path / "o.cfg").exists()


def test_threshold_for_a_target_above_the_network_keeps_everything():
    net = random_network("yolov3-tiny", width=64, height=64)
    indicators = Indicators(net)
    indicators.values = np.random.default_rng(6).random(len(indicators.values))
    threshold = indicators.threshold_for(10 * indicators.bflops(-1.0)[0])
    assert indicators.bflops(threshold)[0] == pytest.approx(summary(net)["bflops"], rel=1e-9)
