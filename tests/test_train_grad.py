"""Numerical gradient checks (float64, tiny shapes) of every trainable layer type and the YOLOv3 loss."""
from __future__ import annotations

import numpy as np
import pytest

from dncompress.cfg import parse_cfg
from dncompress.engine.backward import maxpool2d_backward
from dncompress.train.loss import distillation_loss, softmax_cross_entropy, yolo_loss
from dncompress.train.runner import TrainRun

from helpers import CONV, HEAD, build, check_network, numeric

@pytest.mark.parametrize("bn,f,k,s,p,g", [(1, 4, 3, 1, 1, 1), (1, 5, 3, 2, 1, 1), (0, 4, 3, 2, 0, 1),
                                          (1, 4, 1, 1, 0, 1), (0, 6, 3, 1, 1, 3), (1, 4, 2, 2, 0, 1)])
def test_conv_gradients(bn, f, k, s, p, g):
    check_network(build(CONV.format(bn=bn, f=f, k=k, s=s, p=p, g=g, a="leaky"), c=3 * (g > 1) + 3, h=7, w=6))


@pytest.mark.parametrize("activation", ["linear", "leaky", "relu", "logistic", "mish", "swish"])
def test_activation_gradients(activation):
    check_network(build(CONV.format(bn=1, f=3, k=3, s=1, p=1, g=1, a=activation)))


@pytest.mark.parametrize("size,stride,extra", [(2, 2, ""), (2, 1, ""), (3, 2, ""), (3, 1, ""), (2, 2, "padding=0\n")])
def test_maxpool_gradients(size, stride, extra):
    body = CONV.format(bn=0, f=3, k=1, s=1, p=0, g=1, a="linear") + f"[maxpool]\nsize={size}\nstride={stride}\n{extra}"
    check_network(build(body, h=7, w=6))


def test_maxpool_ties_go_to_the_first_window_cell():
    x = np.ones((1, 1, 2, 2))
    grad = maxpool2d_backward(x, np.ones((1, 1, 1, 1)), 2, 2, 0)
    assert grad[0, 0].tolist() == [[1, 0], [0, 0]]


def test_upsample_route_groups_shortcut_gradients():
    body = (CONV.format(bn=1, f=4, k=3, s=2, p=1, g=1, a="leaky")      # 0: 4x4x4
            + "[upsample]\nstride=2\n"                                    # 1: 4x8x8
            + CONV.format(bn=1, f=4, k=3, s=1, p=1, g=1, a="leaky")      # 2: 4x8x8
            + "[route]\nlayers=-1,-2\ngroups=2\ngroup_id=1\n"             # 3: 4x8x8
            + "[shortcut]\nfrom=-2\nactivation=leaky\n"                   # 4
            + "[route]\nlayers=-1,0\n"                                    # 5 (0 is 4x4, so route 4 with 1)
            .replace("layers=-1,0", "layers=-1,1")
            + CONV.format(bn=0, f=3, k=1, s=1, p=0, g=1, a="linear"))
    check_network(build(body))


def head_network():
    net = build(CONV.format(bn=1, f=4, k=3, s=2, p=1, g=1, a="leaky") + HEAD, h=32, w=32)
    return net


LABELS = [np.array([[1, 0.3, 0.4, 0.1, 0.12], [0, 0.7, 0.2, 0.2, 0.3], [1, 0.5, 0.5, 0.9, 0.8]]),
          np.zeros((0, 5))]


def test_yolo_loss_gradient():
    net = head_network()
    rng = np.random.default_rng(3)
    out = rng.normal(0, 1, (2, 21, 16, 16))
    parts, grad = yolo_loss(net.heads[0], out, LABELS)
    assert parts["box"] > 0 and parts["cls"] > 0 and parts["obj"] > 0
    f = lambda: sum(yolo_loss(net.heads[0], out, LABELS)[0].values())  # noqa: E731
    # the responsible cells (anchor 0/1 at the two small truths) and a sample of the rest
    indices = [(0, 7 + c, 6, 4) for c in range(7)] + [(0, 14 + c, 3, 11) for c in range(7)]
    indices += [tuple(int(rng.integers(s)) for s in out.shape) for _ in range(20)]
    for index in indices:
        # a sum over 10k cells: a larger step keeps round-off below the tolerance
        assert grad[index] == pytest.approx(numeric(f, out, index, 1e-4), rel=1e-5, abs=1e-8), index
    # truth 0 (3.2x3.8 px) -> anchor 5,4 (slot 1) at row 6, col 4; truth 1 -> anchor 8,9 (slot 2) at 3, 11
    assert np.count_nonzero(grad[0, 7:14, 6, 4]) == 7 and np.count_nonzero(grad[0, 14:21, 3, 11]) == 7


