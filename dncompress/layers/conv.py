"""[convolutional] and [quantize_convolutional]: conv + optional batchnorm + activation."""
from __future__ import annotations

from typing import ClassVar

import numpy as np

from ..engine.activation_mask import threshold_mask, winner_mask
from ..engine.activations import ACTIVATIONS, BLOCK_ELEMENTS
from ..engine.conv import (FORWARD_MAX_ROWS, banded_rows, conv2d, conv3x3_winograd, conv_output_size, uses_kn2row,
                           winograd_weights)
from ..engine.quantize import (affine_params, dorefa_activations, dorefa_weights, fake_quantize_float32,
                               snap_to_grid, unsigned_range)
from .base import Layer, register, positive

# [quantize_convolutional] without bit keys (public projects keep bit widths in code): 8-bit DoReFa
DEFAULT_BITS = 8

# Darknet's CPU normalize_cpu (pjreddie and AlexeyAB) and OpenCV's importer divide by sqrt(var + 1e-6);
# pjreddie's GPU kernel uses sqrt(var) + 1e-6 instead. We fold the CPU/OpenCV form (docs/ARCHITECTURE.md).
BN_EPS = 1e-6
# output-sized temporaries each activation in engine/activations.py allocates (for memory estimates)
ACTIVATION_TEMPORARIES = {"leaky": 1, "mish": 2, "swish": 2}


def activation_of(layer: Layer) -> str:
    name = layer.section.get_str("activation", "logistic")
    if name not in ACTIVATIONS:
        raise layer.error(f"unknown activation '{name}'; supported: {', '.join(sorted(ACTIVATIONS))}",
                          "activation")
    return name


