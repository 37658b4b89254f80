"""Training-mode forward and backward per layer type, beside the inference layers (which stay untouched
and fast). Each entry: forward(layer, xs) -> (y, cache); backward(layer, grad, cache) -> (input grads,
param grads). Convs use batch statistics and update the running ones, as Darknet does with net.train."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..engine.activations import ACTIVATIONS, cache_blocks
from ..engine.backward import (OUTPUT_ONLY_GRAD, activation_backward, conv2d_backward, maxpool2d_backward,
                               upsample_backward)
from ..engine.batchnorm import ROLLING_MOMENTUM, batch_moments
from ..engine.conv import conv2d
from ..threads import parallel
from ..engine.summax import summax2d, summax2d_backward
from ..layers import Layer
from ..layers.conv import BN_EPS
from ..engine.quantize import affine_params, dorefa_weights, snap_to_grid, unsigned_range

Forward = Callable[[Layer, list[np.ndarray]], tuple[np.ndarray, dict]]
Backward = Callable[[Layer, np.ndarray, dict], tuple[list[np.ndarray], dict[str, np.ndarray]]]
TRAIN_LAYERS: dict[str, tuple[Forward, Backward]] = {}


def trains(*types: str):
    """Register a (forward, backward) pair, defined as methods of a namespace class, for layer types."""
    def add(cls):
        for name in types:
            TRAIN_LAYERS[name] = (cls.forward, cls.backward)
        return cls
    return add


def activate(name: str, pre: np.ndarray) -> np.ndarray:
    return ACTIVATIONS[name](pre.copy())


@trains("convolutional")
class ConvTrain:
    @staticmethod
    def forward(layer, xs):
        return ConvTrain.forward_with(layer, xs[0], layer.params["weights"].astype(xs[0].dtype, copy=False))

    @staticmethod
    def forward_with(layer, x, w):
        """Conv of x (N, C, H, W) with weights w, batch-statistics BN, bias, activation."""
        cache = {"x": x, "w": w}
        # im2col even where inference uses Winograd: transforming the weights every step cost more than the
        # smaller GEMM saved (measured on yolov3-tiny's 3x3 layers, forward and input gradient alike)
        z = conv2d(x, w, None, layer.stride, layer.pad, layer.groups)
        return normalize_activate(layer, z, cache), cache

    @staticmethod
    def backward(layer, grad, cache):
        need_params = cache.get("need_params", True)
        g, grads = normalize_activate_backward(layer, grad, cache, need_params)
        dx, d_weights = conv2d_backward(cache["x"], cache["w"], g, layer.stride, layer.pad, layer.groups,
                                        cache.get("need_input", True), need_params)
        if need_params:
            grads["weights"] = d_weights
        return [dx], grads


def normalize_activate(layer: Layer, z: np.ndarray, cache: dict,
                       fixed: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Batch-statistics BN (if the layer has it), bias and activation of a kernel output z (N, O, H, W),
    which becomes BN's normalized output in place; what the backward needs goes into `cache` (the input
    of the activation only when its gradient needs more than the output). `fixed` = (mean, 1 / std) (O,)
    normalizes with those instead (frozen BN: no batch statistics, nothing to update). Channel slices run
    over the engine's threads, each in cache-sized blocks (engine.activations.cache_blocks)."""
    p = layer.params
    bn = layer.batch_normalize
    activation = ACTIVATIONS[layer.activation]
    keep_pre = layer.activation not in OUTPUT_ONLY_GRAD
    z = np.ascontiguousarray(z)
    n, o = z.shape[:2]
    pre = np.empty_like(z) if bn else z
    out = np.empty_like(z) if keep_pre else pre
    zs, pres, outs = (a.reshape(n, o, -1) for a in (z, pre, out))
    mean, var = np.empty(o, z.dtype), np.empty(o, z.dtype)
    if fixed is not None:
        mean, inv = (v.astype(z.dtype) for v in fixed)
    scales = p["scales"].astype(z.dtype).reshape(-1, 1) if bn else None
    biases = p["biases"].astype(z.dtype).reshape(-1, 1)

    def part(sl: slice) -> None:
        if bn and fixed is None:
            batch_mean, batch_var = batch_moments(zs, sl)
            mean[sl], var[sl] = batch_mean, batch_var
            shift, scale = batch_mean.astype(z.dtype), (1 / np.sqrt(batch_var + BN_EPS)).astype(z.dtype)
        elif bn:
            shift, scale = mean[sl], inv[sl]
        for i, cs, ps in cache_blocks(n, sl, zs.shape[2]):
            block = zs[i, cs, ps]
            if bn:
                at = slice(cs.start - sl.start, cs.stop - sl.start)
                block -= shift[at].reshape(-1, 1)
                block *= scale[at].reshape(-1, 1)
                block = np.multiply(block, scales[cs], out=pres[i, cs, ps])
            block += biases[cs]
            if keep_pre:
                np.copyto(outs[i, cs, ps], block)
                block = outs[i, cs, ps]
            activation(block)
    parallel(part, o, 8)
    if bn and fixed is not None:
        cache.update(norm=z, fixed_inv=inv)
    elif bn:
        cache.update(norm=z, var=var, mean=mean)
    cache.update(pre=pre if keep_pre else None, out=out)
    return out