def test_yolo_loss_targets_follow_darknet():
    """The 0.9x0.8 truth's best anchor (40x30 of 32 px) is not in mask 0,1,2: nothing is assigned for it;
    predictions overlapping a truth by more than ignore_thresh get no objectness gradient."""
    net = head_network()
    head = net.heads[0]
    out = np.zeros((1, 21, 16, 16))
    _, grad = yolo_loss(head, out, LABELS[:1])
    g = grad.reshape(1, 3, 7, 16, 16)
    assert np.count_nonzero(g[0, :, 0]) == 2   # x deltas only for the two small truths
    same = np.array([[0, 7.5 / 16, 7.5 / 16, 8 / 32, 9 / 32]])  # the 8x9-px anchor's shape, centred in cell 7,7
    _, grad2 = yolo_loss(head, np.zeros((1, 21, 16, 16)), [same])
    g2 = grad2.reshape(1, 3, 7, 16, 16)
    assert g2[0, 2, 4, 7, 7] == pytest.approx(0.5 - 1)    # responsible: objectness target 1
    assert g2[0, 2, 4, 7, 8] == 0                        # 2 px off: IoU 0.6 > 0.3 with the truth, ignored
    assert g2[0, 2, 4, 0, 0] == pytest.approx(0.5)       # far away: objectness target 0


def test_distillation_gradient_and_zero_at_teacher():
    net = head_network()
    rng = np.random.default_rng(4)
    out, teacher = rng.normal(0, 1, (2, 2, 21, 16, 16))
    parts, grad = distillation_loss(net.heads[0], out, teacher)
    assert all(v > 0 for v in parts.values())
    assert sum(distillation_loss(net.heads[0], teacher.copy(), teacher)[0].values()) == pytest.approx(0, abs=1e-9)
    f = lambda: sum(distillation_loss(net.heads[0], out, teacher)[0].values())  # noqa: E731
    for _ in range(20):
        index = tuple(int(rng.integers(s)) for s in out.shape)
        # a sum over 10k cells: a larger step keeps round-off below the tolerance
        assert grad[index] == pytest.approx(numeric(f, out, index, 1e-4), rel=1e-5, abs=1e-8)


QCONV = ("[quantize_convolutional]\nbatch_normalize=1\nfilters=4\nsize=3\nstride=1\npad=1\nactivation=leaky\n"
         "bitw=4\nbita=8\nact_min=-1.5\nact_max=1.5\n")


def test_qat_forward_uses_fake_quant_and_gradients_pass_straight_through():
    """A [quantize_convolutional] trains like a plain conv fed the fake-quantized input and weights; its
    weight gradient is that conv's (STE) and its input gradient is masked to the activation range."""
    from dncompress.engine.quantize import affine_params, fake_quantize_float32
    from dncompress.train.graph import train_weights
    quant = build(QCONV)
    plain = build(QCONV.replace("quantize_convolutional", "convolutional"))
    layer = quant.layers[0]
    plain.layers[0].set_params(**{**layer.params, "weights": train_weights(layer).astype(np.float64)})
    assert np.abs(train_weights(layer) - layer.params["weights"]).max() > 1e-3
    x = np.random.default_rng(5).normal(0, 1, (2, *quant.input_shape))
    runs = [TrainRun(net, np.float64, input_grad=True) for net in (quant, plain)]
    out_q = runs[0].forward(x, False, [0])[0]
    out_p = runs[1].forward(fake_quantize_float32(x, *affine_params(-1.5, 1.5, 8), 0, 255).astype(np.float64), False, [0])[0]
    np.testing.assert_allclose(out_q, out_p, rtol=1e-6, atol=1e-6)
    probe = np.random.default_rng(6).normal(0, 1, out_q.shape)
    grads_q, grads_p = runs[0].backward([probe]), runs[1].backward([probe])
    for name in ("weights", "scales", "biases"):
        np.testing.assert_allclose(grads_q[0][name], grads_p[0][name], rtol=1e-6, atol=1e-6)
    inside = np.abs(x) <= 1.5
    np.testing.assert_allclose(runs[0].input_grad[inside], runs[1].input_grad[inside], rtol=1e-6, atol=1e-6)
    assert not runs[0].input_grad[~inside].any() and (~inside).any()


QCONV4 = ("[quantize_convolutional]\nbatch_normalize=0\nfilters=4\nsize=3\nstride=1\npad=1\nactivation=leaky\n"
          "bitw=4\nbita=4\nact_min=-0.65\nact_max=2.35\n")


