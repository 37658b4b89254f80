"""Training-mode convs with frozen batch normalization: BN divides by the running statistics, which do not
move, so it is a fixed per-channel affine map (gamma and beta still learn). Fine-tunes with small batches
(8 images, a pruned model) otherwise train against noisy batch statistics and drag the running ones with
them; with a teacher, a student equal to the teacher then has exactly zero gradient."""
from __future__ import annotations

import numpy as np

from ..engine.backward import activation_grad, conv2d_backward
from ..engine.conv import conv2d
from ..layers.conv import BN_EPS
from .graph import activate


def frozen_inv_std(layer) -> np.ndarray:
    """(O,) 1 / sqrt(running variance + eps), as the inference layer divides."""
    return 1 / np.sqrt(layer.params["rolling_variance"].astype(np.float64) + BN_EPS)


class FrozenConvTrain:
    @staticmethod
    def forward(layer, xs):
        """x (N, C, H, W) -> conv, running-statistics BN, bias, activation; cache for backward."""
        x = xs[0]
        p = layer.params
        w = p["weights"].astype(x.dtype, copy=False)
        z = conv2d(x, w, None, layer.stride, layer.pad, layer.groups)
        cache = {"x": x, "w": w}
        if layer.batch_normalize:
            inv = frozen_inv_std(layer).astype(z.dtype).reshape(1, -1, 1, 1)
            norm = (z - p["rolling_mean"].astype(z.dtype).reshape(1, -1, 1, 1)) * inv
            cache.update(norm=norm, inv=inv)
            pre = norm * p["scales"].astype(z.dtype).reshape(1, -1, 1, 1)
        else:
            pre = z
        pre += p["biases"].astype(z.dtype).reshape(1, -1, 1, 1)
        out = activate(layer.activation, pre)
        cache.update(pre=pre, out=out)
        return out, cache

    @staticmethod
    def backward(layer, grad, cache):
        """TrainRun sets cache["need_params"] / ["need_input"]: what nobody reads is not computed."""
        need_params = cache.get("need_params", True)
        g = grad * activation_grad(layer.activation, cache["pre"], cache["out"])
        grads = {"biases": g.sum(axis=(0, 2, 3))} if need_params else {}
        if layer.batch_normalize:
            if need_params:
                grads["scales"] = np.einsum("nchw,nchw->c", g, cache["norm"])
            g = g * (layer.params["scales"].astype(g.dtype).reshape(1, -1, 1, 1) * cache["inv"])
        dx, d_weights = conv2d_backward(cache["x"], cache["w"], g, layer.stride, layer.pad, layer.groups,
                                        cache.get("need_input", True), need_params)
        if need_params:
            grads["weights"] = d_weights
        return [dx], grads


FROZEN_BN_LAYERS = {"convolutional": (FrozenConvTrain.forward, FrozenConvTrain.backward)}
