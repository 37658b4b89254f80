"""Recovery by distillation: the objectness-scaled loss, frozen-BN training, the non-finite guard and
train.distill.finetune on tiny networks."""
from __future__ import annotations

import numpy as np
import pytest

from dncompress.cfg import parse_cfg, read_cfg
from dncompress.errors import DncompressError
from dncompress.network import Network
from dncompress.train.distill import FinetuneConfig, finetune
from dncompress.train.loop import Checkpoints, TrainConfig, train
from dncompress.train.loss import distillation_loss
from dncompress.train.runner import TrainRun

from helpers import small_network
from helpers import HEAD, build, coco_subset, numeric


def head_net():
    return build(HEAD, c=4, h=16, w=16)


def test_background_cells_teach_objectness_only():
    """Where the teacher sees nothing (objectness logit -30), box and class outputs get no gradient:
    the unweighted loss pulled every background cell's raw w, h toward the teacher's arbitrary values."""
    layer = head_net().heads[0]
    rng = np.random.default_rng(0)
    out, teacher = rng.normal(0, 3, (2, 1, 21, 16, 16))
    t = teacher.reshape(1, 3, 7, 16, 16)
    t[:, :, 4] = -30
    t[0, 1, 4, 5, 6] = 30  # one confident object
    parts, grad = distillation_loss(layer, out, teacher)
    g = grad.reshape(1, 3, 7, 16, 16)
    box_cls = np.concatenate([g[:, :, :4], g[:, :, 5:]], axis=2)
    assert np.abs(box_cls).sum() == pytest.approx(np.abs(box_cls[0, 1, :, 5, 6]).sum(), rel=1e-9)
    assert np.abs(box_cls[0, 1, :, 5, 6]).min() > 0
    assert np.count_nonzero(g[:, :, 4]) == 3 * 16 * 16  # objectness is taught everywhere
    # the box/class terms count one object's worth, not 768 cells' worth
    assert parts["distill_box"] + parts["distill_cls"] < 60


def test_frozen_bn_forward_is_the_inference_forward():
    net = small_network(3)
    x = np.random.default_rng(1).random((2, *net.input_shape), dtype=np.float32)
    frozen = TrainRun(net, frozen_bn=True).forward(x)
    for a, b in zip(frozen, net.forward(x)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * np.abs(b).max())
    batch_stats = TrainRun(net).forward(x, update_stats=False)
    assert max(np.abs(a - b).max() for a, b in zip(batch_stats, net.forward(x))) > 1e-2


def test_frozen_bn_gradients():
    body = ("[convolutional]\nbatch_normalize=1\nfilters=4\nsize=3\nstride=1\npad=1\nactivation=leaky\n"
            "[convolutional]\nbatch_normalize=1\nfilters=3\nsize=1\nstride=1\npad=0\nactivation=linear\n")
    net = build(body, h=6, w=5)
    rng = np.random.default_rng(2)
    for layer in net.layers:
        layer.set_params(rolling_mean=rng.normal(0, 1, layer.filters), rolling_variance=rng.random(layer.filters) + .5)
    x = rng.normal(0, 1, (2, *net.input_shape))
    run = TrainRun(net, np.float64, frozen_bn=True)
    out = run.forward(x)[0] if net.heads else run.forward(x, outputs=[1])[0]
    probe = rng.normal(0, 1, out.shape)
    grads = run.backward([probe])
    before = [layer.params["rolling_mean"].copy() for layer in net.layers]

    def f():
        return float((TrainRun(net, np.float64, frozen_bn=True).forward(x, outputs=[1])[0] * probe).sum())
    for index, layer_grads in grads.items():
        for name, g in layer_grads.items():
            array = net.layers[index].params[name]
            for _ in range(4):
                i = tuple(int(rng.integers(s)) for s in array.shape)
                assert g[i] == pytest.approx(numeric(f, array, i), rel=1e-5, abs=1e-7)
    assert all(np.array_equal(b, layer.params["rolling_mean"]) for b, layer in zip(before, net.layers))


def test_self_distillation_with_frozen_bn_has_zero_gradient():
    net = small_network(4)
    x = np.random.default_rng(0).random((2, *net.input_shape), dtype=np.float32)
    run = TrainRun(net, frozen_bn=True)
    outs = run.forward(x)
    for head, out, teach in zip(net.heads, outs, net.forward(x)):
        parts, grad = distillation_loss(head, out, teach)
        assert abs(sum(parts.values())) < 1e-3 and np.abs(grad).max() < 1e-4


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    """A teacher that turns NaN in epoch 2: the run stops with an error naming the step, the model and
    the epoch-1 checkpoint stay finite, and no partial file is left."""
    student, teacher = small_network(1), small_network(2)
    checkpoints = Checkpoints(tmp_path / "run")
    poisoned = {}

    def poison(epoch, record):
        poisoned["weights"] = (tmp_path / "run.weights").read_bytes()
        teacher.layers[0].set_params(weights=np.full_like(teacher.layers[0].params["weights"], np.nan))
    with pytest.raises(DncompressError, match="non-finite loss .* at epoch 2 step 1.*last good checkpoint"):
        train(student, coco_subset(2), TrainConfig(epochs=3, batch=2, augment=False), checkpoints, teacher,
              on_epoch=poison)
    assert (tmp_path / "run.weights").read_bytes() == poisoned["weights"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["run.cfg", "run.weights", "run_last.weights",
                                                                 "run_last.npz"])
    assert all(np.isfinite(t).all() for t in student.weight_tensors())