def test_qat_at_4_bits_is_the_inference_model_with_hand_written_ste_and_lsq_gradients():
    """W4A4, BN folded (what `quantize --format darknet-q` writes): the training forward is the engine's
    inference; the input gradient is the STE's, masked to the grid's own ends (act_min=-0.65 is off the
    grid: step 3/15 = 0.2, zero point round(3.25) = 3, so the grid spans -0.6..2.4, not -0.65..2.35); the
    step's gradient is LSQ's, written here by hand."""
    from dncompress.train.graph import train_weights
    quant = build(QCONV4, h=6, w=6)
    plain = build(QCONV4.replace("quantize_convolutional", "convolutional"), h=6, w=6)
    layer = quant.layers[0]
    plain.layers[0].set_params(**{**layer.params, "weights": train_weights(layer).astype(np.float64)})
    x = np.random.default_rng(7).normal(0.6, 1.2, (2, *quant.input_shape))
    step, zero = 0.2, 3
    code = np.round(x / step)
    q = step * (np.clip(code + zero, 0, 15) - zero)
    engine_q = layer.quantize_input(x).astype(np.float64)  # float32 arithmetic, as onnxruntime's
    np.testing.assert_allclose(engine_q, q, atol=1e-6)
    runs = [TrainRun(net, np.float64, input_grad=True) for net in (quant, plain)]
    out = runs[0].forward(x, False, [0])[0]
    np.testing.assert_allclose(out, layer.forward([x.astype(np.float32)]), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out, runs[1].forward(engine_q, False, [0])[0], rtol=1e-9, atol=1e-9)
    probe = np.random.default_rng(8).normal(0, 1, out.shape)
    grads, plain_grads = runs[0].backward([probe]), runs[1].backward([probe])
    np.testing.assert_allclose(grads[0]["weights"], plain_grads[0]["weights"], rtol=1e-9, atol=1e-9)
    dq = runs[1].input_grad
    inside = (x >= -0.6) & (x <= 2.4)
    assert inside.any() and (~inside).any() and ((x > 2.35) & (x < 2.4)).any() and ((x > -0.65) & (x < -0.6)).any()
    np.testing.assert_allclose(runs[0].input_grad, dq * inside, rtol=1e-9, atol=1e-12)
    d_step = np.where(inside, code - x / step, np.clip(code + zero, 0, 15) - zero)
    expected = (dq * d_step).sum()
    assert grads[0]["input_step"][0] == pytest.approx(expected, rel=1e-6)


def test_schedule_follows_darknet_steps_and_burn_in():
    from dncompress.train.optim import Schedule
    net = parse_cfg("[net]\nlearning_rate=0.01\nburn_in=100\npolicy=steps\nsteps=200,300\nscales=.1,.5\n")[0]
    schedule = Schedule.from_net(net)
    assert schedule.rate(50) == pytest.approx(0.01 * 0.5 ** 4)
    assert schedule.rate(150) == pytest.approx(0.01)
    assert schedule.rate(250) == pytest.approx(0.001)
    assert schedule.rate(300) == pytest.approx(0.0005)


def test_sgd_step_is_darknets_update():
    """v = m v - (g/batch + decay w) for weights, - g/batch for biases and scales; w += lr v."""
    from dncompress.train.optim import SGD, Schedule
    net = build(CONV.format(bn=1, f=2, k=1, s=1, p=0, g=1, a="linear"))
    layer = net.layers[0]
    before = {k: v.copy() for k, v in layer.params.items()}
    grads = {0: {k: np.full_like(before[k], 4.0) for k in ("weights", "biases", "scales")}}
    sgd = SGD(net, Schedule(learning_rate=0.1, momentum=0.5, decay=0.01))
    for _ in range(2):
        sgd.step(grads, batch_num=1, batch=2)
    v1_w = -(2.0 + 0.01 * before["weights"])
    w1 = before["weights"] + 0.1 * v1_w
    np.testing.assert_allclose(layer.params["weights"], w1 + 0.1 * (0.5 * v1_w - (2.0 + 0.01 * w1)), rtol=1e-5)
    np.testing.assert_allclose(layer.params["biases"], before["biases"] + 0.1 * (-2.0) + 0.1 * (0.5 * -2.0 - 2.0),
                               rtol=1e-5)
    np.testing.assert_array_equal(layer.params["rolling_mean"], before["rolling_mean"])


def test_softmax_cross_entropy_gradient():
    rng = np.random.default_rng(5)
    logits = rng.normal(0, 3, (4, 10, 1, 1))
    labels = np.array([0, 9, 3, 3])
    value, grad = softmax_cross_entropy(logits, labels)
    p = np.exp(logits[:, :, 0, 0]) / np.exp(logits[:, :, 0, 0]).sum(axis=1, keepdims=True)
    assert value == pytest.approx(-np.log(p[np.arange(4), labels]).sum())
    f = lambda: softmax_cross_entropy(logits, labels)[0]  # noqa: E731
    for index in [(0, 0, 0, 0), (1, 9, 0, 0), (1, 2, 0, 0), (3, 3, 0, 0), (2, 7, 0, 0)]:
        assert grad[index] == pytest.approx(numeric(f, logits, index), rel=1e-5, abs=1e-8)
    assert softmax_cross_entropy(np.array([[1000.0, 0.0]]), np.array([1]))[0] == pytest.approx(1000)
