"""[convolutional] dilation= and share_index=, and [yolo] anchors short of num= (Darknet fills with 0.5):
the last constructs of AlexeyAB's cfgs (resnet152_trident, cspx-p7-mish_hp). OpenCV's importer runs a
dilated conv as an undilated one and has no share_index, so the references are a direct sum over the
taps, onnxruntime (Conv dilations=) and the shared layer itself."""
from __future__ import annotations


import numpy as np
import pytest

from dncompress.cfg import parse_cfg
from dncompress.errors import DncompressError
from dncompress.export.onnx import build_onnx, onnx_forward
from dncompress.layers.conv import refuse_xnor
from dncompress.network import Network

H, W = 17, 20


def network(body: str) -> Network:
    return Network(parse_cfg(f"[net]\nwidth={W}\nheight={H}\nchannels=3\n{body}", "t.cfg"))


def taps_reference(x, w, b, size, dilation, pad):
    """Darknet's dilated im2col as a sum over taps: input padded by pad*dilation, tap (i, j) reads the
    pixel dilation*(i, j) away; stride 1; leaky."""
    p = pad * dilation
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (p, p), (p, p)))
    out = np.zeros((x.shape[0], w.shape[0], H, W))
    for i in range(size):
        for j in range(size):
            out += np.einsum("oc,nchw->nohw", w[:, :, i, j], xp[:, :, i * dilation:i * dilation + H,
                                                                  j * dilation:j * dilation + W])
    out += b.reshape(1, -1, 1, 1)
    return np.maximum(out, 0.1 * out)


@pytest.mark.parametrize("dilation, size", [(2, 3), (3, 3), (2, 5)])
def test_dilated_conv_matches_the_taps_and_onnxruntime(dilation, size):
    net = network(f"[convolutional]\nfilters=5\nsize={size}\npad=1\ndilation={dilation}\nbatch_normalize=1\n"
                  "activation=leaky\n")
    net.init_random(0)
    layer = net.layers[0]
    assert layer.out_shape == (5, H, W) and layer.dilation == dilation
    x = np.random.default_rng(0).random((2, 3, H, W), dtype=np.float32)
    y = net.forward(x)[0]
    w, b = layer.folded()
    np.testing.assert_allclose(y, taps_reference(x, w, b, size, dilation, size // 2), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(onnx_forward(build_onnx(net, dynamic_batch=True))(x)[0], y, rtol=1e-5, atol=1e-5)


def test_dilation_needs_the_padding_darknet_sizes_for():
    with pytest.raises(DncompressError, match=r"t.cfg:line 8 \[convolutional\] dilation: .*needs pad=1"):
        network("[convolutional]\nfilters=5\nsize=3\ndilation=2\n")
    # size=1: dilation changes nothing
    assert network("[convolutional]\nfilters=5\nsize=1\ndilation=2\n").layers[0].dilation == 1


SHARED = ("[convolutional]\nfilters=3\nsize=3\npad=1\nbatch_normalize=1\nactivation=leaky\n"
          "[convolutional]\nfilters=4\nsize=1\nactivation=linear\n"
          "[route]\nlayers=-2\n"
          "[convolutional]\nshare_index=0\nfilters=3\nsize=3\npad=1\nbatch_normalize=1\nactivation=leaky\n")


def test_share_index_uses_the_shared_layers_parameters(tmp_path):
    net = network(SHARED)
    shared = net.layers[3]
    assert shared.param_shapes() == {} and net.param_count() == sum(
        int(np.prod(s)) for layer in net.layers[:2] for s in layer.param_shapes().values())
    net.init_random(1)
    x = np.random.default_rng(2).random((1, 3, H, W), dtype=np.float32)
    first, again = net.forward(x, keep={0, 3})
    # layer 3 reads layer 0's output (route -2), through layer 0's conv: conv(conv(x))
    np.testing.assert_allclose(again, net.layers[0].forward([first]), rtol=1e-6)
    # edits of the shared layer apply to both; the .weights file holds its tensors once
    net.layers[0].set_params(biases=net.layers[0].params["biases"] + 1)
    assert np.array_equal(shared.folded()[1], net.layers[0].folded()[1])
    net.save(tmp_path / "s.cfg", tmp_path / "s.weights")
    loaded = Network.from_cfg(tmp_path / "s.cfg", tmp_path / "s.weights")
    np.testing.assert_array_equal(loaded.forward(x)[0], net.forward(x)[0])
    np.testing.assert_allclose(onnx_forward(build_onnx(net))(x)[0], net.forward(x)[0], rtol=1e-5, atol=1e-5)
    with pytest.raises(DncompressError, match="share_index= .* not by prune"):
        refuse_xnor(net, "prune")


@pytest.mark.parametrize("change, message", [
    (("share_index=0", "share_index=2"), "refers to a \\[route\\] layer"),
    (("share_index=0", "share_index=1"), "differ from that layer"),
    (("share_index=0", "share_index=3"), "not an earlier layer"),
])
def test_share_index_refusals_name_the_line(change, message):
    with pytest.raises(DncompressError, match=message) as err:
        network(SHARED.replace(*change))
    assert "t.cfg:line 18 [convolutional] share_index" in str(err.value)


def test_yolo_anchors_short_of_num_are_filled_with_half_as_darknet():
    """parse_yolo: num*2 biases preset to 0.5, then one value per comma field (the missing comma of
    cspx-p7-mish_hp.cfg leaves 31 numbers for num=16)."""
    body = ("[convolutional]\nfilters=24\nsize=1\nactivation=linear\n"
            "[yolo]\nmask=0,2\nanchors=10,14,23,27,3\nnum=3\nclasses=7\n")
    net = network(body)
    messages = [w for w in net.warnings if "anchors=" in w]
    assert len(messages) == 1 and "t.cfg:line 11 [yolo] anchors" in messages[0] and "0.5" in messages[0]
    np.testing.assert_array_equal(net.layers[1].anchors, [[10, 14], [3, 0.5]])