def test_finetune_moves_the_student_toward_the_teacher(tmp_path):
    teacher = small_network(1)
    student = small_network(1)
    for layer in student.layers:  # a perturbed copy of the teacher, as a pruned-and-refit model would be
        if "weights" in layer.params:
            w = layer.params["weights"]
            layer.set_params(weights=(w * (1 + 0.3 * np.random.default_rng(0).normal(size=w.shape))).astype(np.float32))
    before = [t.copy() for t in student.weight_tensors()]
    config = FinetuneConfig(epochs=4, lr=0.01, imgsz=64, batch=3, augment=False, use_labels=False)
    losses = []
    tuned, history = finetune(student, teacher, coco_subset(3), config, str(tmp_path / "ft"),
                              on_step=lambda log: losses.append(log.loss["distill"]))
    assert losses[-1] < 0.8 * losses[0], losses
    assert all(np.array_equal(a, b) for a, b in zip(before, student.weight_tensors()))  # input untouched
    assert tuned.info.width == 96 and len(history) == 4
    saved = read_cfg(tmp_path / "ft.cfg")[0]
    assert saved.options["width"] == "96"
    again = Network.from_cfg(tmp_path / "ft.cfg", tmp_path / "ft.weights")
    x = np.random.default_rng(0).random((1, *again.input_shape), dtype=np.float32)
    for a, b in zip(again.forward(x), tuned.forward(x)):
        np.testing.assert_array_equal(a, b)


def test_qat_at_w4a4_learns_its_input_steps_and_writes_the_model_it_trained(tmp_path):
    """QAT of a W4A4 darknet-q student (BN folded, min-max input ranges) for 4 updates: the distillation
    loss falls, the input grids' steps move (LSQ), and the written cfg/weights are exactly the trained
    model."""
    from dncompress.quant.apply import QuantConfig, quantize_network
    teacher = small_network(1)
    for head in teacher.heads:  # predicting something everywhere, so that the 4-bit student differs
        teacher.layers[head.inputs[0]].set_params(biases=np.zeros(255, np.float32))
    calib = np.random.default_rng(0).random((4, *teacher.input_shape), dtype=np.float32)
    student = quantize_network(teacher, QuantConfig(4, 4, keep_first_last=0), calib)
    steps = {layer.index: layer.input_step for layer in student.layers if getattr(layer, "input_step", None)}
    assert len(steps) == 6
    # BN folded: each weight carries gamma / sigma, so the rate that moves a float student (1e-2 in the
    # test above) blows this one up; 5e-5 moves it
    config = FinetuneConfig(epochs=4, lr=5e-5, imgsz=64, batch=3, augment=False, use_labels=False)
    losses = []
    tuned, _ = finetune(student, teacher, coco_subset(3), config, str(tmp_path / "qat"),
                        on_step=lambda log: losses.append(log.loss["distill"]))
    assert losses[-1] < losses[0], losses
    learned = {i: tuned.layers[i].input_step for i in steps}
    assert all(student.layers[i].input_step == steps[i] for i in steps)  # the input model untouched
    assert sum(learned[i] != pytest.approx(steps[i], rel=1e-3) for i in steps if i > 0) >= 2, (steps, learned)
    assert steps[0] == learned[0]  # the image's grid: no input gradient is computed there
    again = Network.from_cfg(tmp_path / "qat.cfg", tmp_path / "qat.weights")
    assert all(again.layers[i].act_range == tuned.layers[i].act_range for i in steps)
    x = np.random.default_rng(0).random((1, *again.input_shape), dtype=np.float32)
    for a, b in zip(again.forward(x), tuned.forward(x)):
        np.testing.assert_array_equal(a, b)


def test_finetune_refuses_different_heads():
    student = small_network(1)
    sections = [s.copy() for s in student.sections]
    with pytest.raises(DncompressError, match="classes"):
        other = Network(parse_cfg(open_cfg_with_classes(sections, 3)))
        finetune(student, other, coco_subset(2), FinetuneConfig(epochs=1))


def open_cfg_with_classes(sections, classes):
    from dncompress.cfg import write_cfg
    text = write_cfg(sections)
    return text.replace("classes=80", f"classes={classes}").replace("filters=255", f"filters={3 * (5 + classes)}")


