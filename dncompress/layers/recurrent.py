"""Darknet's recurrent layers: [rnn], [gru], [lstm] (built of [connected] sub-layers) and [crnn] (built of
[convolutional] sub-layers), as Darknet runs them at inference (`parse_network_cfg_custom(cfg, 1, 1)`:
batch 1, time_steps 1): each forward is one time step, and the state starts at zero after loading.
`Network.forward` therefore runs every image as the first step of its own sequence; `step(x, state)`
carries the state over a sequence (what Darknet does across successive calls, e.g. video frames).

Parameters are stored as `<sub-layer>.<tensor>` in Darknet's .weights order (parser.c load_weights_upto):
[rnn] input, self, output; [gru] input_z, input_r, input_h, state_z, state_r, state_h; [lstm] wf, wi, wg,
wo (state -> gates), uf, ui, ug, uo (input -> gates); [crnn] input, self, output, each a conv. A connected
sub-layer's tensors: biases, weights (outputs, inputs), then with batch_normalize scales, rolling_mean,
rolling_variance; a conv sub-layer's: biases, then BN, then weights (the [convolutional] order)."""
from __future__ import annotations

from typing import ClassVar

import numpy as np

from ..engine.activations import ACTIVATIONS, logistic, tanh
from ..engine.conv import conv2d, conv_output_size
from .base import Layer, positive, register
from .conv import BN_EPS, activation_of

CONNECTED_ORDER = ("biases", "weights", "scales", "rolling_mean", "rolling_variance")
CONV_ORDER = ("biases", "scales", "rolling_mean", "rolling_variance", "weights")


def loggy(x: np.ndarray) -> np.ndarray:
    """Darknet's LOGGY: 2 / (1 + exp(-x)) - 1, in place ([rnn] logistic=2)."""
    logistic(x)
    x *= 2
    x -= 1
    return x


