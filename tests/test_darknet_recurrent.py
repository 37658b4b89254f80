"""[rnn], [gru], [lstm], [crnn]: .weights order as Darknet's parser.c reads it, and the engine's time steps
against a float64 numpy transcription of Darknet's C forward functions (rnn_layer.c, gru_layer.c,
lstm_layer.c, crnn_layer.c: unfused batchnorm on running statistics, then bias, then the activation,
state carried over the steps), which OpenCV DNN cannot load."""
from __future__ import annotations

import numpy as np
import pytest

from dncompress.cfg import parse_cfg
from dncompress.engine.conv import conv2d
from dncompress.errors import DncompressError
from dncompress.export.onnx import build_onnx, onnx_forward
from dncompress.layers.conv import BN_EPS
from dncompress.network import Network

# parser.c load_weights_upto: the sub-layers of each type in file order
FILE_ORDER = {
    "rnn": ["input", "self", "output"],
    "gru": ["input_z", "input_r", "input_h", "state_z", "state_r", "state_h"],
    "lstm": ["wf", "wi", "wg", "wo", "uf", "ui", "ug", "uo"],
    "crnn": ["input", "self", "output"],
}
CONNECTED_TENSORS = ["biases", "weights", "scales", "rolling_mean", "rolling_variance"]   # load_connected_weights
CONV_TENSORS = ["biases", "scales", "rolling_mean", "rolling_variance", "weights"]        # load_convolutional_weights


def network(layer: str, net: str = "inputs=6", bn: int = 1, after: str = "") -> Network:
    text = f"[net]\n{net}\n\n[{layer}]\nbatch_normalize={bn}\n{after}\n"
    return Network(parse_cfg(text, "t.cfg"))


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


ACT = {"leaky": lambda x: np.where(x > 0, x, 0.1 * x), "linear": lambda x: x, "logistic": sigmoid,
       "tanh": np.tanh, "loggy": lambda x: 2 * sigmoid(x) - 1}


def c_connected(layer, name, x, activation):
    """forward_connected_layer, float64: gemm(x, W^T), normalize_cpu, scale_bias, + biases, activate."""
    p = {k: layer.params[f"{name}.{k}"].astype(np.float64) for k in CONNECTED_TENSORS if f"{name}.{k}" in layer.params}
    out = x.reshape(len(x), -1) @ p["weights"].T
    if "scales" in p:
        out = (out - p["rolling_mean"]) / np.sqrt(p["rolling_variance"] + BN_EPS) * p["scales"]
    return ACT[activation](out + p["biases"])


def c_conv(layer, name, x, activation):
    """forward_convolutional_layer, float64 (stride 1), then the same batchnorm, bias and activation."""
    p = {k: layer.params[f"{name}.{k}"].astype(np.float64) for k in CONV_TENSORS if f"{name}.{k}" in layer.params}
    out = conv2d(x, p["weights"], None, 1, layer.pad, layer.groups)
    shape = (1, -1, 1, 1)
    if "scales" in p:
        out = (out - p["rolling_mean"].reshape(shape)) / np.sqrt(p["rolling_variance"].reshape(shape) + BN_EPS) \
            * p["scales"].reshape(shape)
    return ACT[activation](out + p["biases"].reshape(shape))


def c_rnn(layer, xs, sub):
    """forward_rnn_layer / forward_crnn_layer at inference over len(xs) calls (state from calloc)."""
    n_hidden = layer.parts[1][1]
    state = np.zeros((len(xs[0]), n_hidden, *layer.out_shape[1:]) if layer.type == "crnn" else (len(xs[0]), n_hidden))
    outs = []
    log = layer.section.get_int("logistic", 0)
    self_act = {0: layer.activation, 1: "logistic", 2: "loggy"}[log]
    for x in xs:
        a = sub(layer, "input", x, layer.activation)
        b = sub(layer, "self", state, self_act)
        state = (state if layer.shortcut else 0) + a + b
        outs.append(sub(layer, "output", state, layer.activation))
    return outs


def c_gru(layer, xs):
    """forward_gru_layer (h~ logistic: USET is not defined in gru_layer.c)."""
    state = np.zeros((len(xs[0]), layer.outputs))
    outs = []
    for x in xs:
        z = sigmoid(c_connected(layer, "input_z", x, "linear") + c_connected(layer, "state_z", state, "linear"))
        r = sigmoid(c_connected(layer, "input_r", x, "linear") + c_connected(layer, "state_r", state, "linear"))
        h = sigmoid(c_connected(layer, "input_h", x, "linear") + c_connected(layer, "state_h", r * state, "linear"))
        state = z * state + (1 - z) * h          # weighted_sum_cpu(state, h, z)
        outs.append(state)
    return outs


def c_lstm(layer, xs):
    """forward_lstm_layer."""
    h = c = np.zeros((len(xs[0]), layer.outputs))
    outs = []
    for x in xs:
        gate = {g: c_connected(layer, f"w{g}", h, "linear") + c_connected(layer, f"u{g}", x, "linear") for g in "figo"}
        f, i, o, g = sigmoid(gate["f"]), sigmoid(gate["i"]), sigmoid(gate["o"]), np.tanh(gate["g"])
        c = f * c + i * g
        h = o * np.tanh(c)
        outs.append(h)
    return outs


