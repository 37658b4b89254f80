"""Network -> quantized Network: chosen convs become [quantize_convolutional] with BN folded, weights on
the grid (float32) and keys that let the engine reproduce the quantization (docs/quantization.md)."""
from __future__ import annotations

import dataclasses

import numpy as np

from ..errors import DncompressError
from ..layers import Layer
from ..network import Network
from .bias_correction import corrected_bias
from .calibrate import ActivationStats, activation_range, collect_stats, weight_clip
from .quantizers import channel_view, dequantize, quantize_weights

QUANT_KEYS = ("bitw", "bita", "act_min", "act_max", "quant_weights", "quant_scheme")


@dataclasses.dataclass
class QuantConfig:
    bits: int = 8
    act_bits: int = 8                 # 0 = float activations (weights-only)
    per_channel: bool = True
    method: str = "minmax"
    keep_first_last: int = 8          # bits of the first conv and the convs feeding heads; 0 = left float
    bias_correction: bool = False


@dataclasses.dataclass
class LayerCodes:
    """The integers behind one quantized conv: q (O, C, K, K) and scale (O,) or ()."""

    q: np.ndarray
    scale: np.ndarray
    bits: int

    @property
    def per_channel(self) -> bool:
        return self.scale.ndim == 1

    def dequantize(self) -> np.ndarray:
        return dequantize(self.q, channel_view(self.scale, self.per_channel))


def is_conv(layer: Layer) -> bool:
    return layer.type in ("convolutional", "quantize_convolutional")


def edge_convs(net: Network) -> set[int]:
    """The first conv and the convs whose output a [yolo]/[region] reads: the usual mixed-precision set."""
    convs = [layer.index for layer in net.layers if is_conv(layer)]
    feeding = {head.inputs[0] for head in net.heads if is_conv(net.layers[head.inputs[0]])}
    return ({convs[0]} if convs else set()) | feeding


def bit_plan(net: Network, config: QuantConfig) -> dict[int, tuple[int, int]]:
    """layer index -> (weight bits, activation bits) for every conv to quantize."""
    edges = edge_convs(net)
    plan = {}
    for layer in net.layers:
        if layer.type != "convolutional":
            continue
        if layer.index in edges:
            if config.keep_first_last:
                plan[layer.index] = (config.keep_first_last, config.keep_first_last if config.act_bits else 0)
        else:
            plan[layer.index] = (config.bits, config.act_bits)
    return plan


def quantized_section(layer: Layer, bitw: int, bita: int, per_channel: bool,
                      act_range: tuple[float, float] | None):
    """The layer's section as [quantize_convolutional], BN folded away (batch_normalize=0)."""
    section = layer.section.copy()
    section.type = "quantize_convolutional"
    for key in QUANT_KEYS:
        section.options.pop(key, None)
    if "batch_normalize" in section.options:
        section.options["batch_normalize"] = "0"
    section.options.update(bitw=str(bitw), quant_weights="affine",
                           quant_scheme="per_channel" if per_channel else "per_tensor")
    if bita:
        section.options.update(bita=str(bita), act_min=f"{act_range[0]:.9g}", act_max=f"{act_range[1]:.9g}")
    return section


def quantize_network(net: Network, config: QuantConfig,
                     stats: dict[int, ActivationStats] | None = None) -> tuple[Network, dict[int, LayerCodes]]:
    """The quantized network (new sections and parameters; `net` is untouched) and the integer codes of
    every quantized conv. `stats` (conv inputs) are needed for activation ranges and bias correction."""
    plan = bit_plan(net, config)
    sections, params, codes = [net.net_section.copy()], [], {}
    for layer in net.layers:
        if layer.index not in plan:
            sections.append(layer.section.copy())
            params.append(dict(layer.params))
            continue
        bitw, bita = plan[layer.index]
        w, b = layer.folded()
        clip = weight_clip(w, bitw, config.per_channel, config.method)
        q, scale = quantize_weights(w, bitw, config.per_channel, clip)
        codes[layer.index] = LayerCodes(q, scale, bitw)
        wq = codes[layer.index].dequantize()
        if config.bias_correction:
            b = corrected_bias(b, w, wq, stats[layer.index].channel_mean, layer.groups)
        act_range = activation_range(stats[layer.index], config.method, bita) if bita else None
        sections.append(quantized_section(layer, bitw, bita, config.per_channel, act_range))
        params.append({"biases": b, "weights": wq})
    out = Network(sections, net.file)
    for layer, p in zip(out.layers, params):
        if p:
            layer.set_params(**p)
    out.header = net.header
    return out, codes


def quantize_model(net: Network, config: QuantConfig, calib_images=(), batch: int = 8,
                   progress: bool = False) -> tuple[Network, dict[int, LayerCodes]]:
    """Calibrate (when activations or bias correction need it) and quantize."""
    plan = bit_plan(net, config)
    needs_stats = config.bias_correction or any(bita for _, bita in plan.values())
    if needs_stats and not calib_images:
        raise DncompressError("activation quantization and bias correction need calibration images (--calib DIR)")
    stats = collect_stats(net, sorted(plan), calib_images, batch, progress=progress) if needs_stats else None
    return quantize_network(net, config, stats)


def to_plain(net: Network) -> Network:
    """[quantize_convolutional] -> [convolutional] with the same on-grid weights, for Darknet/OpenCV;
    exact for weights-only quantization (activations then run in float)."""
    sections = [net.net_section.copy()]
    for layer in net.layers:
        section = layer.section.copy()
        if section.type == "quantize_convolutional":
            section.type = "convolutional"
            for key in QUANT_KEYS:
                section.options.pop(key, None)
            if "batch_normalize" in section.options:
                section.options["batch_normalize"] = "0"
        sections.append(section)
    out = Network(sections, net.file)
    for source, layer in zip(net.layers, out.layers):
        params = dict(source.params)
        if source.type == "quantize_convolutional":
            params = dict(zip(("weights", "biases"), source.folded()))
        if params:
            layer.set_params(**params)
    out.header = net.header
    return out
