"""Training-mode forward and backward per layer type, beside the inference layers (which stay untouched
and fast). Each entry: forward(layer, xs) -> (y, cache); backward(layer, grad, cache) -> (input grads,
param grads). Convs use batch statistics and update the running ones, as Darknet does with net.train."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..engine.activations import ACTIVATIONS
from ..engine.backward import activation_grad, conv2d_backward, maxpool2d_backward, upsample_backward
from ..engine.batchnorm import ROLLING_MOMENTUM, batchnorm_train, batchnorm_train_backward
from ..engine.conv import conv2d
from ..layers import Layer
from ..layers.conv import BN_EPS

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


def weights_for_training(layer: Layer) -> np.ndarray:
    """The conv weights the forward pass uses; QAT layers may override via `train_weights`."""
    hook = getattr(layer, "train_weights", None)
    return hook() if hook else layer.params["weights"]


@trains("convolutional", "quantize_convolutional")
class ConvTrain:
    @staticmethod
    def forward(layer, xs):
        p = layer.params
        x = xs[0]
        w = weights_for_training(layer).astype(x.dtype, copy=False)
        z = conv2d(x, w, None, layer.stride, layer.pad, layer.groups)
        cache = {"x": x, "w": w}
        if layer.batch_normalize:
            norm, mean, var = batchnorm_train(z, BN_EPS)
            cache.update(norm=norm, var=var, mean=mean)
            pre = norm * p["scales"].astype(x.dtype).reshape(1, -1, 1, 1)
        else:
            pre = z
        pre += p["biases"].astype(x.dtype).reshape(1, -1, 1, 1)
        out = activate(layer.activation, pre)
        cache.update(pre=pre, out=out)
        return out, cache

    @staticmethod
    def backward(layer, grad, cache):
        g = grad * activation_grad(layer.activation, cache["pre"], cache["out"])
        grads = {"biases": g.sum(axis=(0, 2, 3))}
        if layer.batch_normalize:
            grads["scales"] = np.einsum("nchw,nchw->c", g, cache["norm"])
            d_norm = g * layer.params["scales"].astype(g.dtype).reshape(1, -1, 1, 1)
            g = batchnorm_train_backward(d_norm, cache["norm"], cache["var"], BN_EPS)
        dx, grads["weights"] = conv2d_backward(cache["x"], cache["w"], g, layer.stride, layer.pad, layer.groups)
        return [dx], grads


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
        return layer.forward(xs), {"x": xs[0]}

    @staticmethod
    def backward(layer, grad, cache):
        return [maxpool2d_backward(cache["x"], grad, layer.size, layer.stride, layer.padding)], {}


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
        g = grad * activation_grad(layer.activation, cache["pre"], cache["out"])
        return [g, g], {}


@trains("yolo", "region", "dropout")
class IdentityTrain:
    @staticmethod
    def forward(layer, xs):
        return xs[0], {}

    @staticmethod
    def backward(layer, grad, cache):
        return [grad], {}
