"""[summax_convolutional] (Sum-and-Max neuron): forward and backward against per-pixel loops, numerical
gradients, .weights and cfg round trips, stats/export/prune/quantize behaviour, a short training run."""
from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from dncompress.cfg import parse_cfg, write_cfg
from dncompress.cli import main
from dncompress.engine.summax import summax2d, summax2d_backward
from dncompress.errors import DncompressError
from dncompress.export.onnx import build_onnx, parity
from dncompress.network import Network
from dncompress.prune.groups import channel_groups
from dncompress.quant.apply import QuantConfig, quantize_network
from dncompress.stats import layer_costs
from dncompress.train.loss import softmax_cross_entropy
from dncompress.train.optim import SGD, Schedule
from dncompress.train.runner import TrainRun

from helpers import build, check_network

SAM = ("[summax_convolutional]\nbatch_normalize={bn}\nfilters={f}\nsize={k}\nstride={s}\npad={p}\ngroups={g}\n"
       "activation={a}\n")
GEOMETRIES = [(4, 3, 1, 1, 1), (5, 3, 2, 1, 1), (6, 3, 1, 1, 3), (4, 2, 2, 0, 1), (3, 1, 1, 0, 1)]


def windows(x, k, s, p, g, o):
    """Yield (n, f, i, j, values, flat tap indices) of every output's receptive field inside the image."""
    n_img, c, h, w = x.shape
    cg = c // g
    for n in range(n_img):
        for f in range(o):
            first = f // (o // g) * cg
            for i in range((h + 2 * p - k) // s + 1):
                for j in range((w + 2 * p - k) // s + 1):
                    taps = [(cc, ky, kx) for cc in range(cg) for ky in range(k) for kx in range(k)
                            if 0 <= i * s - p + ky < h and 0 <= j * s - p + kx < w]
                    values = np.array([x[n, first + cc, i * s - p + ky, j * s - p + kx] for cc, ky, kx in taps])
                    yield n, f, i, j, values, [np.ravel_multi_index(t, (cg, k, k)) for t in taps], first


def reference(x, w_max, w_min, s, p, g):
    """Per-pixel loop: max(x + W+) + min(x + W-) over the in-image cells of each window."""
    o, _, k, _ = w_max.shape
    y = np.zeros((len(x), o, (x.shape[2] + 2 * p - k) // s + 1, (x.shape[3] + 2 * p - k) // s + 1))
    for n, f, i, j, values, taps, _ in windows(x, k, s, p, g, o):
        y[n, f, i, j] = (values + w_max[f].ravel()[taps]).max() + (values + w_min[f].ravel()[taps]).min()
    return y


def reference_backward(x, w_max, w_min, grad, s, p, g):
    """Per-pixel loop: each output's gradient to its first argmax and first argmin tap."""
    o, _, k, _ = w_max.shape
    dx, d_max, d_min = np.zeros_like(x), np.zeros_like(w_max), np.zeros_like(w_min)
    for n, f, i, j, values, taps, first in windows(x, k, s, p, g, o):
        for weights, d_w, pick in ((w_max, d_max, np.argmax), (w_min, d_min, np.argmin)):
            tap = taps[pick(values + weights[f].ravel()[taps])]
            cc, ky, kx = np.unravel_index(tap, (x.shape[1] // g, k, k))
            d_w[f, cc, ky, kx] += grad[n, f, i, j]
            dx[n, first + cc, i * s - p + ky, j * s - p + kx] += grad[n, f, i, j]
    return dx, d_max, d_min


@pytest.mark.parametrize("o,k,s,p,g", GEOMETRIES)
def test_forward_and_backward_match_per_pixel_loops(o, k, s, p, g):
    rng = np.random.default_rng(o + k)
    x = rng.normal(0, 1, (2, 6, 5, 7))
    w_max, w_min = rng.normal(0, 1, (2, o, 6 // g, k, k))
    y, arg_max, arg_min = summax2d(x, w_max, w_min, s, p, g, with_index=True)
    np.testing.assert_allclose(y, reference(x, w_max, w_min, s, p, g), atol=1e-12)
    np.testing.assert_allclose(summax2d(x.astype(np.float32), w_max.astype(np.float32), w_min.astype(np.float32),
                                        s, p, g), y, atol=1e-5)
    grad = rng.normal(0, 1, y.shape)
    ours = summax2d_backward(x.shape, arg_max, arg_min, grad, k, s, p)
    for a, b in zip(ours, reference_backward(x, w_max, w_min, grad, s, p, g)):
        np.testing.assert_allclose(a, b, atol=1e-12)


def test_padded_cells_never_win():
    # zero padding would let 0 + W+ win the max on the border; -inf/+inf padding leaves x + W everywhere
    x = np.full((1, 1, 4, 4), -5.0)
    y = summax2d(x, np.zeros((1, 1, 3, 3)), np.zeros((1, 1, 3, 3)), 1, 1)
    assert (y == -10).all()
    x = np.full((1, 1, 4, 4), 5.0)
    assert (summax2d(x, np.zeros((1, 1, 3, 3)), np.zeros((1, 1, 3, 3)), 1, 1) == 10).all()


def test_ties_go_to_the_first_tap():
    _, arg_max, arg_min = summax2d(np.ones((1, 1, 2, 2)), np.zeros((1, 1, 2, 2)), np.zeros((1, 1, 2, 2)), 1, 0,
                                   with_index=True)
    assert arg_max.ravel().tolist() == [0] and arg_min.ravel().tolist() == [0]


@pytest.mark.parametrize("bn", [0, 1])
@pytest.mark.parametrize("o,k,s,p,g", GEOMETRIES)
def test_gradients(bn, o, k, s, p, g):
    check_network(build(SAM.format(bn=bn, f=o, k=k, s=s, p=p, g=g, a="leaky"), c=3 * (g > 1) + 3, h=7, w=6))


def test_gradients_through_a_conv_and_maxpool():
    body = (SAM.format(bn=1, f=4, k=3, s=1, p=1, g=1, a="relu") + "[maxpool]\nsize=2\nstride=2\n"
            + SAM.format(bn=0, f=3, k=3, s=1, p=1, g=1, a="linear")
            + "[convolutional]\nfilters=2\nsize=3\nactivation=linear\n")
    check_network(build(body))


TOY = ("[net]\nwidth=6\nheight=5\nchannels=4\n" + SAM.format(bn=1, f=6, k=3, s=1, p=1, g=2, a="leaky")
       + SAM.format(bn=0, f=3, k=1, s=1, p=0, g=1, a="linear"))


def toy_network() -> Network:
    net = Network(parse_cfg(TOY), "sam.cfg")
    net.init_random(0)
    return net


def test_shapes_keys_and_layer_forward():
    net = toy_network()
    sam = net.layers[0]
    assert sam.out_shape == (6, 5, 6) and net.layers[1].out_shape == (3, 5, 6)
    assert sam.param_shapes() == {"biases": (6,), "scales": (6,), "rolling_mean": (6,), "rolling_variance": (6,),
                                  "weights_max": (6, 2, 3, 3), "weights_min": (6, 2, 3, 3)}
    x = np.random.default_rng(1).random((2, 4, 5, 6), dtype=np.float32)
    p = sam.params
    z = reference(x.astype(np.float64), p["weights_max"], p["weights_min"], 1, 1, 2)
    pre = (z - p["rolling_mean"][:, None, None]) / np.sqrt(p["rolling_variance"][:, None, None] + 1e-6) \
        * p["scales"][:, None, None] + p["biases"][:, None, None]
    np.testing.assert_allclose(sam.forward([x]), np.where(pre > 0, pre, 0.1 * pre), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("body,message", [(SAM.format(bn=0, f=2, k=3, s=1, p=1, g=1, a="linear")
                                           .replace("pad=1", "padding=3"), "must be below size=3"),
                                          (SAM.format(bn=0, f=3, k=3, s=1, p=1, g=2, a="linear"), "groups=2")])
def test_bad_keys_are_errors(body, message):
    with pytest.raises(DncompressError, match=message):
        Network(parse_cfg("[net]\nwidth=6\nheight=6\nchannels=4\n" + body))


def test_weights_and_cfg_round_trip(tmp_path):
    net = toy_network()
    net.save(tmp_path / "sam.cfg", tmp_path / "sam.weights")
    again = Network.from_cfg(tmp_path / "sam.cfg", tmp_path / "sam.weights")
    assert write_cfg(again.sections) == write_cfg(net.sections)
    for old, new in zip(net.layers, again.layers):
        assert old.params.keys() == new.params.keys()
        for name in old.params:
            np.testing.assert_array_equal(old.params[name], new.params[name])
    # file order: biases, BN, W+, W- of layer 0, then layer 1
    payload = np.fromfile(tmp_path / "sam.weights", np.float32)[5:]
    assert payload.size == net.param_count() == 4 * 6 + 2 * 6 * 18 + 3 + 2 * 3 * 6
    np.testing.assert_array_equal(payload[24:24 + 108], net.layers[0].params["weights_max"].ravel())
    np.testing.assert_array_equal(payload[132:240], net.layers[0].params["weights_min"].ravel())
    x = np.random.default_rng(2).random((1, 4, 5, 6), dtype=np.float32)
    np.testing.assert_array_equal(net.forward(x, keep={1})[0], again.forward(x, keep={1})[0])


def test_stats_counts_adds_and_compares_not_macs():
    first, second = layer_costs(toy_network())
    # layer 0: 180 outputs, 2*3*3 = 18 taps each; BN (not foldable into W+/W-) is one MAC per output
    assert (first.macs, first.adds, first.compares) == (180, 180 * (2 * 18 + 1), 180 * 2 * 17)
    assert (second.macs, second.adds, second.compares) == (0, 90 * (2 * 6 + 1), 90 * 2 * 5)
    assert first.bflops == pytest.approx((2 * 180 + first.adds + first.compares) / 1e9)
    assert second.energy["mac"] == pytest.approx(0.2 * (second.adds + second.compares))


HEADED = (TOY.replace("width=6", "width=9") + SAM.format(bn=1, f=18, k=3, s=2, p=1, g=3, a="mish")
          + "[region]\nanchors=1,1,2,2,3,3\nclasses=1\nnum=3\n")


@pytest.mark.parametrize("opset", [13, 18])
def test_onnx_export_matches_the_engine(opset):
    # opset 18 moves ReduceMax/ReduceMin axes from an attribute to an input
    net = Network(parse_cfg(HEADED))
    net.init_random(0)
    assert parity(net, build_onnx(net, opset, dynamic_batch=True), batch=2) < 1e-5


def test_cli_stats_export_prune_quantize(tmp_path):
    net = Network(parse_cfg(HEADED), "sam.cfg")
    net.init_random(0)
    cfg, weights = tmp_path / "sam.cfg", tmp_path / "sam.weights"
    net.save(cfg, weights)
    runner = CliRunner()
    stats = runner.invoke(main, ["stats", str(cfg)])
    assert stats.exit_code == 0 and "summax_convolutional" in stats.stdout and "G adds" in stats.stdout
    export = runner.invoke(main, ["export", str(cfg), str(weights), "-o", str(tmp_path / "m.onnx")])
    assert export.exit_code == 0, export.output
    for args, message in ((["prune", str(cfg), str(weights), "--ratio", "0.5", "-o", str(tmp_path / "p")],
                           "cannot be pruned"),
                          (["quantize", str(cfg), str(weights), "--act-bits", "none", "-o", str(tmp_path / "q")],
                           "cannot be quantized")):
        result = runner.invoke(main, args)
        assert result.exit_code == 2 and message in result.stderr and "[summax_convolutional]" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "sam.cfg", "sam.weights"]
    with pytest.raises(DncompressError):
        channel_groups(net)
    with pytest.raises(DncompressError):
        quantize_network(net, QuantConfig(act_bits=None), None, progress=False)


def test_training_lowers_the_loss():
    body = (SAM.format(bn=1, f=4, k=3, s=1, p=1, g=1, a="relu")
            + "[convolutional]\nfilters=2\nsize=6\nstride=1\npad=0\nactivation=linear\n")
    net = Network(parse_cfg("[net]\nwidth=6\nheight=6\nchannels=1\n" + body))
    net.init_random(0)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 32)
    x = rng.normal(0, 0.3, (32, 1, 6, 6)).astype(np.float32)
    x[labels == 1, :, :3] += 1  # class 1: bright top half
    run, sgd = TrainRun(net), SGD(net, Schedule(learning_rate=0.05))
    losses = []
    for step in range(30):
        loss, grad = softmax_cross_entropy(run.forward(x, outputs=[1])[0], labels)
        sgd.step(run.backward([grad]), step, len(x))
        losses.append(loss)
    assert losses[-1] < 0.5 * losses[0]