def test_prune_cli_finetune_writes_the_recovered_model(tmp_path):
    from click.testing import CliRunner

    from helpers import COCO_FEW
    from dncompress.cli import main
    small_network(0).save(tmp_path / "m.cfg", tmp_path / "m.weights")
    out = str(tmp_path / "p")
    result = CliRunner().invoke(main, ["prune", str(tmp_path / "m.cfg"), str(tmp_path / "m.weights"), "--ratio", "0.3",
                                       "--criterion", "bn", "--classes", "person,dog", "--finetune", "1", "--finetune-imgsz", "64",
                                       "--batch", "4", "--data", str(COCO_FEW), "-o", out])
    assert result.exit_code == 0, result.output
    assert "fine-tune epoch 1/1 step 3/3" in result.output
    assert "fidelity to the original" in result.output and "(fine-tuned on them: not held out)" in result.output
    tuned = Network.from_cfg(f"{out}.cfg", f"{out}.weights")
    assert tuned.info.width == 96 and tuned.heads[0].classes == 2 and (tmp_path / "p.names").exists()
    assert all(np.isfinite(t).all() for t in tuned.weight_tensors())
    again = CliRunner().invoke(main, ["prune", str(tmp_path / "m.cfg"), str(tmp_path / "m.weights"), "--ratio", "0.3",
                                      "--finetune", "1", "-o", out, "--data", str(COCO_FEW)])
    assert again.exit_code == 2 and "output exists" in again.output


def test_train_cli_refuses_a_teacher_with_other_heads(tmp_path):
    from click.testing import CliRunner

    from helpers import COCO_FEW
    from dncompress.cli import main
    from dncompress.prune.classes import specialize_classes
    net = small_network(0)
    net.save(tmp_path / "s.cfg", tmp_path / "s.weights")
    specialize_classes(net, [0, 16]).save(tmp_path / "t.cfg", tmp_path / "t.weights")
    result = CliRunner().invoke(main, ["train", str(tmp_path / "s.cfg"), str(tmp_path / "s.weights"), "--data",
                                       str(COCO_FEW), "--epochs", "1", "--teacher", str(tmp_path / "t.cfg"),
                                       str(tmp_path / "t.weights"), "-o", str(tmp_path / "out")])
    assert result.exit_code == 2 and "heads differ" in result.output
    assert not list(tmp_path.glob("out*"))


@pytest.mark.slow
def test_ctrl_c_mid_finetune_leaves_the_last_complete_epoch(tmp_path):
    """prune --finetune saves every epoch; a Ctrl-C after the first leaves a loadable PREFIX.cfg/.weights of
    a complete epoch and no temp file."""
    import os
    import signal
    import subprocess
    import sys

    from helpers import COCO_FEW, ROOT
    small_network(0).save(tmp_path / "m.cfg", tmp_path / "m.weights")
    env = {**os.environ, "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    args = ["prune", "m.cfg", "m.weights", "--ratio", "0.3", "--criterion", "bn", "--finetune", "200",
            "--finetune-imgsz", "64", "--batch", "4", "--data", str(COCO_FEW), "-o", "p"]
    process = subprocess.Popen([sys.executable, "-m", "dncompress", *args], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=env,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        while True:
            line = process.stderr.readline()
            assert line, "exited before fine-tuning"
            if "epoch 2/200 step 1/" in line:  # epoch 1 is saved before epoch 2 starts
                break
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130, stderr
    assert not list(tmp_path.glob(".*.tmp"))
    saved = Network.from_cfg(tmp_path / "p.cfg", tmp_path / "p.weights")
    assert saved.info.width == 96 and saved.header.seen >= 12


def test_compare_many_against_direct_predictions_each_model_at_its_own_size():
    from helpers import COCO_FEW
    from dncompress.data import load_dataset
    from dncompress.eval import compare_many, compare_models, evaluate, fidelity_dataset, predict
    from dncompress.prune.workflow import resized
    reference, a, b = small_network(0), small_network(1), small_network(2)
    for net in (reference, a, b):  # heads that detect class 0 (only: evaluation stays fast), so figures are not 0
        for head in net.heads:
            conv = net.layers[head.inputs[0]]
            biases = conv.params["biases"].reshape(len(head.mask), -1).copy()
            biases[:, :6] = 0
            conv.set_params(biases=biases.ravel())
    small = resized(b, b.info.width - 32, b.info.height - 32)
    data = load_dataset(COCO_FEW)
    data.items = data.items[:2]
    many = compare_many(reference, [a, b, small], data)
    classes = reference.heads[0].classes

    def preds(net):
        return predict(net.forward, net.heads, data, net.info.width, net.info.height, progress=False)
    ref = preds(reference)
    before = evaluate(ref, data, classes)
    for net, got in zip((a, b, small), many):
        after = evaluate(preds(net), data, classes)
        assert got == {"fidelity_map50": evaluate(preds(net), fidelity_dataset(ref, data), classes).map50,
                       "map50": [before.map50, after.map50], "map50_95": [before.map50_95, after.map50_95]}
    assert many[0] == compare_models(reference, a, data, progress=False)
    assert many[0]["fidelity_map50"] > 0