CASES = {
    "rnn": ("rnn", "output=5\nhidden=7\nactivation=leaky"),
    "rnn-shortcut-logistic": ("rnn", "output=5\nhidden=7\nactivation=leaky\nshortcut=1\nlogistic=1"),
    "rnn-loggy-nobn": ("rnn", "output=5\nhidden=7\nactivation=tanh\nlogistic=2"),
    "gru": ("gru", "output=5"),
    "lstm": ("lstm", "output=5"),
    "crnn": ("crnn", "output=4\nhidden=6\nsize=3\npad=1\nactivation=leaky"),
    "crnn-groups-shortcut": ("crnn", "output=4\nhidden=6\nsize=3\npad=1\ngroups=2\nshortcut=1\nactivation=leaky"),
}


def build(case: str) -> Network:
    kind, keys = CASES[case]
    net_keys = "width=5\nheight=4\nchannels=2" if kind == "crnn" else "inputs=6"
    net = network(kind, net_keys, bn=0 if "nobn" in case else 1, after=keys)
    net.init_random(3)
    return net


@pytest.mark.parametrize("case", sorted(CASES))
def test_steps_match_darknet_c(case):
    """Three time steps of the engine (state carried by `step`) against the C transcription; the first
    step is also what Network.forward returns."""
    net = build(case)
    layer = net.layers[0]
    rng = np.random.default_rng(0)
    xs = [rng.normal(size=(2, *net.input_shape)).astype(np.float32) for _ in range(3)]
    if layer.type in ("rnn", "crnn"):
        expected = c_rnn(layer, [x.astype(np.float64) for x in xs], c_conv if layer.type == "crnn" else c_connected)
    else:
        expected = (c_gru if layer.type == "gru" else c_lstm)(layer, [x.astype(np.float64) for x in xs])
    state = layer.initial_state(2)
    for x, want in zip(xs, expected):
        got, state = layer.step(x, state)
        assert got.shape == (2, *layer.out_shape)
        np.testing.assert_allclose(got.reshape(want.shape), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(net.forward(xs[0])[0].reshape(expected[0].shape), expected[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", sorted(CASES))
def test_onnx_export_of_one_step(case):
    net = build(case)
    x = np.random.default_rng(1).normal(size=(2, *net.input_shape)).astype(np.float32)
    ours = net.forward(x)[0]
    theirs = onnx_forward(build_onnx(net, dynamic_batch=True))(x)[0]
    np.testing.assert_allclose(theirs, ours, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", sorted(FILE_ORDER))
def test_weights_file_order(kind, tmp_path):
    """A payload of consecutive numbers lands in each sub-layer's tensors in parser.c's order."""
    keys = CASES[kind][1]
    net = network(kind, "width=3\nheight=3\nchannels=2" if kind == "crnn" else "inputs=6", after=keys)
    layer = net.layers[0]
    tensors = CONV_TENSORS if kind == "crnn" else CONNECTED_TENSORS
    expected_names = [f"{part}.{t}" for part in FILE_ORDER[kind] for t in tensors]
    assert list(layer.param_shapes()) == expected_names
    total = net.param_count()
    net.load_payload(net.header, np.arange(total, dtype=np.float32) + 1)
    start = 1
    for name in expected_names:
        value = layer.params[name]
        assert value.ravel()[0] == start and value.ravel()[-1] == start + value.size - 1, name
        start += value.size
    # sizes Darknet's make_*_layer allocate: e.g. an lstm's u* take inputs, w* take outputs
    if kind == "lstm":
        assert layer.params["uf.weights"].shape == (5, 6) and layer.params["wf.weights"].shape == (5, 5)
    # written back in the same order
    net.save(tmp_path / "r.cfg", tmp_path / "r.weights")
    again = Network.from_cfg(tmp_path / "r.cfg", tmp_path / "r.weights")
    for name in expected_names:
        np.testing.assert_array_equal(again.layers[0].params[name], layer.params[name])


def test_inputs_only_net_reads_a_vector():
    net = network("rnn", "inputs=256", after="output=8\nhidden=4")
    assert net.input_shape == (256, 1, 1) and net.layers[0].out_shape == (8, 1, 1)


@pytest.mark.parametrize("keys, message", [
    ("output=4\nhidden=6\nsize=3\npad=0", "pad"),
    ("output=4\nhidden=6\nsize=3\npad=1\nstride=2", "stride=2"),
    ("output=4\nhidden=6\nsize=1\ngroups=4", "groups=4"),
])
def test_crnn_refuses_what_darknet_cannot_run(keys, message):
    with pytest.raises(DncompressError, match=message) as info:
        network("crnn", "width=5\nheight=5\nchannels=2", after=keys)
    assert "t.cfg:line" in str(info.value) and "[crnn]" in str(info.value)
