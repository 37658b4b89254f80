"""Training end to end on tiny networks: overfitting a few images, sparsity, resume, the CLI."""
from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from dncompress.cfg import parse_cfg
from dncompress.cli import main
from dncompress.network import Network
from dncompress.train.loop import Checkpoints, TrainConfig, train
from dncompress.train.sparsity import prunable_bn_layers

from helpers import SMALL_CFG, coco_subset


def tiny_network(lr: float = 0.01, seed: int = 0) -> Network:
    net = Network(parse_cfg(SMALL_CFG.format(lr=lr)))
    net.init_random(seed)
    return net


def test_overfits_a_few_images():
    net = tiny_network(lr=0.01)
    history = train(net, coco_subset(3), TrainConfig(epochs=15, batch=3, augment=False))
    first, last = (sum(h["loss"].values()) for h in (history[0], history[-1]))
    assert last < first / 5, (first, last)
    assert net.header.seen == 15 * 3


@pytest.mark.slow  # ~3 s alone, 20+ s when OpenBLAS threads compete on a loaded machine
def test_sparsity_drives_gammas_toward_zero():
    def gammas_after(strength: float) -> np.ndarray:
        net = tiny_network(lr=0.01)
        train(net, coco_subset(2), TrainConfig(epochs=20, batch=2, sparsity=strength, augment=False))
        return np.concatenate([np.abs(net.layers[i].params["scales"]) for i in prunable_bn_layers(net)])
    plain, sparse = gammas_after(0.0), gammas_after(1.0)
    assert sparse.mean() < plain.mean() / 2
    assert np.mean(sparse < 0.1) > 2 * np.mean(plain < 0.1)


def test_keep_zeros_fine_tunes_a_weight_pruned_model_without_refilling_it():
    def after(keep_zeros: bool):
        net = tiny_network(lr=0.01)
        layer = net.layers[2]
        zero = np.random.default_rng(0).random(layer.params["weights"].shape) < 0.5
        layer.set_params(weights=np.where(zero, 0, layer.params["weights"]).astype(np.float32))
        before = layer.params["weights"].copy()
        train(net, coco_subset(2), TrainConfig(epochs=2, batch=2, augment=False, keep_zeros=keep_zeros))
        return net.layers[2].params["weights"], before, zero
    kept, before, zero = after(True)
    assert np.all(kept[zero] == 0) and not np.allclose(kept[~zero], before[~zero])
    refilled, _, _ = after(False)
    assert np.count_nonzero(refilled[zero]) > 0.9 * zero.sum()


def test_prunable_layers_exclude_convs_feeding_heads():
    net = tiny_network()
    assert prunable_bn_layers(net) == [0, 2, 4, 11]


def test_resume_matches_an_uninterrupted_run(tmp_path):
    data = coco_subset(2)
    config = TrainConfig(epochs=2, batch=1, augment=True)
    straight = tiny_network()
    train(straight, data, config, Checkpoints(tmp_path / "a"))
    first = tiny_network()
    train(first, data, TrainConfig(epochs=1, batch=1, augment=True), Checkpoints(tmp_path / "b"))
    resumed = tiny_network()
    train(resumed, data, config, Checkpoints(tmp_path / "b"), resume=True)
    assert resumed.header.seen == straight.header.seen == 4
    for a, b in zip(straight.weight_tensors(), resumed.weight_tensors()):
        np.testing.assert_array_equal(a, b)
    again = Network.from_cfg(tmp_path / "b.cfg", tmp_path / "b.weights")
    assert again.header.seen == 4
    for a, b in zip(again.weight_tensors(), resumed.weight_tensors()):
        np.testing.assert_array_equal(a, b)


def test_resume_continues_qat_from_the_learned_input_ranges(tmp_path):
    """QAT's input ranges live in the checkpoint's cfg, not its .weights: resuming from the model file the
    run started with picks them up there and continues exactly as an uninterrupted run."""
    from dncompress.quant.apply import QuantConfig, quantize_network

    def student():
        float_net = tiny_network(lr=5e-5)
        calib = np.random.default_rng(0).random((2, *float_net.input_shape), dtype=np.float32)
        return quantize_network(float_net, QuantConfig(4, 4, keep_first_last=0), calib)
    data = coco_subset(2)
    config = TrainConfig(epochs=2, batch=1, augment=False)
    straight = student()
    train(straight, data, config, Checkpoints(tmp_path / "a"))
    train(student(), data, TrainConfig(epochs=1, batch=1, augment=False), Checkpoints(tmp_path / "b"))
    resumed = student()
    train(resumed, data, config, Checkpoints(tmp_path / "b"), resume=True)
    ranges = [[layer.act_range for layer in net.layers if layer.type == "quantize_convolutional"]
              for net in (student(), straight, resumed)]
    assert ranges[1] == ranges[2] and ranges[1] != ranges[0]
    for a, b in zip(straight.weight_tensors(), resumed.weight_tensors()):
        np.testing.assert_array_equal(a, b)


