"""Energy-aware weight pruning: statistics, restoration, least-squares refit, the stopping rule, the CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from dncompress.cli import main
from dncompress.engine.conv import conv2d
from dncompress.network import Network
from dncompress.prune.energy import (LayerStatistics, energy_aware_prune, energy_order, layer_statistics, refit,
                                     restore)
from dncompress.stats import layer_costs, summary

from helpers import COCO_FEW, random_network, small_network


def random_statistics(rng, o: int, k: int, rows: int = 200, correlated: bool = False):
    """(statistics, weights, columns) of a random layer whose input equals the original's; `correlated`
    makes inputs come in near-duplicate pairs, as neighbouring taps of a feature map do."""
    x = rng.normal(size=(k, rows))
    if correlated:
        x[1::2] = x[0::2] + 0.2 * rng.normal(size=(k // 2, rows))
    x_aug = np.concatenate([x, np.ones((1, rows))])
    w = rng.normal(size=(o, k))
    stats = LayerStatistics(x_aug @ x_aug.T, w @ x @ x_aug.T, np.sum((w @ x) ** 2, axis=1))
    return stats, w, x


def test_layer_statistics_error_equals_a_direct_convolution():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 4, 9, 7)).astype(np.float32)
    w = rng.normal(size=(5, 4, 3, 3))
    stats = layer_statistics(w.reshape(5, -1), x, x, 3, 1, 1)
    w_new = w * (rng.random(w.shape) < 0.5)
    bias = rng.normal(size=5)
    direct = conv2d(x.astype(np.float64), w_new, bias, 1, 1) - conv2d(x.astype(np.float64), w, None, 1, 1)
    expected = np.sum(direct ** 2, axis=(0, 2, 3))
    np.testing.assert_allclose(stats.error(w_new.reshape(5, -1), bias), expected, rtol=1e-4)
    np.testing.assert_allclose(stats.error(w.reshape(5, -1), np.zeros(5)), 0, atol=1e-6 * stats.target.max())


def test_restore_picks_the_weight_that_most_reduces_the_error():
    rng = np.random.default_rng(1)
    stats, w, _ = random_statistics(rng, 3, 10)
    mask = rng.random(w.shape) < 0.4
    importance = rng.random(3) + 0.5
    restored = restore(w, mask, stats, 1, importance)
    assert restored.sum() == mask.sum() + 1
    zero = np.zeros(3)
    base = stats.error(w * mask, zero) * importance
    best, best_gain = None, -np.inf
    for o, k in zip(*np.nonzero(~mask)):
        trial = mask.copy()
        trial[o, k] = True
        gain = base.sum() - (stats.error(w * trial, zero) * importance).sum()
        if gain > best_gain:
            best, best_gain = (o, k), gain
    assert restored[best] and not mask[best]


def test_restore_reaches_the_budget_and_beats_magnitude_ranking_on_correlated_inputs():
    rng = np.random.default_rng(2)
    stats, w, _ = random_statistics(rng, 6, 40, correlated=True)
    order = np.argsort(-np.abs(w), axis=None)
    keep = 120
    magnitude = np.zeros(w.shape, bool)
    magnitude.flat[order[:keep]] = True
    start = np.zeros(w.shape, bool)
    start.flat[order[:80]] = True
    restored = restore(w, start, stats, keep - 80, np.ones(6))
    assert restored.sum() == keep and np.all(restored[start])
    zero = np.zeros(6)
    assert stats.error(w * restored, zero).sum() < stats.error(w * magnitude, zero).sum()


def test_refit_solves_each_filters_ridge_problem_on_its_support():
    rng = np.random.default_rng(3)
    stats, w, _ = random_statistics(rng, 4, 12)
    mask = rng.random(w.shape) < 0.5
    ridge = 0.05
    fitted, bias = refit(w, mask, stats, ridge, iterations=200, tol=1e-12)
    assert np.all(fitted[~mask] == 0)
    strength = ridge * np.mean(np.diag(stats.gram)[:12])
    for o in range(4):
        support = np.append(np.nonzero(mask[o])[0], 12)
        penalty = np.full(len(support), strength)
        penalty[-1] = 0
        prior = np.append(w[o, support[:-1]], 0)
        lhs = stats.gram[np.ix_(support, support)] + np.diag(penalty)
        solution = np.linalg.solve(lhs, stats.cross[o, support] + penalty * prior)
        np.testing.assert_allclose(np.append(fitted[o, support[:-1]], bias[o]), solution, rtol=1e-3, atol=1e-4)


def test_energy_order_follows_the_cost_model():
    net = random_network("yolov3-tiny", width=96, height=96)
    costs = layer_costs(net)
    order = energy_order(net)
    energies = [costs[i].total_energy for i in order]
    assert energies == sorted(energies, reverse=True)
    assert sorted(order) == [layer.index for layer in net.layers if layer.type == "convolutional"]


def test_prune_reaches_the_ratio_and_refit_beats_magnitude(tmp_path):
    net = small_network()
    calib = np.random.default_rng(1).random((4, 3, 96, 96), dtype=np.float32)
    pruned, steps = energy_aware_prune(net, calib, 0.5, lambda candidate: 1.0, max_drop=0.1, progress=False)
    assert [s.index for s in steps] == energy_order(net) and all(s.accepted for s in steps)
    for layer in pruned.layers:
        if layer.type == "convolutional":
            assert np.count_nonzero(layer.params["weights"]) == round(layer.params["weights"].size / 2)
    assert all(s.error < s.error_magnitude for s in steps)
    assert np.count_nonzero(net.layers[0].params["weights"]) == net.layers[0].params["weights"].size


def test_prune_stops_and_restores_the_layer_past_max_drop(tmp_path):
    net = small_network()
    calib = np.random.default_rng(1).random((2, 3, 96, 96), dtype=np.float32)
    scores = iter([0.99, 0.5])
    pruned, steps = energy_aware_prune(net, calib, 0.5, lambda candidate: next(scores), max_drop=0.05,
                                       progress=False)
    assert [s.accepted for s in steps] == [True, False]
    first, second = steps[0].index, steps[1].index
    assert np.count_nonzero(pruned.layers[first].params["weights"]) < pruned.layers[first].params["weights"].size
    for name, value in net.layers[second].params.items():
        np.testing.assert_array_equal(pruned.layers[second].params[name], value)


def test_summary_skip_zeros_counts_nonzero_weights(tmp_path):
    net = small_network()
    rng = np.random.default_rng(4)
    for layer in net.layers:
        if layer.type == "convolutional":
            layer.set_params(weights=layer.params["weights"] * (rng.random(layer.params["weights"].shape) < 0.3))
    dense, sparse = summary(net), summary(net, skip_zeros=True)
    convs = [layer for layer in net.layers if layer.type == "convolutional"]
    zeros = sum(layer.params["weights"].size - np.count_nonzero(layer.params["weights"]) for layer in convs)
    macs = sum(np.count_nonzero(layer.params["weights"]) * layer.out_shape[1] * layer.out_shape[2] for layer in convs)
    assert sparse["params"] == dense["params"] - zeros
    assert sparse["macs"] == macs
    assert sparse["energy"] < dense["energy"]


def detecting_small_network():
    """small_network whose heads see one class everywhere (objectness and class 0 on, the rest off), so the
    fidelity has ground truth and stays cheap to evaluate."""
    net = small_network()
    for head in net.heads:
        conv = net.layers[head.inputs[0]]
        bias = np.full((len(head.mask), 85), -10, np.float32)
        bias[:, :4] = 0
        bias[:, 4:6] = 2
        conv.set_params(biases=bias.ravel())
    return net


def test_energy_cli_small_network(tmp_path):
    detecting_small_network().save(tmp_path / "small.cfg", tmp_path / "small.weights")
    runner = CliRunner()
    args = ["prune", "energy", str(tmp_path / "small.cfg"), str(tmp_path / "small.weights"),
            "--ratio", "0.6", "--calib", str(COCO_FEW), "--calib-images", "2", "--max-drop", "1",
            "-o", str(tmp_path / "out")]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "energy (zero-skipping, model)" in result.output
    out = Network.from_cfg(tmp_path / "out.cfg", tmp_path / "out.weights")
    for layer in out.layers:
        if layer.type == "convolutional":
            assert np.count_nonzero(layer.params["weights"]) == round(layer.params["weights"].size * 0.4)
    assert runner.invoke(main, args).exit_code == 2
    missing = runner.invoke(main, args[:4] + ["--ratio", "0.5", "-o", str(tmp_path / "x")])
    assert missing.exit_code == 2 and "--calib" in missing.output


@pytest.mark.slow
def test_energy_cli_on_real_weights(tmp_path, tiny_weights):
    runner = CliRunner()
    result = runner.invoke(main, ["prune", "energy", "yolov3-tiny", str(tiny_weights), "--ratio", "0.5",
                                  "--calib", str(COCO_FEW), "--calib-images", "4", "--max-drop", "0.2",
                                  "-o", str(tmp_path / "eap")])
    assert result.exit_code == 0, result.output
    out = Network.from_cfg(tmp_path / "eap.cfg", tmp_path / "eap.weights")
    densities = {layer.index: np.count_nonzero(layer.params["weights"]) / layer.params["weights"].size
                 for layer in out.layers if layer.type == "convolutional"}
    assert densities[12] == pytest.approx(0.5, abs=1e-6)  # the highest-energy conv goes first
    stats = runner.invoke(main, ["stats", str(tmp_path / "eap.cfg"), str(tmp_path / "eap.weights"), "--skip-zeros",
                                 "--json"])
    assert stats.exit_code == 0
    total = sum(t.size for layer in out.layers for t in layer.params.values())
    zero_weights = sum(layer.params["weights"].size - np.count_nonzero(layer.params["weights"])
                       for layer in out.layers if layer.type == "convolutional")
    assert json.loads(stats.output)["params"] == total - zero_weights


def test_stats_cli_skip_zeros_reports_against_the_dense_macs(tmp_path):
    net = small_network()
    layer = net.layers[0]
    layer.set_params(weights=np.where(np.arange(layer.params["weights"].size).reshape(layer.params["weights"].shape)
                                      % 2, layer.params["weights"], 0).astype(np.float32))
    net.save(tmp_path / "z.cfg", tmp_path / "z.weights")
    dense = summary(net)
    result = CliRunner().invoke(main, ["stats", str(tmp_path / "z.cfg"), str(tmp_path / "z.weights"), "--skip-zeros"])
    assert result.exit_code == 0, result.output
    assert f"of {dense['macs'] / 1e9:.3f} G MACs" in result.output
    assert f"{summary(net, skip_zeros=True)['bflops']:.3f} BFLOPs" in result.output


def test_energy_cli_refuses_calibration_images_without_detections(tmp_path):
    small_network().save(tmp_path / "small.cfg", tmp_path / "small.weights")  # its heads detect nothing
    result = CliRunner().invoke(main, ["prune", "energy", str(tmp_path / "small.cfg"), str(tmp_path / "small.weights"),
                                       "--ratio", "0.5", "--calib", str(COCO_FEW),
                                       "--calib-images", "2", "-o", str(tmp_path / "out")])
    assert result.exit_code == 2 and "detects nothing" in result.output
    assert not (tmp_path / "out.weights").exists()
