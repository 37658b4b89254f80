"""Network -> quantized Network: each chosen conv becomes [quantize_convolutional] (affine, BN folded,
weights on the grid, calibrated input range), optionally with bias correction."""
from __future__ import annotations

import dataclasses
import sys

import click
import numpy as np

from ..engine.conv import conv2d
from ..engine.quantize import fake_quantize, signed_range, snap_to_grid, symmetric_scale
from ..errors import DncompressError
from ..layers import HEAD_TYPES
from ..network import Network
from .calibrate import activation_range, weight_clip

CONV_TYPES = ("convolutional", "quantize_convolutional")


@dataclasses.dataclass
class QuantConfig:
    bits: int = 8
    act_bits: int | None = 8          # None: weights only
    per_channel: bool = True
    method: str = "minmax"
    keep_first_last: int = 8          # bits of the first conv and the convs feeding heads (0: same as `bits`)
    bias_correction: bool = False


def layer_bits(net: Network, config: QuantConfig) -> dict[int, int]:
    """Weight bits per conv: the first conv and the head convs get `keep_first_last` bits."""
    for layer in net.layers:
        if layer.param_shapes() and layer.type not in CONV_TYPES:
            raise DncompressError(f"layer {layer.index} [{layer.type}] cannot be quantized (quantize handles "
                                  "[convolutional] and [quantize_convolutional] layers only)", net.file)
    convs = [layer.index for layer in net.layers if layer.type in CONV_TYPES]
    special = {convs[0]} | {h.inputs[0] for h in net.layers if h.type in HEAD_TYPES}
    return {i: config.keep_first_last if config.keep_first_last and i in special else config.bits for i in convs}


def quantized_section(layer, bits: int, act_bits: int | None, act_range, per_channel: bool):
    section = layer.section.copy()
    section.type = "quantize_convolutional"
    options = {k: v for k, v in section.options.items() if k not in ("bitw", "bita", "act_min", "act_max",
                                                                     "quant_weights", "quant_scheme")}
    options["batch_normalize"] = "0"
    options.update(bitw=str(bits), bita=str(act_bits or 0), quant_weights="affine",
                   quant_scheme="per_channel" if per_channel else "per_tensor")
    if act_bits:
        options.update(act_min=f"{act_range[0]:.9g}", act_max=f"{act_range[1]:.9g}")
    section.options = options
    return section


def quantize_network(net: Network, config: QuantConfig, calib: np.ndarray | None, progress: bool = True) -> Network:
    """A new Network with quantized convs; `calib` (N, C, H, W) is needed for activation ranges and
    bias correction."""
    bits = layer_bits(net, config)
    needs_inputs = config.act_bits is not None or config.bias_correction
    inputs = {}
    if needs_inputs:
        wanted = {net.layers[i].inputs[0] for i in bits if net.layers[i].inputs[0] >= 0}
        inputs = dict(zip(sorted(wanted), net.forward(calib, keep=wanted)))
        inputs[-1] = calib
    sections = [net.net_section.copy()]
    new_params = {}
    with click.progressbar(net.layers, label="quantize", file=sys.stderr,
                           hidden=not progress or not sys.stderr.isatty()) as bar:
        for layer in bar:
            if layer.index not in bits:
                sections.append(layer.section.copy())
                continue
            w, b = layer.folded()
            clip = weight_clip(w, bits[layer.index], config.per_channel, config.method)
            scale = symmetric_scale(clip, bits[layer.index]).reshape(-1, 1, 1, 1)
            w_q = snap_to_grid(fake_quantize(w, scale, 0, *signed_range(bits[layer.index])), bits[layer.index],
                               config.per_channel)
            act_range = None
            if config.act_bits:
                act_range = activation_range(inputs[layer.inputs[0]], config.act_bits, config.method)
            section = quantized_section(layer, bits[layer.index], config.act_bits, act_range, config.per_channel)
            sections.append(section)
            new_params[layer.index] = {"biases": b.copy(), "weights": w_q}
    quantized = net.derive(sections)
    for layer in quantized.layers:
        if layer.param_shapes():
            layer.set_params(**new_params.get(layer.index, net.layers[layer.index].params))
    if config.bias_correction:
        correct_bias(net, quantized, inputs)
    return quantized


def correct_bias(original: Network, quantized: Network, inputs: dict[int, np.ndarray]) -> None:
    """Remove each quantized conv's mean output shift on the calibration images: bias -= E[y_q - y]."""
    for old, new in zip(original.layers, quantized.layers):
        if new.type != "quantize_convolutional":
            continue
        x = inputs[old.inputs[0]]
        w, _ = old.folded()
        w_q, _ = new.folded()
        shift = (conv2d(new.quantize_input(x), w_q, None, new.stride, new.pad, new.groups)
                 - conv2d(x, w, None, old.stride, old.pad, old.groups)).mean(axis=(0, 2, 3))
        new.set_params(biases=(new.params["biases"] - shift).astype(np.float32))


def plain_convolutional(quantized: Network) -> Network:
    """The same network with [quantize_convolutional] written as [convolutional]: on-grid weights, float
    activations — what stock Darknet and OpenCV can load."""
    sections = [quantized.net_section.copy()]
    for layer in quantized.layers:
        section = layer.section.copy()
        if section.type == "quantize_convolutional":
            section.type = "convolutional"
            for key in ("bitw", "bita", "act_min", "act_max", "quant_weights", "quant_scheme"):
                section.options.pop(key, None)
        sections.append(section)
    plain = quantized.derive(sections)
    for old, new in zip(quantized.layers, plain.layers):
        if old.param_shapes():
            new.set_params(**old.params)
    return plain
