"""Darknet-world layers and cfg syntax (issue 18) against brute-force transcriptions of Darknet's C loops:
reorg_cpu, shortcut_multilayer_cpu, softmax_cpu, forward_crop/local/local_avgpool/scale_channels/sam,
yolo new_coords and Gaussian_yolo decoding; ONNX export of each against the engine."""
from __future__ import annotations


import numpy as np
import pytest

from dncompress.cfg import parse_cfg
from dncompress.detect import decode_gaussian_yolo, decode_yolo
from dncompress.errors import DncompressError
from dncompress.export.onnx import build_onnx, onnx_forward
from dncompress.network import Network


def build(body: str, w: int = 8, h: int = 8, c: int = 4, seed: int = 0) -> Network:
    net = Network(parse_cfg(f"[net]\nwidth={w}\nheight={h}\nchannels={c}\n" + body))
    net.init_random(seed)
    return net


def run(net: Network, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    x = np.random.default_rng(seed).normal(size=(2, *net.input_shape)).astype(np.float32)
    return x, net.forward(x, keep={len(net.layers) - 1})[0]


def onnx_matches(net: Network, x: np.ndarray, ours: np.ndarray, tol: float = 1e-5) -> None:
    theirs = onnx_forward(build_onnx(net, dynamic_batch=True))(x)[-1]
    assert theirs.shape == ours.shape
    np.testing.assert_allclose(theirs, ours, atol=tol * max(1.0, float(np.abs(ours).max())))


def darknet_reorg_cpu(x: np.ndarray, w: int, h: int, c: int, stride: int, forward: int) -> np.ndarray:
    """blas.c reorg_cpu, batch 1, flat in and out."""
    out = np.zeros_like(x)
    out_c = c // (stride * stride)
    for k in range(c):
        for j in range(h):
            for i in range(w):
                in_index = i + w * (j + h * k)
                c2, offset = k % out_c, k // out_c
                w2, h2 = i * stride + offset % stride, j * stride + offset // stride
                out_index = w2 + w * stride * (h2 + h * stride * c2)
                if forward:
                    out[out_index] = x[in_index]
                else:
                    out[in_index] = x[out_index]
    return out


def test_reorg_is_darknets_reorg_old():
    net = build("[reorg]\nstride=2\n", w=6, h=4, c=8)
    x, y = run(net)
    for b in range(2):
        # reorg_old_layer: reorg_cpu(input, l.w, l.h, l.c, batch, stride, 0, output) with the INPUT sizes
        ref = darknet_reorg_cpu(x[b].ravel(), 6, 4, 8, 2, 0)
        np.testing.assert_array_equal(y[b].ravel(), ref)
    assert y.shape == (2, 32, 2, 3)
    onnx_matches(net, x, y, 0)


def test_reorg3d_is_space_to_depth():
    net = build("[reorg3d]\nstride=2\n", w=6, h=4, c=3)
    x, y = run(net)
    for b in range(2):
        # reorg_layer: reorg_cpu(input, l.out_w, l.out_h, l.out_c, batch, stride, 0, output)
        ref = darknet_reorg_cpu(x[b].ravel(), 3, 2, 12, 2, 0)
        np.testing.assert_array_equal(y[b].ravel(), ref)
        np.testing.assert_array_equal(y[b, 1 * 3 + 2], x[b, 2, 0::2, 1::2])   # (dy=0, dx=1), channel 2
    onnx_matches(net, x, y, 0)


@pytest.mark.parametrize("c_prev, c_from, hw_from", [(8, 4, 8), (4, 8, 8), (8, 8, 4), (4, 16, 4)])
def test_shortcut_other_shapes_adds_flat_values_as_darknet(c_prev, c_from, hw_from):
    # layer 0: the added layer (8x8 or, strided, 4x4); layer 2: the previous layer, 8x8; layer 3: shortcut
    stride = 8 // hw_from
    net = build(f"[convolutional]\nfilters={c_from}\nsize=1\nstride={stride}\nactivation=linear\n"
                f"[convolutional]\nfilters={c_prev}\nsize=1\nactivation=linear\n"
                f"[upsample]\nstride={stride}\n"
                "[shortcut]\nfrom=-3\nactivation=leaky\n")
    x = np.random.default_rng(1).normal(size=(2, *net.input_shape)).astype(np.float32)
    added, prev, y = net.forward(x, keep={0, 2, 3})
    assert y.shape == (2, c_prev, 8, 8)
    for b in range(2):
        # shortcut_multilayer_cpu: out[i] = in[i] + add[i] for flat i < the added layer's outputs
        ref = prev[b].ravel().copy()
        m = min(ref.size, added[b].size)
        ref[:m] += added[b].ravel()[:m]
        np.testing.assert_allclose(y[b].ravel(), np.maximum(ref, 0.1 * ref), rtol=1e-6, atol=1e-6)
    onnx_matches(net, x, y)


def test_shortcut_with_several_from_layers():
    net = build("[convolutional]\nfilters=4\nsize=1\nactivation=linear\n"
                "[convolutional]\nfilters=4\nsize=1\nactivation=linear\n"
                "[convolutional]\nfilters=4\nsize=1\nactivation=linear\n[shortcut]\nfrom=-2,-3\n")
    x = np.random.default_rng(1).normal(size=(2, *net.input_shape)).astype(np.float32)
    outs = net.forward(x, keep={0, 1, 2, 3})
    np.testing.assert_allclose(outs[3], outs[2] + outs[1] + outs[0], rtol=1e-6, atol=1e-6)
    onnx_matches(net, x, outs[3])


def test_softmax_temperature_and_groups():
    net = build("[avgpool]\n[softmax]\ngroups=2\ntemperature=3\n", c=6)
    x, y = run(net)
    v = x.mean(axis=(2, 3)).reshape(2, 2, 3) / 3
    ref = np.exp(v) / np.exp(v).sum(axis=2, keepdims=True)
    np.testing.assert_allclose(y.reshape(2, 2, 3), ref, rtol=1e-5)
    onnx_matches(net, x, y)


def test_connected_with_batchnorm_and_weight_order():
    net = build("[connected]\noutput=5\nbatch_normalize=1\nactivation=leaky\n", w=3, h=2, c=2)
    layer = net.layers[0]
    assert list(layer.param_shapes()) == ["biases", "weights", "scales", "rolling_mean", "rolling_variance"]
    x, y = run(net)
    p = layer.params
    z = x.reshape(2, -1) @ p["weights"].T
    z = (z - p["rolling_mean"]) / np.sqrt(p["rolling_variance"] + 1e-6) * p["scales"] + p["biases"]
    np.testing.assert_allclose(y.reshape(2, 5), np.maximum(z, 0.1 * z), rtol=1e-5, atol=1e-6)
    onnx_matches(net, x, y)


def test_crop_centre_and_adjust():
    net = build("[crop]\ncrop_height=4\ncrop_width=6\n", w=8, h=7)
    x, y = run(net)
    np.testing.assert_allclose(y, x[:, :, 1:5, 1:7] * 2 - 1)
    onnx_matches(net, x, y)


def test_local_is_a_conv_per_location():
    net = build("[local]\nfilters=3\nsize=3\nstride=1\npad=1\nactivation=linear\n", w=5, h=4, c=2)
    x, y = run(net)
    p = net.layers[0].params
    w = p["weights"].reshape(4 * 5, 3, 2, 3, 3)
    b = p["biases"].reshape(3, 4, 5)
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    for j in range(4):
        for i in range(5):
            patch = xp[:, :, j:j + 3, i:i + 3]
            ref = np.einsum("bckl,nckl->bn", patch, w[j * 5 + i]) + b[:, j, i]
            np.testing.assert_allclose(y[:, :, j, i], ref, rtol=1e-5, atol=1e-5)
    onnx_matches(net, x, y)


def test_local_avgpool_excludes_padding():
    net = build("[local_avgpool]\nsize=3\nstride=2\n", w=7, h=5, c=2)
    x, y = run(net)
    _, ho, wo = net.layers[0].out_shape
    pad = (3 - 1) // 2
    for j in range(ho):
        for i in range(wo):
            rows = slice(max(0, j * 2 - pad), min(5, j * 2 - pad + 3))
            cols = slice(max(0, i * 2 - pad), min(7, i * 2 - pad + 3))
            np.testing.assert_allclose(y[:, :, j, i], x[:, :, rows, cols].mean(axis=(2, 3)), rtol=1e-5, atol=1e-6)
    onnx_matches(net, x, y)


def test_scale_channels_and_sam():
    net = build("[convolutional]\nfilters=4\nsize=1\nactivation=linear\n[avgpool]\n"
                "[convolutional]\nfilters=4\nsize=1\nactivation=logistic\n[scale_channels]\nfrom=-3\n"
                "[convolutional]\nfilters=4\nsize=1\nactivation=logistic\n[sam]\nfrom=-2\n")
    x = np.random.default_rng(1).normal(size=(2, *net.input_shape)).astype(np.float32)
    outs = net.forward(x, keep=set(range(6)))
    np.testing.assert_allclose(outs[3], outs[0] * outs[2], rtol=1e-6)
    np.testing.assert_allclose(outs[5], outs[3] * outs[4], rtol=1e-6)
    onnx_matches(net, x, outs[5])


def test_new_coords_decode():
    net = build("[convolutional]\nfilters=14\nsize=1\nactivation=logistic\n"
                "[yolo]\nmask=0,1\nanchors=10,14,23,27\nclasses=2\nnew_coords=1\nscale_x_y=2.0\n", c=3)
    head = net.heads[0]
    out = np.random.default_rng(0).random((14, 8, 8)).astype(np.float32)
    boxes, obj, scores = decode_yolo(head, out)
    t = out.reshape(2, 7, 8, 8)
    # anchor 1, row 3, column 5: yolo_layer.c get_yolo_box with new_coords, scale_x_y applied to x, y
    a, r, c = 1, 3, 5
    m = a * 64 + r * 8 + c
    np.testing.assert_allclose(boxes[m], [(c + t[a, 0, r, c] * 2 - 0.5) / 8, (r + t[a, 1, r, c] * 2 - 0.5) / 8,
                                          t[a, 2, r, c] ** 2 * 4 * 23 / 8, t[a, 3, r, c] ** 2 * 4 * 27 / 8], rtol=1e-5)
    assert obj[m] == pytest.approx(t[a, 4, r, c])
    np.testing.assert_allclose(scores[m], t[a, 5:, r, c])
    # the ONNX decode computes the same
    x = np.random.default_rng(2).random((1, 3, 8, 8), dtype=np.float32)
    theirs = onnx_forward(build_onnx(net, decode=True))(x)
    ob, oo, os = decode_yolo(head, net.forward(x)[0][0])
    np.testing.assert_allclose(theirs[0][0], ob, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(theirs[1][0], oo[:, None] * os, rtol=1e-5, atol=1e-6)


def test_gaussian_yolo_decode():
    net = build("[convolutional]\nfilters=22\nsize=1\nactivation=linear\n"
                "[Gaussian_yolo]\nmask=0,1\nanchors=10,14,23,27\nclasses=2\n", c=3)
    out = np.random.default_rng(0).normal(size=(22, 8, 8)).astype(np.float32)
    boxes, obj, scores = decode_gaussian_yolo(net.heads[0], out)
    t = out.reshape(2, 11, 8, 8)
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    a, r, c = 1, 2, 6
    m = a * 64 + r * 8 + c
    np.testing.assert_allclose(boxes[m], [(c + sig(t[a, 0, r, c])) / 8, (r + sig(t[a, 2, r, c])) / 8,
                                          np.exp(t[a, 4, r, c]) * 23 / 8, np.exp(t[a, 6, r, c]) * 27 / 8], rtol=1e-5)
    uncertainty = sig(t[a, [1, 3, 5, 7], r, c]).mean()
    np.testing.assert_allclose(scores[m], sig(t[a, 9:, r, c]) * (1 - uncertainty), rtol=1e-5)
    assert obj[m] == pytest.approx(sig(t[a, 8, r, c]), rel=1e-5)


@pytest.mark.parametrize("name", ["relu6", "ramp", "hard_mish", "tanh"])
def test_new_activations_match_darknet_and_onnx(name):
    net = build(f"[convolutional]\nfilters=4\nsize=1\nactivation={name}\n")
    x, y = run(net)
    z = net.forward(x, keep={0}, run=lambda layer, xs: layer.kernel_output(xs[0]) * 0)[0]  # shape only
    w, b = net.layers[0].folded()
    v = np.einsum("bchw,oc->bohw", x, w[:, :, 0, 0]) + b[:, None, None]
    ref = {"relu6": np.clip(v, 0, 6), "ramp": v * (v > 0) + 0.1 * v, "tanh": np.tanh(v),
           "hard_mish": np.where(v > 0, v, np.where(v > -2, v * v / 2 + v, 0))}[name]
    assert z.shape == ref.shape
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)
    onnx_matches(net, x, y)


def test_inline_comments_duplicate_keys_and_aliases():
    text = ("[net]\nwidth=8\nheight=8\nchannels=3\nbatch=1\nbatch=64\n"
            "[conv]\nfilters=16 # sixteen\nsize=3\npad=1\nactivation=leaky\n[max]\nsize=2\nstride=2\n")
    sections = parse_cfg(text, "t.cfg")
    duplicate = "t.cfg:line 6 [net]: duplicate key 'batch' (first set on line 5); the first value is used, as in Darknet"
    assert sections[0].warnings == [duplicate]
    assert sections[0].options["batch"] == "1"
    net = Network(sections)
    assert net.warnings[0] == duplicate
    assert [layer.type for layer in net.layers] == ["convolutional", "maxpool"]
    assert net.layers[0].filters == 16 and net.layers[1].out_shape == (16, 4, 4)


@pytest.mark.parametrize("body, where", [
    ("[convolutional]\nfilters=4\nsize=1\n[shortcut]\nfrom=-1\nweights_type=per_feature\n", "line 10 [shortcut] weights_type"),
    ("[reorg]\nstride=3\n", "line 6 [reorg] stride"),
    ("[convolutional]\nfilters=4\nsize=1\n[scale_channels]\nfrom=-1\n", "line 9 [scale_channels] from"),
    ("[crop]\ncrop_height=20\ncrop_width=2\n", "line 6 [crop] crop_height"),
    ("[softmax]\ntree=data/9k.tree\n", "line 6 [softmax] tree"),
    ("[conv_lstm]\noutput=4\n", "line 5 [conv_lstm]"),
])
def test_unsupported_constructs_name_the_line(body, where):
    with pytest.raises(DncompressError) as err:
        build(body)
    assert where in str(err.value) and "\n" not in str(err.value)


def test_xnor_conv_binarizes_weights_and_input():
    net = build("[convolutional]\nbatch_normalize=1\nfilters=5\nsize=3\npad=1\nactivation=leaky\n"
                "[convolutional]\nbatch_normalize=1\nfilters=3\nsize=3\npad=1\nxnor=1\nactivation=leaky\n")
    net.calibrate_batchnorm(np.random.default_rng(0).normal(size=(2, 4, 8, 8)).astype(np.float32))
    x = np.random.default_rng(1).normal(size=(2, 4, 8, 8)).astype(np.float32)
    first, y = net.forward(x, keep={0, 1})
    layer = net.layers[1]
    w = layer.params["weights"]
    mean = np.abs(w).mean(axis=(1, 2, 3), keepdims=True)
    wb = np.where(w > 0, mean, -mean)                       # binarize_weights
    xb = np.pad(np.where(first > 0, 1.0, -1.0), ((0, 0), (0, 0), (1, 1), (1, 1)))   # binarize_cpu, then im2col
    z = np.zeros((2, 3, 8, 8))
    for dy in range(3):
        for dx in range(3):
            z += np.einsum("bchw,oc->bohw", xb[:, :, dy:dy + 8, dx:dx + 8], wb[:, :, dy, dx])
    p = layer.params
    z = (z - p["rolling_mean"][:, None, None]) / np.sqrt(p["rolling_variance"][:, None, None] + 1e-6) \
        * p["scales"][:, None, None] + p["biases"][:, None, None]
    np.testing.assert_allclose(y, np.maximum(z, 0.1 * z), rtol=1e-4, atol=1e-4)
    onnx_matches(net, x, y, 1e-5)


def test_xnor_is_refused_where_float_maths_is_assumed(tmp_path):
    from click.testing import CliRunner

    from dncompress.cli import main
    net = build("[convolutional]\nbatch_normalize=1\nfilters=5\nsize=3\npad=1\nactivation=leaky\n"
                "[convolutional]\nbatch_normalize=1\nfilters=3\nsize=3\npad=1\nxnor=1\nactivation=leaky\n")
    cfg, weights = tmp_path / "x.cfg", tmp_path / "x.weights"
    net.save(cfg, weights)
    for command in (["prune", "--ratio", "0.5"], ["quantize", "--bits", "8", "--act-bits", "none"], ["reparam"], ["sparsify", "--pattern", "unstructured", "--ratio", "0.5"]):
        out = CliRunner().invoke(main, [command[0], str(cfg), str(weights), *command[1:], "-o", str(tmp_path / "o")])
        assert out.exit_code == 2 and "xnor: layer 1: xnor=1 (binarized conv)" in out.output, out.output
        assert f"not by {command[0]}" in out.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.cfg", "x.weights"]