class Recurrent(Layer):
    """Shared by the recurrent layers: sub-layers `parts` ((name, inputs, outputs, activation) each), their
    tensors in .weights order, BN folded per call, and the one-step forward from a zero state. The BN flag
    is `bn`, not `batch_normalize`, so Network.calibrate_batchnorm (per-conv statistics) skips them."""

    # (name, inputs, outputs, activation) per sub-layer, in .weights order; set by each __init__
    parts: list[tuple[str, int, int, str]]
    order: ClassVar[tuple[str, ...]] = CONNECTED_ORDER
    # marks layers whose output depends on a state (conv.refuse_xnor: prune, quantize, train refuse them;
    # export writes one step from the zero state)
    recurrent = True

    def setup_common(self) -> None:
        self.bn = bool(self.section.get_int("batch_normalize", 0))
        self.inputs_count = int(np.prod(self.in_shapes[0]))
        # kernel size and stride, for the stats table and the energy model; [crnn] sets its own size
        self.size, self.stride = 1, 1

    def setup_dense_output(self) -> int:
        """[rnn]/[gru]/[lstm]: `output=` values, shaped (outputs, 1, 1) like [connected]; returns the count."""
        self.outputs = self.filters = positive(self, "output", self.section.get_int("output", 1), 1 << 20)
        self.out_shape = (self.outputs, 1, 1)
        return self.outputs

    def part(self, name: str) -> tuple[int, int, str]:
        return next(p[1:] for p in self.parts if p[0] == name)

    def part_shapes(self, name: str) -> dict[str, tuple[int, ...]]:
        """Tensors of one connected sub-layer (convs override), in its .weights order."""
        n_in, n_out, _ = self.part(name)
        shapes = {"biases": (n_out,), "weights": (n_out, n_in)}
        if self.bn:
            shapes.update(scales=(n_out,), rolling_mean=(n_out,), rolling_variance=(n_out,))
        return {k: shapes[k] for k in self.order if k in shapes}

    def param_shapes(self):
        return {f"{name}.{k}": v for name, *_ in self.parts for k, v in self.part_shapes(name).items()}

    def macs(self) -> int:
        """Multiply-adds of one time step: every sub-layer's inputs x outputs (as [connected])."""
        return sum(n_in * n_out for _, n_in, n_out, _ in self.parts)

    def output_affine(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(scale, shift) of sub-layer `name` per output, float64: BN on running statistics, then bias."""
        p = {k: self.params[f"{name}.{k}"] for k in self.part_shapes(name)}
        shift = p["biases"].astype(np.float64)
        if not self.bn:
            return np.ones_like(shift), shift
        scale = p["scales"] / np.sqrt(p["rolling_variance"].astype(np.float64) + BN_EPS)
        return scale, shift - scale * p["rolling_mean"]

    def param_problem(self) -> tuple[str, str] | None:
        problem = super().param_problem()
        if problem or not self.params or not self.bn:
            return problem
        for name, *_ in self.parts:
            var = self.params[f"{name}.rolling_variance"]
            if (var + BN_EPS <= 0).any():
                return "batchnorm variance < 0 (the file is corrupt)", f"{name}.rolling_variance"
        return None

    def folded(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(weights, bias) of sub-layer `name` with its batchnorm folded in (float64 fold, float32 result)."""
        scale, shift = self.output_affine(name)
        w = self.params[f"{name}.weights"]
        w = w.astype(np.float64) * scale.reshape(-1, *[1] * (w.ndim - 1))
        return w.astype(np.float32), shift.astype(np.float32)

    def zero_input_output(self, name: str) -> np.ndarray:
        """Sub-layer `name`'s output for a zero input, (1, outputs[, H, W]): activation(BN(0) + bias)."""
        _, n_out, activation = self.part(name)
        _, b = self.folded(name)
        spatial = self.out_shape[1:] if self.order is CONV_ORDER else ()
        y = np.broadcast_to(b.reshape(1, n_out, *[1] * len(spatial)), (1, n_out, *spatial)).copy()
        return ACTIVATIONS[activation](y) if activation != "loggy" else loggy(y)

    def sub(self, name: str, x: np.ndarray | None, n: int) -> np.ndarray:
        """Sub-layer `name` on x (N, inputs) -> (N, outputs), activation applied; x=None is a zero input
        (the first step's state: the output is then BN(0) + bias, activated, as Darknet computes it)."""
        if x is None:
            return np.repeat(self.zero_input_output(name), n, axis=0)
        activation = self.part(name)[2]
        w, b = self.folded(name)
        y = x @ w.T + b
        return ACTIVATIONS[activation](y) if activation != "loggy" else loggy(y)

    def initial_state(self, n: int):
        """The state after loading: zeros (None = a zero tensor, skipped in the GEMMs)."""
        return None

    def step(self, x: np.ndarray, state) -> tuple[np.ndarray, object]:
        """One time step: x (N, C, H, W) and the previous state -> (output (N, *out_shape), new state)."""
        raise NotImplementedError

    def forward(self, xs):
        return self.step(xs[0], self.initial_state(len(xs[0])))[0]


@register("rnn")
class Rnn(Recurrent):
    """state = [state if shortcut] + input(x) + self(state); output = output(state) (forward_rnn_layer).
    The sub-layers share `activation`; logistic=1 (2) makes the self layer logistic (loggy)."""

    keys = frozenset({"output", "hidden", "activation", "batch_normalize", "logistic", "shortcut"})

    def __init__(self, section, index, shapes, net):
        super().__init__(section, index, shapes, net)
        self.setup_common()
        self.setup_dense_output()
        s = section
        self.hidden = positive(self, "hidden", s.get_int("hidden", 1), 1 << 20)
        self.activation = activation_of(self)
        log = s.get_int("logistic", 0)
        if log not in (0, 1, 2):
            raise self.error(f"logistic={log} must be 0, 1 (logistic) or 2 (loggy)", "logistic")
        self.shortcut = bool(s.get_int("shortcut", 0))
        self_act = {0: self.activation, 1: "logistic", 2: "loggy"}[log]
        self.parts = [("input", self.inputs_count, self.hidden, self.activation),
                      ("self", self.hidden, self.hidden, self_act),
                      ("output", self.hidden, self.outputs, self.activation)]

    def step(self, x, state):
        n = len(x)
        new = self.sub("input", x.reshape(n, -1), n) + self.sub("self", state, n)
        if self.shortcut and state is not None:
            new += state
        return self.sub("output", new, n).reshape(n, *self.out_shape), new


@register("gru")
class Gru(Recurrent):
    """z = σ(Wz x + Uz h), r = σ(Wr x + Ur h), h~ = σ(Wh x + Uh (r h)), h' = z h + (1 - z) h~
    (forward_gru_layer; h~ is logistic: gru_layer.c is compiled without USET, unlike rnn/lstm)."""

    keys = frozenset({"output", "batch_normalize"})

    def __init__(self, section, index, shapes, net):
        super().__init__(section, index, shapes, net)
        self.setup_common()
        n_in, n = self.inputs_count, self.setup_dense_output()
        self.parts = [(f"input_{g}", n_in, n, "linear") for g in "zrh"] + \
                     [(f"state_{g}", n, n, "linear") for g in "zrh"]

    def step(self, x, state):
        n = len(x)
        x = x.reshape(n, -1)
        z = logistic(self.sub("input_z", x, n) + self.sub("state_z", state, n))
        r = logistic(self.sub("input_r", x, n) + self.sub("state_r", state, n))
        forgot = None if state is None else r * state
        h = logistic(self.sub("input_h", x, n) + self.sub("state_h", forgot, n))
        new = (1 - z) * h if state is None else z * state + (1 - z) * h
        return new.reshape(n, *self.out_shape), new


@register("lstm")
class Lstm(Recurrent):
    """f, i, o = σ(W h + U x), g = tanh(W h + U x); c' = f c + i g; h' = o tanh(c') (forward_lstm_layer)."""

    keys = frozenset({"output", "batch_normalize"})

    def __init__(self, section, index, shapes, net):
        super().__init__(section, index, shapes, net)
        self.setup_common()
        n_in, n = self.inputs_count, self.setup_dense_output()
        self.parts = [(f"w{g}", n, n, "linear") for g in "figo"] + [(f"u{g}", n_in, n, "linear") for g in "figo"]

    def initial_state(self, n):
        return None, None

    def step(self, x, state):
        n = len(x)
        x = x.reshape(n, -1)
        h, c = state
        gates = {g: self.sub(f"w{g}", h, n) + self.sub(f"u{g}", x, n) for g in "figo"}
        f, i, o = (logistic(gates[g]) for g in "fio")
        g = tanh(gates["g"])
        c = i * g if c is None else f * c + i * g
        h = o * np.tanh(c)
        return h.reshape(n, *self.out_shape), (h, c)


@register("crnn")
class Crnn(Recurrent):
    """[rnn] with convs (forward_crnn_layer): input conv (C -> hidden), self conv (hidden -> hidden),
    output conv (hidden -> output), all with `size`, `pad`, `groups`, `activation`, `batch_normalize`.
    The hidden state keeps the input's height and width (Darknet sizes it so), so the convs must too."""

    keys = frozenset({"size", "stride", "pad", "padding", "output", "hidden", "groups", "activation",
                      "batch_normalize", "shortcut", "dilation", "xnor"})
    unsupported_keys = {}
    order = CONV_ORDER

    def __init__(self, section, index, shapes, net):
        super().__init__(section, index, shapes, net)
        self.setup_common()
        s = section
        c, h, w = self.in_shapes[0]
        self.size = positive(self, "size", s.get_int("size", 3), 64)
        self.pad = self.size // 2 if s.get_int("pad", 0) else s.get_int("padding", 0)
        self.outputs = positive(self, "output", s.get_int("output", 1), 1 << 16)
        self.hidden = positive(self, "hidden", s.get_int("hidden", 1), 1 << 16)
        self.groups = positive(self, "groups", s.get_int("groups", 1))
        self.activation = activation_of(self)
        self.shortcut = bool(s.get_int("shortcut", 0))
        for key in ("stride", "dilation"):
            if s.get_int(key, 1) != 1:
                raise self.error(f"{key}={s.get_int(key)}: Darknet's [crnn] keeps its state at the input's "
                                 f"size, so only {key}=1 runs", key)
        if s.get_int("xnor", 0):
            raise self.error("xnor=1 in [crnn] is not supported", "xnor")
        if conv_output_size(h, self.size, 1, self.pad) != h or conv_output_size(w, self.size, 1, self.pad) != w:
            raise self.error(f"size={self.size} with padding {self.pad} changes the {h}x{w} size; Darknet's "
                             "[crnn] state needs pad=1 (or size=1)", "pad")
        for name, count in (("input channels", c), ("hidden", self.hidden), ("output", self.outputs)):
            if count % self.groups:
                raise self.error(f"groups={self.groups} must divide {name} {count}", "groups")
        self.parts = [("input", c, self.hidden, self.activation), ("self", self.hidden, self.hidden, self.activation),
                      ("output", self.hidden, self.outputs, self.activation)]
        self.out_shape = (self.outputs, h, w)
        self.filters = self.outputs

    def part_shapes(self, name):
        n_in, n_out, _ = self.part(name)
        shapes = {"biases": (n_out,), "weights": (n_out, n_in // self.groups, self.size, self.size)}
        if self.bn:
            shapes.update(scales=(n_out,), rolling_mean=(n_out,), rolling_variance=(n_out,))
        return {k: shapes[k] for k in self.order if k in shapes}

    def macs(self) -> int:
        """Multiply-adds of one time step: the three convs (Darknet prints their sum as the layer's BFLOPs)."""
        _, h, w = self.out_shape
        return sum(n_out * n_in // self.groups * self.size ** 2 * h * w for _, n_in, n_out, _ in self.parts)

    def workspace_elements(self) -> int:
        """im2col columns of the widest conv and the hidden state."""
        _, h, w = self.out_shape
        widest = max(n_in for _, n_in, _, _ in self.parts)
        return widest * self.size ** 2 * h * w + 2 * self.hidden * h * w

    def sub(self, name, x, n):
        """Conv sub-layer `name` on x (N, C, H, W) (None: the zero state) -> (N, outputs, H, W)."""
        if x is None:
            return np.repeat(self.zero_input_output(name), n, axis=0)
        w, b = self.folded(name)
        return conv2d(x, w, b, 1, self.pad, self.groups, ACTIVATIONS[self.part(name)[2]])

    def step(self, x, state):
        n = len(x)
        new = self.sub("input", x, n) + self.sub("self", state, n)
        if self.shortcut and state is not None:
            new += state
        return self.sub("output", new, n), new
