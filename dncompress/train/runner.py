"""Runs a Network in training mode: forward keeping per-layer caches, backward to parameter gradients."""
from __future__ import annotations

import numpy as np

from ..errors import DncompressError
from ..network import Network
from ..threads import keep_freed_memory
from .frozen import FROZEN_BN_LAYERS
from .graph import NOT_TRAINABLE, TRAIN_LAYERS, update_running_stats


class TrainRun:
    """One forward/backward pass over a batch. `dtype` float64 is for gradient checks. `gates` maps a
    layer index to a per-channel factor (C,) applied to its output (pruning-as-search indicators);
    backward leaves d loss / d gate in `gate_grads`. What nobody reads is not computed: the gradient w.r.t.
    the network input only with `input_grad=True` (gradient checks), parameter gradients only with
    `param_grads=True` (a search with frozen weights needs the gate gradients alone)."""

    def __init__(self, net: Network, dtype=np.float32, gates: dict[int, np.ndarray] | None = None,
                 input_grad: bool = False, param_grads: bool = True, frozen_bn: bool = False):
        for layer in net.layers:
            if layer.type not in TRAIN_LAYERS:
                why = f" ({NOT_TRAINABLE[layer.type]})" if layer.type in NOT_TRAINABLE else ""
                raise DncompressError(f"layer {layer.index} [{layer.type}] cannot be trained{why}; trainable: "
                                      + ", ".join(f"[{t}]" for t in sorted(TRAIN_LAYERS)), net.file)
        keep_freed_memory()  # every training array over 32 MB was page-faulted in again at each step
        self.net = net
        self.dtype = dtype
        self.caches: dict[int, dict] = {}
        self.input_grad: np.ndarray | None = None
        self.gates = gates if gates is not None else {}
        self.gate_grads: dict[int, np.ndarray] = {}
        self.want_input_grad = input_grad
        self.want_param_grads = param_grads
        # frozen_bn: convs normalize with their running statistics (an affine map), which stay fixed
        self.layer_fns = {**TRAIN_LAYERS, **FROZEN_BN_LAYERS} if frozen_bn else TRAIN_LAYERS

    def forward(self, x: np.ndarray, update_stats: bool = True, outputs: list[int] | None = None) -> list[np.ndarray]:
        """x: (N, C, H, W) -> raw head outputs in cfg order (or those of layers `outputs`); keeps what
        backward needs."""
        self.outputs = outputs if outputs is not None else [h.index for h in self.net.heads]
        results: dict[int, np.ndarray] = {}
        x = x.astype(self.dtype, copy=False)
        self.caches = {}
        for layer in self.net.layers:
            xs = [results[i] if i >= 0 else x for i in layer.inputs]
            results[layer.index], cache = self.layer_fns[layer.type][0](layer, xs)
            if layer.index in self.gates:
                gate = self.gates[layer.index].astype(self.dtype).reshape(1, -1, 1, 1)
                cache["ungated"] = results[layer.index]
                results[layer.index] = cache["ungated"] * gate
            if update_stats and "mean" in cache:
                update_running_stats(layer, cache)
            self.caches[layer.index] = cache
        return [results[i] for i in self.outputs]

    def backward(self, output_grads: list[np.ndarray]) -> dict[int, dict[str, np.ndarray]]:
        """Gradients of every parameter (per layer index) given d loss / d forward's outputs; the gradient
        w.r.t. the network input is left in `input_grad`."""
        pending: dict[int, np.ndarray] = dict(zip(self.outputs, output_grads))
        param_grads: dict[int, dict[str, np.ndarray]] = {}
        self.input_grad = None
        self.gate_grads = {}
        for layer in reversed(self.net.layers):
            grad = pending.pop(layer.index, None)
            if grad is None:
                continue
            cache = self.caches.pop(layer.index)
            cache["need_params"] = self.want_param_grads
            cache["need_input"] = self.want_input_grad or any(i >= 0 for i in layer.inputs)
            if layer.index in self.gates:
                self.gate_grads[layer.index] = np.einsum("nchw,nchw->c", grad, cache["ungated"])
                grad = grad * self.gates[layer.index].astype(grad.dtype).reshape(1, -1, 1, 1)
            input_grads, grads = self.layer_fns[layer.type][1](layer, grad, cache)
            if grads:
                param_grads[layer.index] = grads
            for source, g in zip(layer.inputs, input_grads):
                if g is None:
                    continue
                if source < 0:
                    self.input_grad = g if self.input_grad is None else self.input_grad + g
                else:
                    pending[source] = pending[source] + g if source in pending else g
        return param_grads