def normalize_activate_backward(layer: Layer, grad: np.ndarray, cache: dict,
                                need_params: bool = True) -> tuple[np.ndarray, dict]:
    """(d kernel output, {biases[, scales]} or {} when not need_params) of normalize_activate for grad
    (N, O, H, W). The BN backward reuses the bias and scale gradients as its two reductions:
    dz = scale / sqrt(var + eps) * (g - mean(g) - norm * sum(g * norm) / (count - 1)); with fixed
    statistics dz = scale / std * g. Channel slices run over the engine's threads, each in cache-sized
    blocks: one sweep for the activation's gradient and the two reductions, one for BN's correction."""
    bn = layer.batch_normalize
    fixed = "fixed_inv" in cache
    n, o, h, w = grad.shape
    count = n * h * w
    g = np.empty_like(grad)
    bias_grad, scale_grad = np.empty(o, grad.dtype), np.empty(o, grad.dtype)
    pre, out, norm = cache["pre"], cache["out"], cache.get("norm")
    grads_in, gs, outs = (a.reshape(n, o, -1) for a in (grad, g, out))
    pres = None if pre is None else pre.reshape(n, o, -1)
    norms = norm.reshape(n, o, -1) if bn else None
    if bn:
        inv = cache["fixed_inv"] if fixed else 1 / np.sqrt(cache["var"].astype(np.float64) + BN_EPS)
        factor = (layer.params["scales"] * inv).astype(g.dtype)
    want_bias = need_params or (bn and not fixed)
    want_scale = bn and (need_params or not fixed)

    def part(sl: slice) -> None:
        bias_sum, scale_sum = np.zeros(sl.stop - sl.start), np.zeros(sl.stop - sl.start)
        for i, cs, ps in cache_blocks(n, sl, gs.shape[2]):
            at = slice(cs.start - sl.start, cs.stop - sl.start)
            block = activation_backward(layer.activation, grads_in[i, cs, ps],
                                        None if pres is None else pres[i, cs, ps], outs[i, cs, ps], gs[i, cs, ps])
            if want_bias:
                bias_sum[at] += block.sum(axis=1)
            if want_scale:
                scale_sum[at] += np.einsum("ij,ij->i", block, norms[i, cs, ps])
            if bn and fixed:
                block *= factor[cs].reshape(-1, 1)
        bias_grad[sl], scale_grad[sl] = bias_sum, scale_sum
        if not bn or fixed:
            return
        shift = (factor[sl] * bias_sum / count).astype(g.dtype)
        slope = (factor[sl] * scale_sum / max(count - 1, 1)).astype(g.dtype)
        for i, cs, ps in cache_blocks(n, sl, gs.shape[2]):
            at = slice(cs.start - sl.start, cs.stop - sl.start)
            block = gs[i, cs, ps]
            block *= factor[cs].reshape(-1, 1)
            block -= shift[at].reshape(-1, 1)
            block -= norms[i, cs, ps] * slope[at].reshape(-1, 1)
    parallel(part, o, 8)
    grads = {}
    if need_params:
        grads["biases"] = bias_grad
        if bn:
            grads["scales"] = scale_grad
    return g, grads