def test_train_cli_writes_checkpoints_and_refuses_to_overwrite(tmp_path):
    net = tiny_network()
    net.save(tmp_path / "tiny.cfg", tmp_path / "tiny.weights")
    data = tmp_path / "list.txt"
    data.write_text("\n".join(str(s.image) for s in coco_subset(2)))
    args = ["train", str(tmp_path / "tiny.cfg"), str(tmp_path / "tiny.weights"), "--data", str(data),
            "--epochs", "1", "--batch", "2", "--sparsity", "0.001", "-o", str(tmp_path / "out")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "epoch 1: loss/image box" in result.output and "|gamma| < 0.01" in result.output
    assert Network.from_cfg(tmp_path / "out.cfg", tmp_path / "out.weights").header.seen == 2
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 2 and "output exists" in again.output


def test_train_cli_distils_a_teacher_on_unlabelled_images(tmp_path):
    tiny_network(seed=1).save(tmp_path / "teacher.cfg", tmp_path / "teacher.weights")
    tiny_network(lr=0.001, seed=2).save(tmp_path / "student.cfg", tmp_path / "student.weights")
    images = tmp_path / "unlabelled"
    images.mkdir()
    for sample in coco_subset(2):
        (images / sample.image.name).write_bytes(sample.image.read_bytes())
    result = CliRunner().invoke(main, ["train", str(tmp_path / "student.cfg"), str(tmp_path / "student.weights"),
                                       "--data", str(images), "--epochs", "3", "--batch", "2", "--no-augment",
                                       "--teacher", str(tmp_path / "teacher.cfg"), str(tmp_path / "teacher.weights"),
                                       "-o", str(tmp_path / "distilled")])
    assert result.exit_code == 0, result.output
    losses = [float(line.split("distill ")[1].split(";")[0]) for line in result.output.splitlines()
              if "loss/image" in line]
    assert "box 0.000 obj 0.000 cls 0.000" in result.output  # no labels: the teacher alone
    assert len(losses) == 3 and losses[2] < losses[1] < losses[0]


def test_l1_reach_matches_the_optimizer_on_the_l1_term_alone():
    from dncompress.train.optim import SGD, Schedule
    from dncompress.train.sparsity import add_l1_subgradient, l1_reach
    net = tiny_network(lr=0.01)
    layers = prunable_bn_layers(net)
    for i in layers:
        net.layers[i].set_params(scales=np.full_like(net.layers[i].params["scales"], 10.0))
    schedule = Schedule(learning_rate=0.01, momentum=0.9, burn_in=5, steps=(12,), scales=(0.1,))
    optimizer, strength, batch, updates = SGD(net, schedule), 0.7, 4, 20
    for k in range(1, updates + 1):
        grads = {i: {"scales": np.zeros_like(net.layers[i].params["scales"])} for i in layers}
        add_l1_subgradient(net, grads, strength, batch)
        optimizer.step(grads, k, batch)
    moved = 10.0 - np.concatenate([net.layers[i].params["scales"] for i in layers])
    np.testing.assert_allclose(moved, l1_reach(schedule, strength, updates), rtol=1e-5)


def test_sparsity_advice_warns_when_the_l1_term_alone_reaches_the_median_gamma():
    from dncompress.train.optim import Schedule
    from dncompress.train.sparsity import l1_reach, sparsity_advice
    net = tiny_network()
    median = np.median(np.concatenate([np.abs(net.layers[i].params["scales"]) for i in prunable_bn_layers(net)]))
    schedule = Schedule(learning_rate=0.001)
    per_unit = l1_reach(schedule, 1.0, 100)
    assert sparsity_advice(net, schedule, 2 * median / per_unit, 100).startswith("warning: --sparsity")
    assert sparsity_advice(net, schedule, 0.5 * median / per_unit, 100) is None
    assert sparsity_advice(net, schedule, 0.01 * median / per_unit, 100).startswith("note: --sparsity")
    assert sparsity_advice(net, schedule, 0.0, 100) is None


def test_train_cli_warns_of_a_sparsity_that_can_collapse_the_model(tmp_path):
    net = tiny_network()
    net.save(tmp_path / "tiny.cfg", tmp_path / "tiny.weights")
    data = tmp_path / "list.txt"
    data.write_text("\n".join(str(s.image) for s in coco_subset(2)))
    result = CliRunner().invoke(main, ["train", str(tmp_path / "tiny.cfg"), str(tmp_path / "tiny.weights"),
                                       "--data", str(data), "--epochs", "1", "--batch", "2", "--lr", "0.01",
                                       "--burn-in", "0", "--sparsity", "1000", "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "warning: --sparsity 1000: over 1 updates the L1 term alone moves each |gamma| by up to 10 " in result.output
