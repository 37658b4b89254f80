"""Network -> quantized Network: each chosen conv becomes [quantize_convolutional] (affine, BN folded,
weights on the grid, calibrated input range). With calibration images the convs are quantized one after
another on the quantized network's own inputs (what the layer will see): input range, weight rounding
(GPTQ or round-to-nearest), then bias correction against the float network's mean output."""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import numpy as np

from ..engine.conv import conv2d
from ..engine.quantize import (affine_params, channel_max_abs, fake_quantize, fake_quantize_float32, signed_range,
                               snap_to_grid, symmetric_scale, unsigned_range)
from ..errors import DncompressError
from ..graph import is_plain_conv
from ..layers import LAYERS
from ..network import Network
from .calibrate import activation_range, output_error_clip, output_error_range, weight_clip
from .gptq import gptq_round, sample_columns

ROUNDINGS = ("gptq", "nearest")


@dataclasses.dataclass
class QuantConfig:
    bits: int = 8
    act_bits: int | None = 8          # None: weights only
    per_channel: bool = True
    method: str = "minmax"
    keep_first_last: int = 8          # bits of the first conv and the convs feeding heads (0: same as `bits`)
    bias_correction: bool = False
    rounding: str = "nearest"         # gptq: Hessian-aware rounding on calibration inputs
    positions: int = 1024             # sampled input positions per calibration image (Hessian, statistics)
    batch: int = 8                    # calibration images per forward pass
    layer_bits: dict[int, int] | None = None   # explicit widths per conv (mixed precision); overrides the above
    # bits of each conv's output before its activation (None: float), as integer runtimes requantize it
    # (onnxruntime's QLinearConv); convs feeding the heads keep float outputs (the logits)
    out_bits: int | None = None
    # activation equalization strength (quant/equalize.py) applied to the float network first; None: off
    equalize: float | None = None


def layer_bits(net: Network, config: QuantConfig) -> dict[int, int]:
    """Weight bits per conv: the first conv and the head convs get `keep_first_last` bits."""
    for layer in net.layers:
        if layer.is_quantized:
            raise DncompressError(f"layer {layer.index} is already [quantize_convolutional]; quantize the float "
                                  "model (re-quantizing would stack two grids)", net.file)
        if layer.param_shapes() and not is_plain_conv(layer):
            raise DncompressError(f"layer {layer.index} [{layer.type}] cannot be quantized (quantize handles "
                                  "[convolutional] layers only)", net.file)
    if config.layer_bits is not None:
        return dict(config.layer_bits)
    convs = [layer.index for layer in net.layers if is_plain_conv(layer)]
    special = {convs[0], *net.graph.head_inputs}
    return {i: config.keep_first_last if config.keep_first_last and i in special else config.bits for i in convs}


QUANT_KEYS = ("bitw", "bita", "act_min", "act_max", "quant_weights", "quant_scheme", "bito", "out_min", "out_max")


def quantized_section(layer, bits: int, act_bits: int | None, act_range, per_channel: bool):
    section = layer.section.copy()
    section.type = "quantize_convolutional"
    options = {k: v for k, v in section.options.items() if k not in QUANT_KEYS}
    options["batch_normalize"] = "0"
    options.update(bitw=str(bits), bita=str(act_bits or 0), quant_weights="affine",
                   quant_scheme="per_channel" if per_channel else "per_tensor")
    if act_bits:
        options.update(act_min=f"{act_range[0]:.9g}", act_max=f"{act_range[1]:.9g}")
    section.options = options
    return section


