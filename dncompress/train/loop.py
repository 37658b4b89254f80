"""The training loop: batches of augmented samples, subdivisions, loss (labels and/or a teacher), SGD,
optional sparsity, and per-epoch checkpoints in Darknet .weights that a later run resumes from."""
from __future__ import annotations

import dataclasses
import io
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..cfg import read_cfg, write_cfg
from ..data import Dataset
from ..detect import load_image, to_channels
from ..errors import DncompressError
from ..fsutil import atomic_write_many
from ..network import Network
from ..weights import weights_payload
from .augment import Augment, augment, place
from .hints import Hint, hint_loss
from .loss import distillation_loss, yolo_loss
from .optim import SGD, Schedule
from .runner import TrainRun
from .sparsity import add_l1_subgradient, gamma_summary


@dataclasses.dataclass
class TrainConfig:
    epochs: int
    batch: int            # images per weight update (Darknet's batch)
    subdivisions: int = 1  # forward/backward passes per update, to bound memory
    sparsity: float = 0.0
    augment: bool = True
    seed: int = 0
    keep_zeros: bool = False  # conv weights that are zero at the start stay zero (weight-pruned models)
    frozen_bn: bool = False   # BN uses its running statistics, which stay fixed (small-batch fine-tunes)


@dataclasses.dataclass
class StepLog:
    epoch: int
    step: int
    steps: int
    loss: dict[str, float]
    images_per_s: float
    rate: float


def load_batch(net: Network, dataset: Dataset, indices: np.ndarray, aug: Augment | None,
               rng: np.random.Generator) -> tuple[np.ndarray, list[np.ndarray]]:
    """(N, 3, H, W) float32 images in net-input geometry and their labels in net-input coordinates."""
    w, h = net.info.width, net.info.height
    images, labels = [], []
    for i in indices:
        sample = dataset.items[i]
        img = load_image(sample.image)
        img, lab = augment(img, sample.labels, w, h, aug, rng) if aug else place(img, sample.labels, w, h)
        images.append(to_channels(img, net.info.channels).transpose(2, 0, 1))
        labels.append(lab)
    return np.stack(images), labels


def batch_loss(net: Network, outs: list[np.ndarray], labels: list[np.ndarray],
               teacher_outs: list[np.ndarray] | None, use_labels: bool):
    """Loss parts and d loss / d head outputs: label loss per head, plus distillation with a teacher."""
    parts = {"box": 0.0, "obj": 0.0, "cls": 0.0}
    grads = [np.zeros_like(o) for o in outs]
    for k, (head, out) in enumerate(zip(net.heads, outs)):
        if use_labels:
            head_parts, g = yolo_loss(head, out, labels)
            grads[k] += g
            for name, value in head_parts.items():
                parts[name] += value
        if teacher_outs is not None:
            head_parts, g = distillation_loss(head, out, teacher_outs[k])
            grads[k] += g
            parts["distill"] = parts.get("distill", 0.0) + sum(head_parts.values())
    return parts, grads


class Checkpoints:
    """<prefix>.cfg/.weights: the model after the latest epoch; <prefix>_last.weights + _last.npz (momentum):
    what --resume continues from. Every file is written atomically."""

    def __init__(self, prefix: str | Path, net_section=None):
        """net_section: written in place of the trained net's [net] (a fine-tune at a smaller --imgsz
        saves the model at its own input size)."""
        self.prefix = str(prefix)
        self.net_section = net_section
        self.files = [f"{self.prefix}.cfg", f"{self.prefix}.weights", f"{self.prefix}_last.weights",
                      f"{self.prefix}_last.npz"]

    def save(self, net: Network, optimizer: SGD) -> None:
        """All four files as one set: a Ctrl-C leaves the previous epoch's set or this one, never a mix."""
        weights = weights_payload(net.header, net.weight_tensors())
        buffers = {f"{i}:{name}": v for (i, name), v in optimizer.velocity.items()}
        sections = [self.net_section or net.net_section] + net.sections[1:]
        atomic_write_many(dict(zip(self.files, [write_cfg(sections).encode(), weights, weights,
                                                _npz_bytes(buffers)])))

    def resume(self, net: Network, optimizer: SGD) -> None:
        last = Path(self.files[2])
        if not last.exists():
            raise DncompressError("nothing to resume: no checkpoint from an earlier run", str(last))
        net.load_weights(last)
        restore_input_ranges(net, Path(self.files[0]))
        state = Path(self.files[3])
        if state.exists():
            with np.load(state) as saved:
                optimizer.velocity = {(int(k.split(":")[0]), k.split(":")[1]): saved[k] for k in saved.files}


