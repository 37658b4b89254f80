"""Training-mode convs with frozen batch normalization: BN divides by the running statistics, which do not
move, so it is a fixed per-channel affine map (gamma and beta still learn). Fine-tunes with small batches
(8 images, a pruned model) otherwise train against noisy batch statistics and drag the running ones with
them; with a teacher, a student equal to the teacher then has exactly zero gradient."""
from __future__ import annotations

import numpy as np

from ..engine.conv import conv2d
from ..layers.conv import BN_EPS
from .graph import ConvTrain, normalize_activate


def frozen_inv_std(layer) -> np.ndarray:
    """(O,) 1 / sqrt(running variance + eps), as the inference layer divides."""
    return 1 / np.sqrt(layer.params["rolling_variance"].astype(np.float64) + BN_EPS)


class FrozenConvTrain:
    @staticmethod
    def forward(layer, xs):
        """x (N, C, H, W) -> conv, running-statistics BN, bias, activation (in place over channel slices on
        the engine's threads, as the batch-statistics conv); cache for backward."""
        x = xs[0]
        w = layer.params["weights"].astype(x.dtype, copy=False)
        z = conv2d(x, w, None, layer.stride, layer.pad, layer.groups)
        cache = {"x": x, "w": w}
        fixed = (layer.params["rolling_mean"], frozen_inv_std(layer)) if layer.batch_normalize else None
        return normalize_activate(layer, z, cache, fixed), cache

    # the same as a batch-statistics conv's: normalize_activate_backward reads the fixed statistics from
    # the cache; TrainRun sets cache["need_params"] / ["need_input"]: what nobody reads is not computed
    backward = ConvTrain.backward


FROZEN_BN_LAYERS = {"convolutional": (FrozenConvTrain.forward, FrozenConvTrain.backward)}
