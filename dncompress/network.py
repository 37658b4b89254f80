"""Network: typed layers built from cfg sections, loaded from .weights, run forward on NCHW batches."""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .cfg import Section, read_cfg, write_cfg
from .errors import DncompressError
from .fsutil import atomic_write_many
from .graph import Graph
from .layers import LAYERS, Layer, NetInfo
from .layers.keys import check_keys
from .limits import DEFAULT_MAX_ACTIVATION_MB, MAX_ACTIVATION_ENV, max_activation_mb  # noqa: F401 (re-exported)
from .threads import parallel, serial
from .weights import WeightsHeader, WeightsReader, read_weights, weights_payload


NET_KEYS = frozenset({"width", "height", "channels", "inputs"})
# [net] keys Darknet reads for training (or preprocessing options `detect`/`eval` take as flags)
NET_TRAINING_KEYS = frozenset({
    "batch", "subdivisions", "momentum", "decay", "angle", "saturation", "exposure", "hue", "aspect",
    "learning_rate", "burn_in", "max_batches", "max_epochs", "policy", "steps", "scales", "step", "gamma",
    "power", "rate", "seen", "mosaic", "mosaic_bound", "cutmix", "mixup", "blur", "gaussian_noise", "flip",
    "letter_box", "track", "augment_speed", "sequential_subdivisions", "init_sequential_subdivisions",
    "try_fix_nan", "min_crop", "max_crop", "adam", "B1", "B2", "eps", "loss_scale", "dynamic_minibatch",
    "optimized_memory", "workspace_size_limit_MB", "max_chart_loss", "label_smooth_eps", "resize_step",
    "attention", "adversarial_lr", "contrastive", "contrastive_jit_flip", "contrastive_color", "unsupervised",
    "time_steps", "ema_alpha", "use_cuda_graph", "sgdr_cycle", "sgdr_mult", "num_sequences",
    "show_receptive_field", "equidistant_point", "max"})


def net_info(section: Section) -> NetInfo:
    """Input geometry from [net]; width/height must be positive multiples of 32 in practice, not by rule.
    A cfg giving `inputs=` without `channels=` (Darknet's recurrent text models: c = 0, so only the
    flat input count matters) takes a vector of that many values, read as (inputs, 1, 1)."""
    if "inputs" in section.options and "channels" not in section.options:
        inputs = section.get_int("inputs")
        if not 0 < inputs <= 1 << 24:
            raise section.error(f"inputs={inputs} must be between 1 and {1 << 24}", "inputs")
        return NetInfo(1, 1, inputs)
    info = NetInfo(section.get_int("width", 416), section.get_int("height", 416),
                   section.get_int("channels", 3))
    for key, value in (("width", info.width), ("height", info.height), ("channels", info.channels)):
        if not 0 < value <= 16384:
            raise section.error(f"{key}={value} must be between 1 and 16384", key)
    return info


