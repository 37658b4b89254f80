"""[convolutional] and [quantize_convolutional]: conv + optional batchnorm + activation."""
from __future__ import annotations

import numpy as np

from ..engine.activations import ACTIVATIONS
from ..engine.conv import conv2d, conv3x3_winograd, conv_output_size, winograd_weights
from ..quant.quantizers import (channel_view, dequantize, dorefa_activation, dorefa_weights,
                               fake_quantize_activation, quantize_weights)
from .base import Layer, register, positive

# Darknet's CPU normalize_cpu (pjreddie and AlexeyAB) and OpenCV's importer divide by sqrt(var + 1e-6);
# pjreddie's GPU kernel uses sqrt(var) + 1e-6 instead. We fold the CPU/OpenCV form (docs/ARCHITECTURE.md).
BN_EPS = 1e-6


def activation_of(layer: Layer) -> str:
    name = layer.section.get_str("activation", "logistic")
    if name not in ACTIVATIONS:
        raise layer.error(f"unknown activation '{name}'; supported: {', '.join(sorted(ACTIVATIONS))}",
                          "activation")
    return name


@register("convolutional")
class Convolutional(Layer):
    param_names = ("biases", "scales", "rolling_mean", "rolling_variance", "weights")

    def __init__(self, section, index, shapes, net):
        super().__init__(section, index, shapes, net)
        s = section
        c, h, w = self.in_shapes[0]
        self.filters = positive(self, "filters", s.get_int("filters", 1))
        self.size = positive(self, "size", s.get_int("size", 1), 64)
        self.stride = positive(self, "stride", s.get_int("stride", 1), 64)
        self.pad = self.size // 2 if s.get_int("pad", 0) else s.get_int("padding", 0)
        self.groups = positive(self, "groups", s.get_int("groups", 1))
        self.batch_normalize = bool(s.get_int("batch_normalize", 0))
        self.activation = activation_of(self)
        if s.get_int("dilation", 1) != 1:
            raise self.error("dilation other than 1 is not supported", "dilation")
        if c % self.groups or self.filters % self.groups:
            raise self.error(f"groups={self.groups} must divide input channels {c} and filters "
                             f"{self.filters}", "groups")
        ho, wo = (conv_output_size(v, self.size, self.stride, self.pad) for v in (h, w))
        if ho < 1 or wo < 1:
            raise self.error(f"size={self.size} is larger than the {h}x{w} input", "size")
        self.out_shape = (self.filters, ho, wo)
        self._folded: tuple[np.ndarray, np.ndarray] | None = None
        self._winograd: np.ndarray | None = None

    def param_shapes(self):
        n, c = self.filters, self.in_shapes[0][0]
        shapes = {"biases": (n,)}
        if self.batch_normalize:
            shapes.update(scales=(n,), rolling_mean=(n,), rolling_variance=(n,))
        shapes["weights"] = (n, c // self.groups, self.size, self.size)
        return shapes

    def set_params(self, **params: np.ndarray) -> None:
        """Replace parameters; the folded copy is rebuilt on the next forward."""
        self.params.update(params)
        self._folded = None
        self._winograd = None

    def folded(self) -> tuple[np.ndarray, np.ndarray]:
        """(weights, bias) with batchnorm folded in, computed once."""
        if self._folded is None:
            p = self.params
            w, b = p["weights"].astype(np.float64), p["biases"].astype(np.float64)
            if self.batch_normalize:
                scale = p["scales"] / np.sqrt(p["rolling_variance"].astype(np.float64) + BN_EPS)
                w = w * scale[:, None, None, None]
                b = b - scale * p["rolling_mean"]
            self._folded = (np.ascontiguousarray(w, np.float32), b.astype(np.float32))
        return self._folded

    @property
    def uses_winograd(self) -> bool:
        """3x3 stride-1 convs with >= 64 input channels: below that the Winograd transforms cost more
        than the smaller GEMM saves (measured on yolov3-tiny: 29 ms vs 33 ms im2col-only, 38 ms all-Winograd)."""
        return self.size == 3 and self.stride == 1 and self.groups == 1 and self.in_shapes[0][0] >= 64

    def forward(self, xs):
        w, b = self.folded()
        if self.uses_winograd:
            if self._winograd is None:
                self._winograd = winograd_weights(w)
            y = conv3x3_winograd(xs[0], self._winograd, b, self.pad)
        else:
            y = conv2d(xs[0], w, b, self.stride, self.pad, self.groups)
        return ACTIVATIONS[self.activation](y)


# A [quantize_convolutional] without bit keys (files of the public projects): DoReFa at 8 bits.
DEFAULT_BITS = 8


@register("quantize_convolutional")
class QuantizeConvolutional(Convolutional):
    """Same keys and .weights layout as [convolutional], run with fake quantization (docs/quantization.md):
    `bitw`, `bita` (absent = float activations), `act_min`/`act_max` (affine activation grid; absent =
    DoReFa's q(clamp(0.1x, 0, 1))), `quant_weights=affine|dorefa`, `quant_scheme=per_channel|per_tensor`.
    Without bitw and bita: DoReFa weights and activations at DEFAULT_BITS."""

    def __init__(self, section, index, shapes, net):
        super().__init__(section, index, shapes, net)
        s = section
        legacy = "bitw" not in s.options and "bita" not in s.options
        self.quant_weights = s.get_str("quant_weights", "dorefa" if legacy else "affine")
        if self.quant_weights not in ("affine", "dorefa"):
            raise self.error(f"quant_weights={self.quant_weights} must be affine or dorefa", "quant_weights")
        self.bitw = self._bits("bitw", DEFAULT_BITS, 1 if self.quant_weights == "dorefa" else 2)
        self.bita = self._bits("bita", DEFAULT_BITS if legacy else 0, 1) if legacy or "bita" in s.options else 0
        scheme = s.get_str("quant_scheme", "per_channel")
        if scheme not in ("per_channel", "per_tensor"):
            raise self.error(f"quant_scheme={scheme} must be per_channel or per_tensor", "quant_scheme")
        self.per_channel = scheme == "per_channel"
        has_range = "act_min" in s.options or "act_max" in s.options
        self.act_range = (s.get_float("act_min"), s.get_float("act_max")) if has_range else None
        self._codes: tuple[np.ndarray, np.ndarray] | None = None

    def _bits(self, key: str, default: int, low: int) -> int:
        bits = self.section.get_int(key, default)
        if not low <= bits <= 8:
            raise self.error(f"{key}={bits} must be between {low} and 8", key)
        return bits

    def folded(self) -> tuple[np.ndarray, np.ndarray]:
        """Fake-quantized (weights, bias): affine quantizes the BN-folded weights; DoReFa the raw ones,
        before the fold, as the public projects train them (BN follows the quantized conv)."""
        if self._folded is None:
            if self.quant_weights == "affine":
                w, b = super().folded()
                self._codes = quantize_weights(w, self.bitw, self.per_channel)
                self._folded = (dequantize(self._codes[0], channel_view(self._codes[1], self.per_channel)), b)
            else:
                raw = self.params["weights"]
                self.params["weights"] = dorefa_weights(raw, self.bitw)
                try:
                    super().folded()
                finally:
                    self.params["weights"] = raw
        return self._folded

    def weight_codes(self) -> tuple[np.ndarray, np.ndarray]:
        """Affine mode: the integers (O, C, K, K) and scales (O,) or () behind the folded weights."""
        self.folded()
        return self._codes

    def quantize_input(self, x: np.ndarray) -> np.ndarray:
        """x: (N, C, H, W) -> the conv input on the activation grid (unchanged without bita)."""
        if not self.bita:
            return x
        if self.act_range is None:
            return dorefa_activation(x, self.bita)
        return fake_quantize_activation(x, *self.act_range, self.bita)

    def forward(self, xs):
        return super().forward([self.quantize_input(xs[0])])