def restore_input_ranges(net: Network, cfg_path: Path) -> None:
    """QAT learns the input grids' ranges (train/graph.py), which the checkpoint's cfg holds, not its
    .weights: a resumed run continues from them."""
    if not cfg_path.exists():
        return
    saved = read_cfg(cfg_path)[1:]
    for layer, section in zip(net.layers, saved):
        if getattr(layer, "input_step", None) is not None and section.type == layer.type:
            layer.set_act_range(section.options["act_min"], section.options["act_max"])


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def train(net: Network, dataset: Dataset, config: TrainConfig, checkpoints: Checkpoints | None = None,
          teacher: Network | None = None, resume: bool = False,
          on_step: Callable[[StepLog], None] | None = None,
          on_epoch: Callable[[int, dict], None] | None = None,
          hints: tuple[list[Hint], float] | None = None) -> list[dict]:
    """Train `net` in place for config.epochs epochs (counted from its `seen` images when resuming).
    `hints` = (hint layers, weight), with a teacher: trunk layers also pulled towards its outputs (train.hints)."""
    if hints is not None and teacher is None:
        raise DncompressError("hints need a teacher")
    schedule = Schedule.from_net(net.net_section)
    optimizer = SGD(net, schedule)
    if resume:
        checkpoints.resume(net, optimizer)
    else:
        # a new run counts from zero, like Darknet's `-clear`: imported weights' `seen` (32M for the COCO
        # models) would otherwise put the schedule past every step
        net.header.seen = 0
    run = TrainRun(net, frozen_bn=config.frozen_bn)
    zeros = {layer.index: layer.params["weights"] == 0 for layer in net.layers
             if config.keep_zeros and "weights" in layer.params and not layer.params["weights"].all()}
    aug = Augment.from_network(net) if config.augment else None
    use_labels = teacher is None or dataset.num_boxes > 0
    batch = min(config.batch, len(dataset))  # a set smaller than --batch trains on all of it per update
    steps = len(dataset) // batch
    first_epoch = net.header.seen // (steps * batch)
    history = []
    for epoch in range(first_epoch, config.epochs):
        rng = np.random.default_rng([config.seed, epoch])
        order = rng.permutation(len(dataset))
        totals: dict[str, float] = {}
        for step in range(steps):
            start = time.perf_counter()
            grads, parts, _ = accumulate(run, net, dataset, order[step * batch:(step + 1) * batch],
                                         config.subdivisions, aug, rng, teacher, use_labels, hints)
            check_finite(parts, grads, epoch, step, checkpoints)
            if config.sparsity:
                add_l1_subgradient(net, grads, config.sparsity, batch)
            net.header.seen += batch
            rate = optimizer.step(grads, net.header.seen // batch, batch)
            for index, zero in zeros.items():
                net.layers[index].set_params(weights=np.where(zero, 0, net.layers[index].params["weights"]))
            for name, value in parts.items():
                totals[name] = totals.get(name, 0.0) + value / batch
            if on_step:
                on_step(StepLog(epoch, step, steps, {k: v / batch for k, v in parts.items()},
                                batch / (time.perf_counter() - start), rate))
        record = {"epoch": epoch + 1, "loss": {k: v / steps for k, v in totals.items()}, "gamma": gamma_summary(net)}
        history.append(record)
        if checkpoints:
            checkpoints.save(net, optimizer)
        if on_epoch:
            on_epoch(epoch, record)
    return history


def check_finite(parts: dict[str, float], grads: dict[int, dict[str, np.ndarray]], epoch: int, step: int,
                 checkpoints: Checkpoints | None) -> None:
    """Stop before a non-finite loss or gradient reaches the weights: the model in memory and the last
    checkpoint on disk stay the last good ones."""
    where = f"epoch {epoch + 1} step {step + 1}"
    kept = (f"; the last good checkpoint is {checkpoints.files[1]}" if checkpoints and Path(checkpoints.files[1]).exists()
            else "; nothing was written")
    bad = [name for name, value in parts.items() if not np.isfinite(value)]
    if bad:
        raise DncompressError(f"non-finite loss ({', '.join(bad)}) at {where}: lower --lr{kept}")
    for index, layer_grads in grads.items():
        for name, g in layer_grads.items():
            if not np.isfinite(g.sum(dtype=np.float64)):
                raise DncompressError(f"non-finite gradient of layer {index} {name} at {where}: lower --lr{kept}")


def accumulate(run: TrainRun, net: Network, dataset: Dataset, indices: np.ndarray, subdivisions: int,
               aug: Augment | None, rng: np.random.Generator, teacher: Network | None, use_labels: bool,
               hints: tuple[list[Hint], float] | None = None):
    """Gradients summed over the batch's images, computed in `subdivisions` forward/backward passes:
    (parameter gradients, loss parts, gradients of the run's gates)."""
    total: dict[int, dict[str, np.ndarray]] = {}
    parts: dict[str, float] = {}
    gate_total: dict[int, np.ndarray] = {}
    for chunk in np.array_split(indices, subdivisions):
        if not len(chunk):
            continue
        x, labels = load_batch(net, dataset, chunk, aug, rng)
        if hints is None:
            outs = run.forward(x)
            teacher_outs = teacher.forward(x) if teacher is not None else None
            chunk_parts, head_grads = batch_loss(net, outs, labels, teacher_outs, use_labels)
        else:
            chunk_parts, head_grads = hinted_loss(run, net, teacher, x, labels, use_labels, *hints)
        for index, layer_grads in run.backward(head_grads).items():
            into = total.setdefault(index, {})
            for name, g in layer_grads.items():
                into[name] = into[name] + g if name in into else g
        for index, g in run.gate_grads.items():
            gate_total[index] = gate_total[index] + g if index in gate_total else g
        for name, value in chunk_parts.items():
            parts[name] = parts.get(name, 0.0) + value
    return total, parts, gate_total


def hinted_loss(run: TrainRun, net: Network, teacher: Network, x: np.ndarray, labels: list[np.ndarray],
                use_labels: bool, hints: list[Hint], weight: float):
    """batch_loss plus the hint layers' losses ("hint"); gradients for run.forward's outputs (heads, then
    the hint layers)."""
    heads = [h.index for h in net.heads]
    layers = [h.layer for h in hints]
    outs = run.forward(x, outputs=heads + layers)
    wanted = sorted(set(heads + layers))
    by_index = dict(zip(wanted, teacher.forward(x, keep=set(wanted))))
    parts, grads = batch_loss(net, outs[:len(heads)], labels, [by_index[i] for i in heads], use_labels)
    parts["hint"] = 0.0
    for hint, out in zip(hints, outs[len(heads):]):
        value, grad = hint_loss(hint, out, by_index[hint.layer], weight)
        parts["hint"] += value
        grads.append(grad)
    return parts, grads
