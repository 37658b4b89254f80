"""Helpers comparing the engine with OpenCV DNN on Darknet cfgs (random weights, calibrated BN)."""
from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import numpy as np

from dncompress.engine.conv import conv2d
from dncompress.network import Network

# OpenCV's Darknet importer names a layer's activation after the NEXT layer index (conv_0, bn_0, leaky_1)
OPENCV_ACTIVATIONS = {"leaky", "relu", "logistic", "mish", "swish", "tanh", "relu6", "hardswish", "elu",
                      "sigmoid", "ramp"}


def opencv_layer_names(cv_net, layers: int, pre_activation: bool = False) -> dict[int, str]:
    """For each Darknet layer index, the OpenCV layer holding its final output (`pre_activation`: its
    conv/BN output before the activation)."""
    names, prev = {}, None
    for name in cv_net.getLayerNames():
        if pre_activation and name.rpartition("_")[0] in OPENCV_ACTIVATIONS:
            continue
        prefix, _, suffix = name.rpartition("_")
        if not suffix.isdigit():
            continue            # e.g. OpenCV's detection_out
        owner = int(suffix)
        if prefix in OPENCV_ACTIVATIONS and prev == owner - 1:
            owner = prev
        names[owner] = name
        prev = owner if prefix not in OPENCV_ACTIVATIONS else None
    return {k: v for k, v in names.items() if 0 <= k < layers}


def random_calibrated(cfg: Path, size: int, seed: int = 0) -> Network:
    """cfg at size x size with seeded random weights and BN statistics of a random batch."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = Network.from_cfg(cfg, width=size, height=size)
    net.init_random(seed)
    net.calibrate_batchnorm(np.random.default_rng(seed).random((2, *net.input_shape), dtype=np.float32))
    return net


def compared_layers(net: Network) -> list[int]:
    """Where to compare with OpenCV: the inputs of the detection heads (OpenCV's [yolo] decodes and zeroes
    class scores <= 0.2), else the last layer; before a [softmax] with temperature (OpenCV ignores it)
    and before [cost] (an OpenCV identity)."""
    if net.heads:
        return sorted({h.inputs[0] for h in net.heads})
    last = len(net.layers) - 1
    while net.layers[last].type == "cost" or (net.layers[last].type == "softmax" and (
            net.layers[last].temperature != 1.0 or net.layers[last].out_shape[1:] != (1, 1))):
        last -= 1       # OpenCV's softmax ignores temperature and runs over channels, Darknet's over C*H*W
    return [last]


def opencv_relative_diff(net: Network, x: np.ndarray) -> float:
    """max |engine - OpenCV| / max |engine| over the compared layers; raises cv2.error if OpenCV refuses."""
    import cv2
    with tempfile.TemporaryDirectory() as tmp:
        cfg, weights = Path(tmp) / "n.cfg", Path(tmp) / "n.weights"
        net.save(cfg, weights)
        cv_net = cv2.dnn.readNetFromDarknet(str(cfg), str(weights))
    keep = compared_layers(net)
    # a logistic head conv is compared on its logits: after the squashing, an error relative to the
    # output's largest value (1) is an absolute error on logits of any size
    logits = [k for k in keep if getattr(net.layers[k], "activation", "") == "logistic"
              and net.layers[k].type == "convolutional"]
    names = opencv_layer_names(cv_net, len(net.layers))
    names.update({k: v for k, v in opencv_layer_names(cv_net, len(net.layers), True).items() if k in logits})
    cv_net.enableFusion(False)
    cv_net.setInput(x)
    theirs = cv_net.forward([names[k] for k in keep])
    ours = net.forward(x, keep=set(keep) | {net.layers[k].inputs[0] for k in logits})
    ours = {k: v for k, v in zip(sorted(set(keep) | {net.layers[k].inputs[0] for k in logits}), ours)}
    for k in logits:
        layer = net.layers[k]
        w, b = layer.folded()
        ours[k] = conv2d(ours[layer.inputs[0]], w, b, layer.stride, layer.pad, layer.groups)
    ours = [ours[k] for k in keep]
    return max(float(np.abs(a.reshape(b.shape) - b).max() / max(float(np.abs(b).max()), 1e-12))
               for a, b in zip(theirs, ours))
