"""Helpers comparing the engine with OpenCV DNN on Darknet cfgs (random weights, calibrated BN)."""
from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import numpy as np

from dncompress.engine.conv import conv2d
from dncompress.layers.conv import dilate_kernel
from dncompress.network import Network

from helpers import ROOT, SHARED

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
    keep, theirs = opencv_outputs(net, x)
    ours = engine_outputs(net, x, keep)
    return relative_diff(theirs, ours)


def relative_diff(theirs: list[np.ndarray], ours: list[np.ndarray]) -> float:
    """max over outputs of max |theirs - ours| / max |ours|."""
    return max(float(np.abs(a.reshape(b.shape) - b).max() / max(float(np.abs(b).max()), 1e-12))
               for a, b in zip(theirs, ours))


def logit_layers(net: Network, keep: list[int]) -> list[int]:
    """The compared layers that are logistic convs: compared on their logits (before the squashing, an
    error relative to the output's largest value, 1, would be an absolute error on logits of any size)."""
    return [k for k in keep if getattr(net.layers[k], "activation", "") == "logistic"
            and net.layers[k].type == "convolutional"]


def engine_outputs(net: Network, x: np.ndarray, keep: list[int], dtype=np.float32) -> list[np.ndarray]:
    """The engine's outputs of the layers `keep` (logistic convs: their logits) for x; with
    dtype=np.float64, the float64 reference of `float64_run`."""
    logits = logit_layers(net, keep)
    wanted = set(keep) | {net.layers[k].inputs[0] for k in logits}
    if dtype == np.float64:
        outs = net._forward(x.astype(np.float64), wanted, float64_run)
    else:
        outs = net.forward(x, keep=wanted)
    ours = dict(zip(sorted(wanted), outs))
    for k in logits:
        layer = net.layers[k]
        w, b = float64_fold(layer) if dtype == np.float64 else layer.folded()
        ours[k] = conv2d(ours[layer.inputs[0]], w, b, layer.stride, layer.pad, layer.groups)
    return [ours[k] for k in keep]


def float64_fold(layer) -> tuple[np.ndarray, np.ndarray]:
    """A conv's weights and bias with batchnorm folded in, kept in float64."""
    scale, shift = layer.output_affine()
    return layer.kernel_weights().astype(np.float64) * scale[:, None, None, None], shift


def float64_run(layer, xs: list[np.ndarray]) -> np.ndarray:
    """`Network.forward(run=...)` computing every conv in float64 (weights folded in float64, float64
    GEMM): the reference that float32 engines (ours, OpenCV's) both approximate. Other layers run their
    own forward, which keeps float64 inputs float64 (checked)."""
    if layer.type in ("convolutional", "conv") and not getattr(layer, "xnor", False):
        from dncompress.engine.activations import ACTIVATIONS
        w, b = float64_fold(layer)
        d = layer.dilation
        y = conv2d(xs[0], dilate_kernel(w, d) if d > 1 else w, b, layer.stride, layer.pad * d, layer.groups)
        return layer.mask(ACTIVATIONS[layer.activation](y))
    y = layer.forward(xs)
    assert y.dtype == np.float64, f"layer {layer.index} [{layer.type}] returned {y.dtype}"
    return y


def opencv_outputs(net: Network, x: np.ndarray, winograd: bool = True) -> tuple[list[int], list[np.ndarray]]:
    """(compared layers, OpenCV DNN's outputs of them for x; logistic convs: their logits); raises
    cv2.error if OpenCV refuses the cfg."""
    import cv2
    with tempfile.TemporaryDirectory() as tmp:
        cfg, weights = Path(tmp) / "n.cfg", Path(tmp) / "n.weights"
        net.save(cfg, weights)
        cv_net = cv2.dnn.readNetFromDarknet(str(cfg), str(weights))
    keep = compared_layers(net)
    logits = logit_layers(net, keep)
    names = opencv_layer_names(cv_net, len(net.layers))
    names.update({k: v for k, v in opencv_layer_names(cv_net, len(net.layers), True).items() if k in logits})
    cv_net.enableFusion(False)
    if not winograd:
        cv_net.enableWinograd(False)
    cv_net.setInput(x)
    return keep, list(cv_net.forward([names[k] for k in keep]))


# ../shared beside the checkout (main), or two levels up (a worktree under wt/)
ALEXEYAB = next((d / "cfg" / "alexeyab" for d in (SHARED, ROOT.parent.parent / "shared" / "data")
                 if (d / "cfg" / "alexeyab").is_dir()), SHARED / "cfg" / "alexeyab")
CFGS = sorted(ALEXEYAB.glob("*.cfg"))

# Float32 rounding, not semantics (tools/float_drift.py, README "Darknet cfgs"): against a float64 run of the
# same maths, OpenCV DNN with its default Winograd F(6x6,3x3) 3x3 convs is 3-7x further than the engine
# or onnxruntime (e.g. yolov3-spp: OpenCV 1.35e-4, engine 2.7e-5, onnxruntime 2.2e-5), and with Winograd
# off it is as close as they are (2.75e-5): OpenCV runs without Winograd here. On the deepest cfgs the
# float32 rounding of every implementation exceeds 1e-4 of the output scale (cd53paspp-gamma at 128:
# engine 1.44e-4, onnxruntime 1.34e-4, OpenCV 1.32e-4 from float64), so past 1e-4 both float32 results
# are compared with the float64 run: each must be within 1e-4 of it or within NOISE_RATIO times the
# other's distance (measured ratios 1.0-1.5; a semantic difference is orders of magnitude apart).
BAR = 1e-4
NOISE_RATIO = 3.0


def same_maths(what: str, theirs: list[np.ndarray], ours: list[np.ndarray], exact) -> None:
    """theirs (another float32 runtime) and ours agree to BAR of the output scale, or, past it, both are
    float32 roundings of the float64 result `exact()` (see NOISE_RATIO)."""
    diff = relative_diff(theirs, ours)
    if diff <= BAR:
        return
    reference = exact()
    e, o = relative_diff(ours, reference), relative_diff(theirs, reference)
    assert o <= max(BAR, NOISE_RATIO * e) and e <= max(BAR, NOISE_RATIO * o), (
        f"{what}: {diff:.3g} apart; from float64: engine {e:.3g}, {what} {o:.3g}")
