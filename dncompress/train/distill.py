"""Recovery by distillation: fine-tune a pruned (or otherwise compressed) student against the original
network as teacher, on images with or without labels. The recipe's defaults (docs/pruning.md, "Recovery
by distillation") are what was measured to work on a 2-core machine in under an hour."""
from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from ..data import Dataset
from ..errors import DncompressError
from ..network import Network
from .hints import Hint, fit_hints, hint_layers
from .loop import Checkpoints, StepLog, TrainConfig, load_batch, train


@dataclasses.dataclass
class FinetuneConfig:
    epochs: int
    lr: float = 2e-4       # Darknet rate: v = .9 v - g/batch; w += lr v (loss summed per image)
    imgsz: int = 320       # training input; the model keeps its own input size
    batch: int = 8
    frozen_bn: bool = True  # BN on running statistics: batch-8 statistics are noise
    augment: bool = True
    seed: int = 0
    use_labels: bool = True  # the label loss too, when the dataset has boxes
    hints: float = 0.0       # weight of feature imitation per trunk conv (train.hints); 0: heads only


def resized(net: Network, size: int) -> Network:
    """A copy of `net` with a square `size` input (same parameters; a training [net] section)."""
    sections = [s.copy() for s in net.sections]
    sections[0].options["width"] = sections[0].options["height"] = str(size)
    return net.copy(sections)


def set_schedule(net: Network, config: FinetuneConfig, steps: int) -> None:
    """Constant rate after a short burn-in, x0.1 for the last fifth: the cfg's own schedule (burn_in=1000,
    steps at 400k) is for training from ImageNet weights and would keep a short fine-tune at rate ~0."""
    options = net.net_section.options
    options.update(learning_rate=str(config.lr), burn_in=str(max(1, min(50, steps // 10))), power="4",
                   policy="steps", steps=str(max(1, int(0.8 * steps))), scales="0.1", momentum="0.9",
                   decay="0.0005")


def finetune(student: Network, teacher: Network, dataset: Dataset, config: FinetuneConfig,
             prefix: str | None = None, on_step: Callable[[StepLog], None] | None = None,
             on_epoch: Callable[[int, dict], None] | None = None) -> tuple[Network, list[dict]]:
    """Distil `teacher` into `student` on `dataset` -> (the fine-tuned student at its own input size, the
    per-epoch history). Neither input network is changed. With `prefix`, every epoch's model is saved as
    PREFIX.cfg/.weights (+ PREFIX_last.* for resuming), atomically: a Ctrl-C or a non-finite loss leaves
    the last complete epoch."""
    if [h.classes for h in student.heads] != [h.classes for h in teacher.heads]:
        raise DncompressError("the student's heads and the teacher's differ in classes; distillation matches "
                              "them output by output", student.file)
    if len(dataset) == 0:
        raise DncompressError("no images to fine-tune on")
    net = resized(student, config.imgsz)
    teach = resized(teacher, config.imgsz)
    batch = min(config.batch, len(dataset))
    set_schedule(net, config, config.epochs * (len(dataset) // batch))
    checkpoints = Checkpoints(prefix, student.net_section) if prefix else None
    train_config = TrainConfig(config.epochs, batch, 1, augment=config.augment, seed=config.seed,
                               frozen_bn=config.frozen_bn)
    data = dataset if config.use_labels else Dataset([dataclasses.replace(s, labels=s.labels[:0]) for s in dataset])
    hints = (fitted_hints(net, teach, dataset), config.hints) if config.hints > 0 else None
    history = train(net, data, train_config, checkpoints, teach, False, on_step, on_epoch, hints)
    # the student's own [net] (input size), the trained layers' sections (QAT's learned input ranges)
    return net.copy([student.net_section.copy()] + [s.copy() for s in net.sections[1:]]), history


def fitted_hints(student: Network, teacher: Network, dataset: Dataset, images: int = 16) -> list[Hint]:
    """Hints for every trunk conv, their adapters fitted on the first `images` images (letterboxed, no
    augmentation) with the student as it is before training."""
    layers = hint_layers(student, teacher)
    x, _ = load_batch(student, dataset, np.arange(min(images, len(dataset))), None, np.random.default_rng(0))
    outs = [dict(zip(layers, net.forward(x, keep=set(layers)))) for net in (student, teacher)]
    return fit_hints(*outs)


def recover(original: Network, pruned: Network, fit: Dataset, config: FinetuneConfig, prefix: str | None = None,
            measure: Dataset | None = None, measured_on_fit: bool = False,
            on_step: Callable[[StepLog], None] | None = None,
            on_epoch: Callable[[int, dict], None] | None = None) -> tuple[Network, dict]:
    """Fine-tune `pruned` against `original` on `fit` -> (fine-tuned model, report). With `measure`, the
    report's "before" (pruned) and "after" (fine-tuned) hold the fidelity to the original (mAP@0.5 of its
    detections against the original's at conf 0.25) and, when `measure` has labels, mAP@0.5 and
    @0.5:0.95 as [original, candidate] (the shape `eval.compare_models` returns)."""
    tuned, history = finetune(pruned, original, fit, config, prefix, on_step, on_epoch)
    report = {"epochs": config.epochs, "lr": config.lr, "imgsz": config.imgsz, "batch": config.batch,
              "fit_images": len(fit), "labels": bool(config.use_labels and fit.num_boxes), "history": history}
    if measure is not None:
        from ..eval import compare_many
        report["before"], report["after"] = compare_many(original, [pruned, tuned], measure)
        report["measure_images"] = len(measure)
        report["measured_on_fit"] = measured_on_fit
    return tuned, report