@trains("summax_convolutional")
class SummaxTrain:
    """Gradients flow only to the tap that won each max and each min, for the input and for W+ / W-."""

    @staticmethod
    def forward(layer, xs):
        x = xs[0]
        p = layer.params
        z, arg_max, arg_min = summax2d(x, p["weights_max"].astype(x.dtype, copy=False),
                                       p["weights_min"].astype(x.dtype, copy=False), layer.stride, layer.pad,
                                       layer.groups, with_index=True)
        cache = {"shape": x.shape, "arg_max": arg_max, "arg_min": arg_min}
        return normalize_activate(layer, z, cache), cache

    @staticmethod
    def backward(layer, grad, cache):
        need_params = cache.get("need_params", True)
        g, grads = normalize_activate_backward(layer, grad, cache, need_params)
        dx, d_max, d_min = summax2d_backward(
            cache["shape"], cache["arg_max"], cache["arg_min"], g, layer.size, layer.stride, layer.pad)
        if need_params:
            grads.update(weights_max=d_max, weights_min=d_min)
        return [dx], grads


@trains("quantize_convolutional")
class QuantConvTrain:
    """QAT: the conv sees fake-quantized weights and inputs; gradients pass straight through the rounding
    (STE), to the float weights unchanged and to the input where it lies inside the activation grid. An
    affine input grid learns its step (LSQ, Esser et al. 2020: "Learned step size quantization"), its zero
    point fixed: the calibrated min-max range of a 4-bit grid rounds most inputs to zero, and the STE then
    keeps pushing the layers before it through a dead zone that the forward never sees."""

    @staticmethod
    def forward(layer, xs):
        x = xs[0]
        out, cache = ConvTrain.forward_with(layer, layer.quantize_input(x).astype(x.dtype, copy=False),
                                            train_weights(layer).astype(x.dtype, copy=False))
        cache["raw"] = x
        return out, cache

    @staticmethod
    def backward(layer, grad, cache):
        (dq,), grads = ConvTrain.backward(layer, grad, cache)
        if dq is None:
            return [None], grads
        inside = input_slope(layer, cache["raw"])
        if layer.input_step is not None and cache.get("need_params", True):
            grads["input_step"] = step_gradient(layer, cache["raw"], cache["x"], inside, dq)
        return [dq * inside], grads


def step_gradient(layer: Layer, x: np.ndarray, q: np.ndarray, inside: np.ndarray, dq: np.ndarray) -> np.ndarray:
    """(1,) d loss / d input step under LSQ: d q / d step = (q - x) / step inside the grid (round(x/s) - x/s),
    the clipped code minus the zero point outside (q / step). Not scaled down as LSQ's 1 / sqrt(inputs *
    Qp) does: with the loss summed over positions, as Darknet's is, the step's relative gradient is
    already of the weights' order (a random 3-conv W4A4 net: 0.4-1.3 x the step against 470-1,800 x the
    weights with LSQ's scale)."""
    slope = (q - x * inside) / np.asarray(layer.input_step, x.dtype)
    return np.array([np.einsum("nchw,nchw->", dq, slope, dtype=np.float64)])


def train_weights(layer: Layer) -> np.ndarray:
    """The fake-quantized conv weights of a [quantize_convolutional] before BN. Affine per-channel
    quantization commutes with BN's per-channel scale, so quantizing the raw weights equals quantizing
    the folded ones; per tensor it is the training-time approximation."""
    w = layer.params["weights"]
    if layer.method == "dorefa":
        return dorefa_weights(w, layer.bitw)
    return snap_to_grid(w, layer.bitw, layer.per_channel)


def input_slope(layer: Layer, x: np.ndarray) -> np.ndarray | float:
    """d quantized input / d input under the clipped STE: the grid's slope inside its range, 0 outside."""
    if not layer.bita:
        return 1.0
    if layer.act_range is None:  # DoReFa: q(clamp(0.1 x, 0, 1))
        return np.where((x >= 0) & (x <= 10), 0.1, 0.0).astype(x.dtype)
    lo, hi = input_grid_ends(layer)
    return ((x >= lo) & (x <= hi)).astype(x.dtype)