class ConvKeys(Layer):
    """The keys of a [convolutional]-like section (filters, size, stride, pad/padding, groups,
    batch_normalize, activation) and the output shape they give."""

    # kernel tensors, (filters, C/groups, size, size) each, after biases and BN parameters in .weights
    weight_names: ClassVar[tuple[str, ...]] = ("weights",)
    keys = frozenset({"filters", "size", "stride", "stride_x", "stride_y", "pad", "padding", "groups",
                      "batch_normalize", "activation", "dilation"})
    training_keys = frozenset({"bin_output", "use_bin_output", "dot"})
    # Darknet: XNOR/binary weights, weights shared with another layer, blur pooling, deformable and
    # rotation-invariant kernels, coordinate channels, assisted excitation, cross-iteration BN
    unsupported_keys = {"xnor": ("0",), "binary": ("0",), "share_index": (), "antialiasing": ("0",),
                        "deform": ("0",), "sway": ("0",), "rotate": ("0",), "stretch": ("0",),
                        "stretch_sway": ("0",), "coordconv": ("0",), "assisted_excitation": ("0",),
                        "cbn": ("0",)}

    def __init__(self, section, index, shapes, net):
        super().__init__(section, index, shapes, net)
        s = section
        c, h, w = self.in_shapes[0]
        self.filters = positive(self, "filters", s.get_int("filters", 1))
        self.size = positive(self, "size", s.get_int("size", 1), 64)
        self.stride = positive(self, "stride", s.get_int("stride", 1), 64)
        for key in ("stride_x", "stride_y"):
            if s.get_int(key, self.stride) != self.stride:
                raise self.error(f"{key}={s.get_int(key)} differs from stride={self.stride}; non-square "
                                 "strides are not supported", key)
        self.pad = self.size // 2 if s.get_int("pad", 0) else s.get_int("padding", 0)
        if not 0 <= self.pad <= 64:
            raise self.error(f"padding={self.pad} must be between 0 and 64", "padding")
        self.groups = positive(self, "groups", s.get_int("groups", 1))
        self.batch_normalize = bool(s.get_int("batch_normalize", 0))
        self.activation = activation_of(self)
        self.dilation = self.check_dilation()
        if c % self.groups or self.filters % self.groups:
            raise self.error(f"groups={self.groups} must divide input channels {c} and filters "
                             f"{self.filters}", "groups")
        ho, wo = (conv_output_size(v, self.size, self.stride, self.pad) for v in (h, w))
        if ho < 1 or wo < 1:
            raise self.error(f"size={self.size} is larger than the {h}x{w} input", "size")
        self.out_shape = (self.filters, ho, wo)

    def check_dilation(self) -> int:
        """dilation=d: Darknet sizes the output as for d=1 ((H + 2 pad - size) / stride + 1) but runs
        im2col with padding pad*d and taps d apart; the two agree only when 2 pad = size - 1 (or size=1),
        so other paddings (where Darknet reads its buffers out of step) are refused."""
        d = positive(self, "dilation", self.section.get_int("dilation", 1), 64)
        if d == 1 or self.size == 1:
            return 1
        if self.type != "convolutional":
            raise self.error(f"dilation={d} is supported in [convolutional] only", "dilation")
        if 2 * self.pad != self.size - 1:
            raise self.error(f"dilation={d} with size={self.size} needs pad=1 (padding {(self.size - 1) // 2}): "
                             f"with padding {self.pad} Darknet's output size and its dilated im2col disagree",
                             "dilation")
        return d

    def param_shapes(self):
        n, c = self.filters, self.in_shapes[0][0]
        shapes = {"biases": (n,)}
        if self.batch_normalize:
            shapes.update(scales=(n,), rolling_mean=(n,), rolling_variance=(n,))
        for name in self.weight_names:
            shapes[name] = (n, c // self.groups, self.size, self.size)
        return shapes

    def param_problem(self) -> tuple[str, str] | None:
        """Also a batchnorm variance Darknet would take the root of below zero (NaN outputs), and a fold
        (gamma / sqrt(var + eps) times the weights) that overflows float32."""
        problem = super().param_problem()
        if problem or not self.params:
            return problem
        if self.batch_normalize:
            var = self.params["rolling_variance"]
            if (var + BN_EPS <= 0).any():
                channel = int(np.flatnonzero(var + BN_EPS <= 0)[0])
                return (f"batchnorm variance {float(var[channel]):.3g} < 0 in channel {channel} "
                        "(the file is corrupt)", "rolling_variance")
        scale, shift = self.output_affine()
        peak = max(float(np.abs(self.params[name]).max(initial=0)) for name in self.weight_names)
        if not (np.isfinite(shift).all() and np.abs(scale).max(initial=0) * peak < np.finfo(np.float32).max):
            return "batchnorm folded into the weights overflows float32 (the file is corrupt)", "scales"
        return None

    def output_affine(self) -> tuple[np.ndarray, np.ndarray]:
        """(scale, shift) per output channel, float64: batchnorm (running statistics) and bias as one
        `scale * z + shift` on the raw (kernel) output z."""
        p = self.params
        shift = p["biases"].astype(np.float64)
        if not self.batch_normalize:
            return np.ones_like(shift), shift
        scale = p["scales"] / np.sqrt(p["rolling_variance"].astype(np.float64) + BN_EPS)
        return scale, shift - scale * p["rolling_mean"]

    def kernel_output(self, x: np.ndarray) -> np.ndarray:
        """The raw output before batchnorm, bias and activation for x (N, C, H, W) (BN calibration)."""
        raise NotImplementedError


def binarize_weights(w: np.ndarray) -> np.ndarray:
    """Darknet's binarize_weights: per filter, +mean|w| where w > 0, else -mean|w|."""
    mean = np.abs(w).mean(axis=tuple(range(1, w.ndim)), keepdims=True, dtype=np.float64)
    return np.where(w > 0, mean, -mean).astype(np.float32)


def binarize_input(x: np.ndarray) -> np.ndarray:
    """Darknet's binarize_cpu: +1 where x > 0, else -1 (zero padding is added after, as in im2col)."""
    return np.where(x > 0, np.float32(1), np.float32(-1))


def refuse_xnor(net, command: str) -> None:
    """Commands whose maths assume plain float convs (training, refits, quantization) refuse xnor=1 convs,
    dilated convs and recurrent layers (supported by stats, detect, eval, classify and export)."""
    for layer in net.layers:
        if getattr(layer, "xnor", False):
            raise layer.error(f"xnor=1 (binarized conv) is supported by stats, detect, eval, classify and export, "
                              f"not by {command}", "xnor")
        if getattr(layer, "dilation", 1) != 1:
            raise layer.error(f"dilation={layer.dilation} is supported by stats, detect, eval, classify and export, "
                              f"not by {command}", "dilation")
        if getattr(layer, "share", None) is not None:
            raise layer.error(f"share_index= (shared weights) is supported by stats, detect, eval, classify and "
                              f"export, not by {command}", "share_index")
        if layer.type == "detection":
            raise layer.error(f"the YOLOv1 [detection] head is supported by stats, detect, eval and export, "
                              f"not by {command}")
        if getattr(layer, "recurrent", False):
            raise layer.error(f"[{layer.type}] (recurrent) is supported by stats, detect, eval, classify and "
                              f"export, not by {command}")


def dilate_kernel(weights: np.ndarray, dilation: int) -> np.ndarray:
    """(O, C, k, k) taps -> the equivalent (O, C, (k-1)d+1, (k-1)d+1) kernel with zeros between the taps:
    a dilated conv run by the plain conv kernels (more MACs, the same sums)."""
    o, c, k, _ = weights.shape
    size = (k - 1) * dilation + 1
    out = np.zeros((o, c, size, size), weights.dtype)
    out[:, :, ::dilation, ::dilation] = weights
    return out


@register("convolutional", "conv")
class Convolutional(ConvKeys):
    is_conv = True
    param_names = ("biases", "scales", "rolling_mean", "rolling_variance", "weights")
    # xnor=1: Darknet's CPU forward binarizes the weights (sign x mean|w| per filter) and the input (sign);
    # share_index=L: the conv uses layer L's weights, biases and BN (none of its own in .weights)
    keys = ConvKeys.keys | {"activation_threshold", "winner_rate", "xnor", "share_index"}
    unsupported_keys = {k: v for k, v in ConvKeys.unsupported_keys.items() if k not in ("xnor", "share_index")}
    # the layer whose parameters this one uses (share_index=; set by `link`), else None
    share: "Convolutional | None" = None

    def __init__(self, section, index, shapes, net):
        super().__init__(section, index, shapes, net)
        s = section
        # dncompress keys (Darknet and OpenCV ignore them): dynamic output masks after the activation
        self.activation_threshold = s.get_float("activation_threshold", 0.0)
        self.winner_rate = s.get_float("winner_rate", 1.0)
        if self.activation_threshold < 0:
            raise self.error(f"activation_threshold={self.activation_threshold} must be >= 0", "activation_threshold")
        if not 0 < self.winner_rate <= 1:
            raise self.error(f"winner_rate={self.winner_rate} must be in (0, 1]", "winner_rate")
        self.xnor = bool(s.get_int("xnor", 0))
        self.share_index = self.resolve(s.get_int("share_index"), "share_index") if "share_index" in s.options \
            else None
        self._folded: tuple[np.ndarray, np.ndarray] | None = None
        self._winograd: np.ndarray | None = None

    def link(self, layers: list) -> None:
        """share_index=: use the parameters of that earlier conv (Darknet's make_convolutional_layer points
        weights, biases, scales and rolling statistics at the shared layer's, after checking size, weight
        count, channels and filters; batch_normalize must match or Darknet reads NULL statistics)."""
        if self.share_index is None:
            return
        other = layers[self.share_index]
        if type(other) is not Convolutional or other.share is not None:
            raise self.error(f"share_index={self.share_index} refers to a [{other.type}] layer that has no weights "
                             "of its own; it must be a [convolutional] without share_index", "share_index")
        mine = (self.size, self.in_shapes[0][0], self.filters, self.groups, self.batch_normalize)
        theirs = (other.size, other.in_shapes[0][0], other.filters, other.groups, other.batch_normalize)
        if mine != theirs:
            raise self.error(f"share_index={self.share_index}: size, input channels, filters, groups, "
                             f"batch_normalize {mine} differ from that layer's {theirs}", "share_index")
        self.share = other
        self.params = other.params     # the same dict: loads and edits of the shared layer apply here

    def kernel_weights(self) -> np.ndarray:
        """The weights the kernel multiplies by (binarized for xnor=1)."""
        return binarize_weights(self.params["weights"]) if self.xnor else self.params["weights"]

    def kernel_output(self, x):
        x = binarize_input(x) if self.xnor else x
        if self.dilation > 1:
            return self.dilated(x, self.kernel_weights(), None)
        return conv2d(x, self.kernel_weights(), None, self.stride, self.pad, self.groups)

    def dilated(self, x: np.ndarray, w: np.ndarray, b: np.ndarray | None, activation=None) -> np.ndarray:
        """The dilated conv (dilation > 1) as a plain conv with the zero-spread kernel and padding pad*d."""
        return conv2d(x, dilate_kernel(w, self.dilation), b, self.stride, self.pad * self.dilation, self.groups,
                      activation)

    def workspace_elements(self) -> int:
        """Most floats of scratch alive beside the output during `forward`: Winograd's padded input,
        transforms, V, M and A^T M sums; or im2col's padded input and columns."""
        (c, h, w), (o, ho, wo) = self.in_shapes[0], self.out_shape
        k, p = (self.size - 1) * self.dilation + 1, self.pad * self.dilation
        out = o * ho * wo
        if self.uses_winograd:
            th, tw = (ho + 1) // 2, (wo + 1) // 2
            tiles = th * tw
            # padded input and V throughout; first the row transforms and one row's column transforms,
            # then M and the A^T M sums
            kernel = c * (2 * th + 2) * (2 * tw + 2) + 16 * tiles * c \
                + max(4 * c * th * (2 * tw + 2) + 4 * c * tiles, 26 * o * tiles)
        elif k == 1 and self.stride == 1 and p == 0:
            kernel = 0
        elif banded_rows(c, k, self.groups, ho, wo, FORWARD_MAX_ROWS):
            # engine.conv.conv2d_banded: the padded input, one band's columns (and ones row) and its product
            # (filters padded to a multiple of 4); the activation runs on the product
            band = min(ho, banded_rows(c, k, self.groups, ho, wo, FORWARD_MAX_ROWS))
            return (c * (h + 2 * p) * (w + 2 * p) if p else 0) + (c * k * k + 1) * band * wo \
                + (o + 3) * band * wo + ACTIVATION_TEMPORARIES.get(self.activation, 0) * o * band * wo
        elif uses_kn2row(c, o, k, self.stride, self.groups):
            # engine.conv.conv2d_kn2row: the padded input (a spare row), every tap's product, one image's sums
            kernel = c * (h + 2 * p + 1) * (w + 2 * p) + k * k * o * (h + 2 * p + 1) * (w + 2 * p) \
                + o * ho * (w + 2 * p)
        else:
            cols = c * k * k * ho * wo
            kernel = max(cols, (c * (h + 2 * p) * (w + 2 * p) if p else 0) + cols - out)
        # the activation runs inside the kernel, its temporaries one block at a time
        return kernel + ACTIVATION_TEMPORARIES.get(self.activation, 0) * min(out, max(BLOCK_ELEMENTS, ho * wo))

    def set_params(self, **params: np.ndarray) -> None:
        """Replace parameters; the folded copy is rebuilt on the next forward (a sharing conv's go to the
        shared layer, whose caches it reads)."""
        if self.share is not None:
            self.share.set_params(**params)
            return
        super().set_params(**params)
        self._folded = None
        self._winograd = None

    def fold(self, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(weights, bias) of this layer with its batchnorm folded in, computed in float64."""
        scale, shift = self.output_affine()
        w = weights.astype(np.float64) * scale[:, None, None, None]
        return np.ascontiguousarray(w, np.float32), shift.astype(np.float32)

    def param_shapes(self):
        """None for a conv sharing another's parameters (Darknet skips it when loading weights)."""
        return {} if self.share_index is not None else super().param_shapes()

    def folded(self) -> tuple[np.ndarray, np.ndarray]:
        """fold() of the current weights, computed once per parameter change (a sharing conv reads the
        shared layer's cache, which that layer's set_params drops)."""
        if self.share is not None:
            return self.share.folded()
        if self._folded is None:
            self._folded = self.fold(self.kernel_weights())
        return self._folded

    @property
    def uses_winograd(self) -> bool:
        """3x3 stride-1 convs with >= 64 input and output channels: below that the Winograd transforms cost
        more than the smaller GEMM saves (measured on yolov3-tiny: 29 ms vs 33 ms im2col-only, 38 ms
        all-Winograd; a pruned model's 384 -> 51 conv at 26x26: 3.9-7.3 ms vs 3.4-4.3 ms im2col in
        repeated runs, 1 thread)."""
        return self.size == 3 and self.stride == 1 and self.groups == 1 and self.in_shapes[0][0] >= 64 \
            and self.filters >= 64 \
            and self.dilation == 1 and self.share_index is None

    def forward(self, xs):
        w, b = self.folded()
        xs = [binarize_input(xs[0])] if self.xnor else xs
        if self.dilation > 1:
            return self.mask(self.dilated(xs[0], w, b, ACTIVATIONS[self.activation]))
        if self.uses_winograd:
            if self._winograd is None:
                self._winograd = winograd_weights(w)
            y = conv3x3_winograd(xs[0], self._winograd, b, self.pad, self.output_function())
        else:
            y = conv2d(xs[0], w, b, self.stride, self.pad, self.groups, self.output_function())
        return self.mask(y)

    def output_function(self):
        """What runs (in place) on the conv + bias output: the activation."""
        return ACTIVATIONS[self.activation]

    def mask(self, y: np.ndarray) -> np.ndarray:
        """The dynamic masks of `activation_threshold` and `winner_rate` (none by default), in place."""
        if self.activation_threshold:
            threshold_mask(y, self.activation_threshold)
        if self.winner_rate < 1:
            winner_mask(y, self.winner_rate)
        return y


@register("quantize_convolutional")
class QuantizeConvolutional(Convolutional):
    """A conv with fake quantization; same .weights layout as [convolutional]. Keys (all optional):
    bitw (weight bits, default 8), bita (input activation bits, default 8, 0 = float),
    quant_weights = dorefa (default without bitw/bita: files from public projects) | affine (default
    with bit keys, written by dncompress: symmetric weights per channel or tensor, activations over
    [act_min, act_max]),
    quant_scheme = per_channel | per_tensor (affine weights),
    bito (bits of the conv + bias output before the activation, default 0 = float) over [out_min, out_max]:
    what an integer runtime does (onnxruntime's QLinearConv requantizes its int32 accumulators to uint8)."""

    is_quantized = True

    keys = (Convolutional.keys - {"xnor"}) | {"bitw", "bita", "quant_weights", "quant_scheme", "act_min", "act_max",
                                               "bito", "out_min", "out_max"}
    unsupported_keys = ConvKeys.unsupported_keys

    def __init__(self, section, index, shapes, net):
        super().__init__(section, index, shapes, net)
        s = section
        self.bitw = s.get_int("bitw", DEFAULT_BITS)
        self.bita = s.get_int("bita", DEFAULT_BITS)
        keyless = "bitw" not in s.options and "bita" not in s.options
        self.method = s.get_str("quant_weights", "dorefa" if keyless else "affine")
        self.per_channel = s.get_str("quant_scheme", "per_channel") == "per_channel"
        if not 1 <= self.bitw <= 16:
            raise self.error(f"bitw={self.bitw} must be between 1 and 16", "bitw")
        if not 0 <= self.bita <= 16:
            raise self.error(f"bita={self.bita} must be between 0 (float) and 16", "bita")
        if self.method not in ("dorefa", "affine"):
            raise self.error(f"quant_weights={self.method} must be dorefa or affine", "quant_weights")
        if s.get_str("quant_scheme", "per_channel") not in ("per_channel", "per_tensor"):
            raise self.error("quant_scheme must be per_channel or per_tensor", "quant_scheme")
        self.act_range = None
        if self.method == "affine" and self.bita:
            self.act_range = (s.get_float("act_min"), s.get_float("act_max"))
            if not self.act_range[0] < self.act_range[1]:
                raise self.error(f"act_min={self.act_range[0]} must be below act_max={self.act_range[1]}",
                                 "act_max")
        if self.method == "dorefa" and self.bitw > 1 and self.groups != 1:
            raise self.error("DoReFa quantization of grouped convs is not supported", "groups")
        self.bito = s.get_int("bito", 0)
        self.out_range = None
        if not 0 <= self.bito <= 16:
            raise self.error(f"bito={self.bito} must be between 0 (float) and 16", "bito")
        if self.bito:
            self.out_range = (s.get_float("out_min"), s.get_float("out_max"))
            if not self.out_range[0] < self.out_range[1]:
                raise self.error(f"out_min={self.out_range[0]} must be below out_max={self.out_range[1]}",
                                 "out_max")

    def folded(self):
        """Weights on the quantization grid: DoReFa quantizes the raw weights (BN follows the conv, as
        in the public projects); affine quantizes the BN-folded weights (what a deployment runs)."""
        if self._folded is None:
            if self.method == "dorefa":
                self._folded = self.fold(dorefa_weights(self.params["weights"], self.bitw))
            else:
                w, b = self.fold(self.params["weights"])
                self._folded = (snap_to_grid(w, self.bitw, self.per_channel), b)
        return self._folded

    def quantize_input(self, x: np.ndarray) -> np.ndarray:
        if not self.bita:
            return x
        if self.method == "dorefa":
            return dorefa_activations(x, self.bita)
        scale, zero_point = affine_params(*self.act_range, self.bita)
        return fake_quantize_float32(x, scale, zero_point, *unsigned_range(self.bita))

    @property
    def input_step(self) -> float | None:
        """The step of the affine input grid (None: float or DoReFa inputs); QAT learns it (LSQ)."""
        return affine_params(*self.act_range, self.bita)[0] if self.act_range else None

    def set_input_step(self, step: float) -> None:
        """Move the input grid to `step`, its zero point kept: act_min/act_max become -zero_point * step and
        (2^bita - 1 - zero_point) * step, written to the section as the cfg will hold them (9 digits), so
        the model in memory is the one its cfg describes."""
        zero_point = affine_params(*self.act_range, self.bita)[1]
        self.set_act_range(*(f"{v:.9g}" for v in (-zero_point * step, (unsigned_range(self.bita)[1] - zero_point) * step)))

    def set_act_range(self, low: str, high: str) -> None:
        """act_min/act_max as the cfg text holds them, in the section and the layer alike."""
        self.section.options.update(act_min=low, act_max=high)
        self.act_range = (float(low), float(high))

    def forward(self, xs):
        return super().forward([self.quantize_input(xs[0])])

    def output_function(self):
        """With bito: the output rounded to its grid (in place) before the activation."""
        activation = ACTIVATIONS[self.activation]
        if not self.bito:
            return activation
        scale, zero_point = affine_params(*self.out_range, self.bito)
        qmin, qmax = unsigned_range(self.bito)

        def quantize_then_activate(y: np.ndarray) -> np.ndarray:
            y[...] = fake_quantize_float32(y, scale, zero_point, qmin, qmax)
            return activation(y)
        return quantize_then_activate