def quantize_network(net: Network, config: QuantConfig, calib: np.ndarray | None,
                     progress: Callable[[str], None] | None = None) -> Network:
    """A new Network with quantized convs. `calib` (N, C, H, W) is needed for activation ranges, GPTQ and
    bias correction; `progress(line)` hears one line per quantized conv."""
    bits = layer_bits(net, config)
    if calib is None and (config.act_bits or config.bias_correction or config.rounding == "gptq" or config.equalize):
        raise DncompressError("activation ranges, GPTQ rounding, bias correction and equalization need calibration "
                              "images")
    if config.out_bits and not config.act_bits:
        raise DncompressError("quantized conv outputs need quantized conv inputs (activation bits)")
    float_outputs = set(net.graph.head_inputs)
    if config.equalize:
        from .equalize import equalize_activations
        net = equalize_activations(net, calib, config.equalize)
    if config.rounding not in ROUNDINGS:
        raise DncompressError(f"unknown rounding '{config.rounding}'; use {', '.join(ROUNDINGS)}")
    float_means = column_means(net, calib, bits, config) if config.bias_correction else {}
    done: dict[int, object] = {}

    def replace(layer, x: np.ndarray | None):
        start = time.perf_counter()
        stats = None if x is None else input_stats(layer, x, config)
        done[layer.index] = quantize_layer(net, layer, bits[layer.index], config, stats, float_means.get(layer.index))
        if config.out_bits and layer.index not in float_outputs:
            done[layer.index] = with_output_range(net, done[layer.index], config.out_bits,
                                                  output_range(done[layer.index], x, config.batch))
        if progress:
            progress(f"quantize layer {layer.index}: {bits[layer.index]}-bit weights "
                     f"({time.perf_counter() - start:.1f} s)")
        return done[layer.index]

    if calib is None:
        for index in sorted(bits):
            replace(net.layers[index], None)
    else:
        walk(net, calib, bits, replace, config.batch)
    sections = [net.net_section.copy()] + [done[layer.index].section if layer.index in done else layer.section.copy()
                                           for layer in net.layers]
    quantized = net.derive(sections)
    for layer in quantized.layers:
        if layer.param_shapes():
            layer.set_params(**(done[layer.index] if layer.index in done else net.layers[layer.index]).params)
    return quantized


def walk(net: Network, calib: np.ndarray, chosen: dict[int, int], replace: Callable, batch: int) -> None:
    """Run the calibration images through `net` one layer at a time (all images, `batch` per call); at
    each chosen layer call `replace(layer, its input (N, C, H, W))` for the layer that runs instead, so
    every later layer sees the quantized network's own activations. One forward pass in all."""
    outputs = {-1: calib}
    last_use = net.last_use
    for layer in net.layers:
        xs = [outputs[i] for i in layer.inputs]
        runner = replace(layer, xs[0]) if layer.index in chosen else layer
        outputs[layer.index] = np.concatenate([runner.forward([x[start:start + batch] for x in xs])
                                               for start in range(0, len(calib), batch)])
        for i in layer.inputs:
            if i >= 0 and last_use[i] == layer.index:
                del outputs[i]


@dataclasses.dataclass
class InputStats:
    """A conv's input over the calibration images: sampled im2col rows (P, C*k*k), exact min and max."""
    columns: np.ndarray
    low: float
    high: float


def _position_rng(index: int, start: int) -> np.random.Generator:
    """The same sampled positions for a layer and batch in the float and the quantized pass."""
    return np.random.default_rng((index, start))


def input_stats(layer, x: np.ndarray, config: QuantConfig) -> InputStats:
    """Statistics of a conv's input x (N, C, H, W), sampled in the same batches as column_means."""
    columns = [sample_columns(x[start:start + config.batch], layer.size, layer.stride, layer.pad, config.positions,
                              _position_rng(layer.index, start)) for start in range(0, len(x), config.batch)]
    return InputStats(np.concatenate(columns), float(x.min()), float(x.max()))