def input_grid_ends(layer: Layer) -> tuple[float, float]:
    """The lowest and highest values of the affine input grid: -zero_point * step and (qmax - zero_point)
    * step, which differ from act_min/act_max by up to half a step where act_min is not on the grid."""
    step, zero_point = affine_params(*layer.act_range, layer.bita)
    return -zero_point * step, (unsigned_range(layer.bita)[1] - zero_point) * step


def update_running_stats(layer: Layer, cache: dict) -> None:
    """Darknet's running averages: rolling = .99 rolling + .01 batch (mean, unbiased variance)."""
    p = layer.params
    keep = ROLLING_MOMENTUM
    layer.set_params(rolling_mean=(keep * p["rolling_mean"] + (1 - keep) * cache["mean"]).astype(np.float32),
                     rolling_variance=(keep * p["rolling_variance"] + (1 - keep) * cache["var"]).astype(np.float32))


@trains("maxpool")
class MaxpoolTrain:
    @staticmethod
    def forward(layer, xs):
        out = layer.forward(xs)
        return out, {"x": xs[0], "out": out}

    @staticmethod
    def backward(layer, grad, cache):
        return [maxpool2d_backward(cache["x"], grad, layer.size, layer.stride, layer.padding, cache["out"])], {}


@trains("upsample")
class UpsampleTrain:
    @staticmethod
    def forward(layer, xs):
        return layer.forward(xs), {}

    @staticmethod
    def backward(layer, grad, cache):
        return [upsample_backward(grad, layer.stride) * layer.scale], {}


@trains("route")
class RouteTrain:
    @staticmethod
    def forward(layer, xs):
        return layer.forward(xs), {"shapes": [x.shape for x in xs]}

    @staticmethod
    def backward(layer, grad, cache):
        grads, start = [], 0
        for shape, sl in zip(cache["shapes"], layer.channel_slices()):
            part = sl.stop - sl.start
            if part == shape[1]:
                grads.append(grad[:, start:start + part])
            else:
                full = np.zeros(shape, dtype=grad.dtype)
                full[:, sl] = grad[:, start:start + part]
                grads.append(full)
            start += part
        return grads, {}


@trains("shortcut")
class ShortcutTrain:
    @staticmethod
    def forward(layer, xs):
        pre = xs[0] + xs[1]
        out = activate(layer.activation, pre)
        return out, {"pre": pre, "out": out}

    @staticmethod
    def backward(layer, grad, cache):
        g = activation_backward(layer.activation, grad, cache["pre"], cache["out"])
        return [g, g], {}


@trains("yolo", "region", "dropout")
class IdentityTrain:
    @staticmethod
    def forward(layer, xs):
        return xs[0], {}

    @staticmethod
    def backward(layer, grad, cache):
        return [grad], {}


# Layers read for inference and export but without a training forward/backward, and why (TrainRun names
# the reason; tests/test_layer_graph.py checks every registered layer is trainable or listed here).
_INFERENCE_ONLY = "read for inference and export (Darknet-world cfgs); no training path implemented yet"
NOT_TRAINABLE: dict[str, str] = {
    **{name: f"classifier layer, {_INFERENCE_ONLY}" for name in
       ("avgpool", "softmax", "cost", "connected", "crop", "batchnorm", "contrastive")},
    "detection": f"YOLOv1 head (its loss is not implemented), {_INFERENCE_ONLY}",
    "gaussian_yolo": f"Gaussian YOLOv3 head (its uncertainty loss is not implemented), {_INFERENCE_ONLY}",
    **{name: _INFERENCE_ONLY for name in ("local", "local_avgpool", "reorg", "reorg3d", "sam", "scale_channels")},
    **{name: f"recurrent layer (training needs backpropagation through time steps), {_INFERENCE_ONLY}"
       for name in ("rnn", "gru", "lstm", "crnn")},
}
