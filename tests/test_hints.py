"""Feature imitation ("hints") for recovery: the loss and its gradient against finite differences, the
least-squares adapter against a known linear map, and a fine-tune that uses them on a channel-pruned copy."""
from __future__ import annotations

import numpy as np
import pytest

from dncompress.prune.apply import prune_network
from dncompress.prune.criteria import CRITERIA
from dncompress.prune.groups import channel_groups
from dncompress.prune.plan import plan_pruning
from dncompress.train.distill import FinetuneConfig, finetune, fitted_hints
from dncompress.train.hints import Hint, fit_hints, hint_layers, hint_loss

from helpers import coco_subset, numeric, small_network


def test_hint_loss_value_and_gradient():
    rng = np.random.default_rng(0)
    hint = Hint(3, rng.normal(size=(5, 3)), rng.normal(size=5), 2.5)
    out, teacher = rng.normal(size=(2, 3, 4, 4)), rng.normal(size=(2, 5, 4, 4))
    value, grad = hint_loss(hint, out, teacher, 0.7)
    mapped = np.einsum("ts,nshw->nthw", hint.adapter, out) + hint.bias.reshape(1, -1, 1, 1)
    assert value == pytest.approx(0.7 * np.sum((mapped - teacher) ** 2) / (2.5 * 5 * 16))
    for index in [(0, 0, 0, 0), (1, 2, 3, 1), (0, 1, 2, 3)]:
        assert grad[index] == pytest.approx(numeric(lambda: hint_loss(hint, out, teacher, 0.7)[0], out, index),
                                            rel=1e-6)


def test_adapter_recovers_a_linear_map_and_the_loss_vanishes():
    rng = np.random.default_rng(1)
    s = rng.normal(size=(3, 4, 10, 10))
    m, b = rng.normal(size=(6, 4)), rng.normal(size=6)
    t = np.einsum("ts,nshw->nthw", m, s) + b.reshape(1, -1, 1, 1)
    (hint,) = fit_hints({7: s}, {7: t}, ridge=1e-9)
    np.testing.assert_allclose(hint.adapter, m, atol=1e-4)
    np.testing.assert_allclose(hint.bias, b, atol=1e-4)
    assert hint.layer == 7 and hint.variance == pytest.approx(t.var(axis=(0, 2, 3)).mean(), rel=1e-6)
    assert hint_loss(hint, s, t, 1.0)[0] < 1e-8


def test_hints_on_a_pruned_student_fall_during_finetune(tmp_path):
    teacher = small_network(2)
    student = prune_network(teacher, plan_pruning(channel_groups(teacher), CRITERIA["l1"](teacher), 0.5, "layer"))
    assert sum(layer.filters < t.filters for layer, t in zip(student.layers, teacher.layers)
               if layer.type == "convolutional") >= 2
    layers = hint_layers(student, teacher)
    assert layers and not {h.index for h in student.heads} & set(layers)
    hints = fitted_hints(student, teacher, coco_subset(2))
    assert [h.layer for h in hints] == layers
    relative = {}
    for weight in (1.0, 1e-6):  # 1e-6: the hint error measured, but (almost) not trained
        config = FinetuneConfig(epochs=4, lr=0.01, imgsz=64, batch=3, augment=False, use_labels=False, hints=weight)
        steps = []
        finetune(student, teacher, coco_subset(3), config, str(tmp_path / "ft"), on_step=lambda log: steps.append(log.loss))
        relative[weight] = [s["hint"] / weight for s in steps]
    assert np.all(np.diff(relative[1.0]) < 0), relative
    assert relative[1.0][-1] < relative[1e-6][-1] - 0.02, relative


def test_prune_cli_finetune_hints(tmp_path):
    """`prune --finetune N --finetune-hints W` trains with the hint loss (it shows in every step line) and
    writes the recovered model."""
    from click.testing import CliRunner

    from helpers import COCO_FEW
    from dncompress.cli import main
    from dncompress.network import Network
    small_network(0).save(tmp_path / "m.cfg", tmp_path / "m.weights")
    out = str(tmp_path / "p")
    result = CliRunner().invoke(main, ["prune", str(tmp_path / "m.cfg"), str(tmp_path / "m.weights"), "--ratio", "0.3",
                                       "--criterion", "bn", "--finetune", "1", "--finetune-imgsz", "64",
                                       "--finetune-hints", "2", "--batch", "4", "--data", str(COCO_FEW), "-o", out])
    assert result.exit_code == 0, result.output
    assert ", hints 2)" in result.output
    steps = [line for line in result.output.splitlines() if line.startswith("fine-tune epoch")]
    assert len(steps) == 3 and all(" hint " in line for line in steps)
    tuned = Network.from_cfg(f"{out}.cfg", f"{out}.weights")
    assert all(np.isfinite(t).all() for t in tuned.weight_tensors())