def column_means(net: Network, calib: np.ndarray, bits: dict[int, int], config: QuantConfig) -> dict[int, np.ndarray]:
    """Mean sampled im2col row (C*k*k,) of each conv's input in the float network."""
    sums: dict[int, np.ndarray] = {}

    def run(layer, xs):
        if layer.index in bits:
            cols = sample_columns(xs[0], layer.size, layer.stride, layer.pad, config.positions,
                                  _position_rng(layer.index, start))
            sums[layer.index] = sums.get(layer.index, 0) + cols.sum(axis=0, dtype=np.float64)
            counts[layer.index] = counts.get(layer.index, 0) + len(cols)
        return layer.forward(xs)

    counts: dict[int, int] = {}
    for start in range(0, len(calib), config.batch):
        net.forward(calib[start:start + config.batch], keep=set(), run=run)
    return {i: sums[i] / counts[i] for i in sums}


def quantize_layer(net: Network, layer, bits: int, config: QuantConfig, stats: InputStats | None,
                   float_mean: np.ndarray | None):
    """The [quantize_convolutional] Layer replacing `layer`, built alone (shapes of the layers before it)."""
    act_range, columns = None, None
    w, b = layer.folded()
    if stats is not None:
        columns = stats.columns
        if config.act_bits:
            act_range = choose_act_range(stats, w, layer.groups, config)
            scale, zero = affine_params(*act_range, config.act_bits)
            columns = fake_quantize_float32(columns, scale, zero, *unsigned_range(config.act_bits))
    w_q = quantize_weights(w, bits, config, columns, layer.groups)
    b_q = b
    if float_mean is not None:
        shift = mean_output(w_q, columns.mean(axis=0, dtype=np.float64), layer.groups) \
            - mean_output(w, float_mean, layer.groups)
        b_q = (b - shift).astype(np.float32)
    if config.out_bits:
        b_q = snap_bias(b_q, w_q, bits, config.per_channel, affine_params(*act_range, config.act_bits)[0])
    section = quantized_section(layer, bits, config.act_bits, act_range, config.per_channel)
    quantized = LAYERS["quantize_convolutional"](section, layer.index, [l.out_shape for l in net.layers[:layer.index]],
                                                 net.info)
    quantized.set_params(weights=w_q, biases=b_q.copy())
    return quantized


def bias_scale(weights: np.ndarray, bits: int, per_channel: bool, act_scale: float) -> np.ndarray:
    """The int32 bias grid of an integer conv (O,): input scale x weight scale, in float32 as onnxruntime."""
    w_scale = symmetric_scale(channel_max_abs(weights, per_channel), bits).reshape(-1).astype(np.float32)
    return np.broadcast_to(np.float32(act_scale) * w_scale, (len(weights),))


def snap_bias(bias: np.ndarray, weights: np.ndarray, bits: int, per_channel: bool, act_scale: float) -> np.ndarray:
    """Bias (O,) on the int32 grid the integer conv adds to its accumulators (so the engine adds the same)."""
    scale = bias_scale(weights, bits, per_channel, act_scale).astype(np.float64)
    return (np.round(bias.astype(np.float64) / scale) * scale).astype(np.float32)


def output_range(layer, x: np.ndarray, batch: int) -> tuple[float, float]:
    """Min and max of a quantized conv's output before its activation over x (N, C, H, W), widened to hold 0."""
    w, b = layer.folded()
    low, high = 0.0, 0.0
    for start in range(0, len(x), batch):
        y = conv2d(layer.quantize_input(x[start:start + batch]), w, b, layer.stride, layer.pad, layer.groups)
        low, high = min(low, float(y.min())), max(high, float(y.max()))
    return (low, high) if high > low else (low, low + 1.0)


def with_output_range(net: Network, layer, bits: int, out_range: tuple[float, float]):
    """The same quantized conv, its output before the activation on a `bits` grid over out_range."""
    section = layer.section.copy()
    section.options.update(bito=str(bits), out_min=f"{out_range[0]:.9g}", out_max=f"{out_range[1]:.9g}")
    quantized = LAYERS["quantize_convolutional"](section, layer.index, [l.out_shape for l in net.layers[:layer.index]],
                                                 net.info)
    quantized.set_params(**layer.params)
    return quantized