class Network:
    """Layers in cfg order (index 0 = first section after [net]) plus the [net] section."""

    def __init__(self, sections: list[Section], file: str | None = None,
                 max_activation_mb: float | None = None):
        if not sections or sections[0].type not in ("net", "network"):
            where = f"line {sections[0].line} [{sections[0].type}]" if sections else None
            raise DncompressError("the first section must be [net] (input size, channels)", file, where)
        self.file = file
        self.net_section = sections[0]
        self.info = net_info(self.net_section)
        # unused cfg fields (layers/keys.py), for the caller to show; unsupported ones raised already
        self.warnings: list[str] = check_keys(self.net_section, NET_KEYS, NET_TRAINING_KEYS, {})
        self.layers: list[Layer] = []
        shapes = []
        for index, section in enumerate(sections[1:]):
            cls = LAYERS.get(section.type)
            if cls is None:
                raise section.error(f"unknown section [{section.type}]; supported: "
                                    + ", ".join(f"[{t}]" for t in sorted(LAYERS)))
            self.warnings += check_keys(section, cls.keys, cls.training_keys, cls.unsupported_keys,
                                        cls.approximated_keys)
            layer = cls(section, index, shapes, self.info)
            self.layers.append(layer)
            shapes.append(layer.out_shape)
        if not self.layers:
            raise DncompressError("the cfg has no layers after [net]", file, self.net_section.where())
        # parse_cfg's warnings and those layers added while building (e.g. [yolo] anchors short of num=)
        self.warnings = [w for section in sections for w in section.warnings] + self.warnings
        for layer in self.layers:      # layers using another's parameters ([convolutional] share_index=)
            if hasattr(layer, "link"):
                layer.link(self.layers)
        self.header = WeightsHeader()
        self.weights_file: str | None = None  # the .weights file the parameters were read from
        self.graph = Graph.of(self.layers)
        self._check_activation_memory(max_activation_mb)

    @classmethod
    def from_cfg(cls, cfg_path: str | Path, weights_path: str | Path | None = None,
                 width: int | None = None, height: int | None = None,
                 max_activation_mb: float | None = None) -> "Network":
        """Build from a cfg file (optionally at another input size), load weights if given."""
        sections = read_cfg(cfg_path)
        if width is not None or height is not None:
            sections[0] = dataclasses.replace(sections[0].copy(), warnings=sections[0].warnings)
            sections[0].options["width"] = str(height if width is None else width)
            sections[0].options["height"] = str(width if height is None else height)
        net = cls(sections, str(cfg_path), max_activation_mb)
        if weights_path is not None:
            net.load_weights(weights_path)
        return net

    def derive(self, sections: list[Section]) -> "Network":
        """A new network from transformed sections, with this one's file name and a copy of its header
        (training the derived network must not change this one's `seen`); parameters are the caller's."""
        derived = Network(sections, self.file)
        derived.header = dataclasses.replace(self.header)
        return derived

    def copy(self, sections: list[Section] | None = None) -> "Network":
        """An independent copy: copied (or the given) sections, copied parameters, a copy of the header."""
        clone = self.derive(sections or [s.copy() for s in self.sections])
        for source, layer in zip(self.layers, clone.layers):
            layer.set_params(**{name: value.copy() for name, value in source.params.items()})
        return clone

    @property
    def sections(self) -> list[Section]:
        return [self.net_section] + [layer.section for layer in self.layers]

    @property
    def heads(self) -> list[Layer]:
        return [layer for layer in self.layers if layer.is_head]

    @property
    def output_indices(self) -> list[int]:
        """The layers `forward` returns: every [yolo]/[region] head, or the last layer (classifiers)."""
        return self.graph.outputs

    @property
    def last_use(self) -> list[int]:
        """For each layer, the index of the last layer that reads its output (outputs: len(layers))."""
        return self.graph.last_use

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.info.channels, self.info.height, self.info.width)

    def param_count(self) -> int:
        return sum(int(np.prod(s)) for layer in self.layers for s in layer.param_shapes().values())

    def load_weights(self, path: str | Path) -> None:
        header, payload, stray_bytes = read_weights(path)
        self.load_payload(header, payload, str(path), stray_bytes)
        self.weights_file = str(path)

    def load_payload(self, header: WeightsHeader, payload: np.ndarray, file: str | None = None,
                     stray_bytes: int = 0) -> None:
        """Split a flat float32 payload into every layer's tensors, in cfg order."""
        reader = WeightsReader(payload, file, stray_bytes)
        for layer in self.layers:
            shapes = layer.param_shapes()
            if shapes:
                layer.set_params(**{name: reader.take(int(np.prod(shape)), f"layer {layer.index} "
                                                      f"[{layer.type}] {name}").reshape(shape)
                                    for name, shape in shapes.items()})
        reader.finish()
        self.header = header
        self.check_params(file)

    def check_params(self, file: str | None = None) -> None:
        """Refuse parameters that give non-finite outputs (NaN/inf, negative BN variance, overflowing
        folds), naming the layer and tensor; called after reading and before writing any model file."""
        for layer in self.layers:
            problem = layer.param_problem()
            if problem:
                message, name = problem
                raise DncompressError(message, file or self.file, f"layer {layer.index} [{layer.type}] {name}")

    def init_random(self, seed: int = 0) -> None:
        """Plausible random weights (He-scaled conv, BN near identity) for tests and cost studies."""
        rng = np.random.default_rng(seed)
        for layer in self.layers:
            shapes = layer.param_shapes()
            if not shapes:
                continue
            params = {}
            for name, shape in shapes.items():
                kind = name.rpartition(".")[2]  # recurrent layers' sub-layer tensors: "<part>.weights"
                if kind == "weights":
                    fan_in = int(np.prod(shape[1:]))
                    params[name] = rng.normal(0, np.sqrt(2.0 / fan_in), shape).astype(np.float32)
                elif kind == "rolling_variance":
                    params[name] = rng.uniform(0.5, 2.0, shape).astype(np.float32)
                elif kind == "scales":
                    params[name] = rng.uniform(0.25, 0.75, shape).astype(np.float32)
                else:
                    params[name] = rng.normal(0, 0.1, shape).astype(np.float32)
            layer.set_params(**params)

    def calibrate_batchnorm(self, x: np.ndarray) -> None:
        """Set every BN layer's running mean/variance to the statistics of its conv output on batch x
        (N, C, H, W), so random networks keep unit-scale activations even through deep shortcuts."""
        outputs: dict[int, np.ndarray] = {}
        for layer in self.layers:
            xs = [outputs[i] if i >= 0 else x.astype(np.float32) for i in layer.inputs]
            if getattr(layer, "batch_normalize", False) and getattr(layer, "share", None) is None:
                raw = layer.kernel_output(xs[0])
                layer.set_params(rolling_mean=raw.mean(axis=(0, 2, 3)).astype(np.float32),
                                 rolling_variance=raw.var(axis=(0, 2, 3)).astype(np.float32))
            outputs[layer.index] = layer.forward(xs)

    def weight_tensors(self) -> list[np.ndarray]:
        """Every parameter tensor in .weights order."""
        return [layer.params[name] for layer in self.layers for name in layer.param_shapes()]

    def darknet_files(self, cfg_path: str | Path, weights_path: str | Path) -> dict[str | Path, bytes | list]:
        """{path: bytes} of the cfg and .weights (sections as they are), after check_params."""
        self.check_params(str(weights_path))
        return {cfg_path: write_cfg(self.sections).encode(),
                weights_path: weights_payload(self.header, self.weight_tensors())}

    def save(self, cfg_path: str | Path, weights_path: str | Path) -> None:
        """Write cfg and weights together: both appear, or (interrupted) neither (model_io's darknet-q)."""
        atomic_write_many(self.darknet_files(cfg_path, weights_path))

    def activation_bytes(self, batch: int = 1) -> tuple[int, int]:
        """(total, peak) float32 activation bytes for `batch` images: all layer outputs summed, and the
        most alive at once in `forward` (the input, outputs awaiting a later reader, the running layer's
        output and scratch buffers)."""
        sizes = [math.prod(layer.out_shape) for layer in self.layers]
        live, peak = math.prod(self.input_shape), 0
        for layer, size in zip(self.layers, sizes):
            peak = max(peak, live + size + layer.workspace_elements())
            live += size
            live -= sum(sizes[i] for i in set(layer.inputs) if i >= 0 and self.last_use[i] == layer.index)
        return 4 * batch * sum(sizes), 4 * batch * peak

    def _check_activation_memory(self, limit_mb: float | None) -> None:
        """Refuse networks whose activations at this input size would not fit the bound."""
        limit_mb = max_activation_mb() if limit_mb is None else limit_mb
        total, peak = self.activation_bytes()
        if peak > limit_mb * 2**20:
            raise DncompressError(
                f"needs {peak / 2**20:,.1f} MB of activation memory at {self.info.width}x{self.info.height} "
                f"(peak for one image; all layer outputs {total / 2**20:,.1f} MB), over the {limit_mb:,.0f} MB "
                f"limit; use a smaller input size or raise the limit with --max-activation-mb or "
                f"{MAX_ACTIVATION_ENV}", self.file, self.net_section.where())

    def forward(self, x: np.ndarray, keep: set[int] | None = None,
                run: Callable[[Layer, list[np.ndarray]], np.ndarray] | None = None) -> list[np.ndarray]:
        """x: (N, C, H, W) float32 -> raw output of every [yolo]/[region] layer, in cfg order (for a
        classifier without heads: its last layer).
        With `keep`, returns those layers' outputs instead (in `keep`'s sorted order). `run(layer, xs)`, if
        given, computes each layer's output in place of `layer.forward(xs)` (another kernel, or a probe)."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 4 or x.shape[1:] != self.input_shape:
            raise DncompressError(f"input batch has shape {x.shape}, the network takes (N, "
                                  f"{', '.join(map(str, self.input_shape))})", self.file)
        wanted = set(keep) if keep is not None else set(self.output_indices)
        if run is None and x.shape[0] > 1:
            return self._forward_per_image(x, wanted)
        return self._forward(x, wanted, run)

    def _forward_per_image(self, x: np.ndarray, wanted: set[int]) -> list[np.ndarray]:
        """Inference layers treat images independently, so a batch runs image by image: each image's
        activations stay small enough to be reused from cache and the allocator (a batch-8 forward took
        2x the time of eight batch-1 forwards), and the engine's threads take whole images (one handoff
        per image instead of several per layer). Outputs are stacked back into batches."""
        per_image: list[list[np.ndarray] | None] = [None] * x.shape[0]

        def images(sl: slice) -> None:
            with serial():
                for i in range(sl.start, sl.stop):
                    per_image[i] = self._forward(x[i:i + 1], wanted, None)
        parallel(images, x.shape[0])
        return [np.concatenate(parts) for parts in zip(*per_image)]

    def _forward(self, x: np.ndarray, wanted: set[int],
                 run: Callable[[Layer, list[np.ndarray]], np.ndarray] | None) -> list[np.ndarray]:
        outputs: dict[int, np.ndarray] = {}
        for layer in self.layers:
            xs = [outputs[i] if i >= 0 else x for i in layer.inputs]
            outputs[layer.index] = run(layer, xs) if run else layer.forward(xs)
            for i in layer.inputs:
                if i >= 0 and self.last_use[i] == layer.index and i not in wanted:
                    del outputs[i]
        return [outputs[i] for i in sorted(wanted)]