def group_slices(weights: np.ndarray, groups: int):
    """(output rows, input columns) of each group: weights (O, C/g, k, k) against im2col rows (C*k*k)."""
    out, width = len(weights) // groups, int(np.prod(weights.shape[1:]))
    return [(slice(g * out, (g + 1) * out), slice(g * width, (g + 1) * width)) for g in range(groups)]


def mean_output(weights: np.ndarray, mean_columns: np.ndarray, groups: int) -> np.ndarray:
    """Per output channel mean of the conv without bias (O,): W (O, C/g, k, k) @ the mean column."""
    w2 = weights.reshape(len(weights), -1).astype(np.float64)
    return np.concatenate([w2[rows] @ mean_columns[cols] for rows, cols in group_slices(weights, groups)])


def choose_act_range(stats: InputStats, weights: np.ndarray, groups: int, config: QuantConfig) -> tuple[float, float]:
    """(low, high) with low <= 0 < high (the grid holds zero; a constant input still gets a valid range)."""
    if config.method == "minmax":
        low, high = stats.low, stats.high
    elif config.method == "mse":
        low, high = output_error_range(stats.columns, weights.reshape(len(weights), -1), stats.low, stats.high,
                                       config.act_bits, groups)
    else:
        low, high = activation_range(stats.columns, config.act_bits, config.method)
    low, high = min(low, 0.0), max(high, 0.0)
    return (low, high) if high > low else (low, low + 1.0)


def quantize_weights(w: np.ndarray, bits: int, config: QuantConfig, columns: np.ndarray | None,
                     groups: int) -> np.ndarray:
    """Folded weights (O, C/g, k, k) on the `bits` grid: range by `config.method` (mse: the output error
    over the calibration inputs when there are some), rounding by `config.rounding`."""
    hessians = None
    if columns is not None:
        hessians = [(c.T @ c).astype(np.float64) for c in (columns[:, cols] for _, cols in group_slices(w, groups))]
    if config.method == "mse" and hessians is not None and config.per_channel:
        diag = np.concatenate([np.broadcast_to(np.diag(h), (rows.stop - rows.start, len(h)))
                               for (rows, _), h in zip(group_slices(w, groups), hessians)])
        clip = output_error_clip(w.reshape(len(w), -1), diag, bits)
    else:
        clip = weight_clip(w, bits, config.per_channel, config.method)
    scale = np.broadcast_to(symmetric_scale(clip, bits).reshape(-1), (len(w),))
    if config.rounding == "gptq":
        w2 = w.reshape(len(w), -1)
        # per tensor, only the largest weight sits at +-qmax (it fixes the one scale)
        pinned = np.ones(len(w), bool) if config.per_channel else np.abs(w2).max(axis=1) == np.abs(w2).max()
        q = np.concatenate([gptq_round(w2[rows], h, scale[rows], bits, pinned=pinned[rows])
                            for (rows, _), h in zip(group_slices(w, groups), hessians)])
        return snap_to_grid((q * scale[:, None]).reshape(w.shape).astype(np.float32), bits, config.per_channel)
    w_q = fake_quantize(w, scale.reshape(-1, 1, 1, 1), 0, *signed_range(bits))
    return snap_to_grid(w_q, bits, config.per_channel)


def plain_convolutional(quantized: Network) -> Network:
    """The same network with [quantize_convolutional] written as [convolutional]: on-grid weights, float
    activations — what stock Darknet and OpenCV can load."""
    sections = [quantized.net_section.copy()]
    for layer in quantized.layers:
        section = layer.section.copy()
        if section.type == "quantize_convolutional":
            section.type = "convolutional"
            for key in QUANT_KEYS:
                section.options.pop(key, None)
        sections.append(section)
    plain = quantized.derive(sections)
    for old, new in zip(quantized.layers, plain.layers):
        if old.param_shapes():
            new.set_params(**old.params)
    return plain
