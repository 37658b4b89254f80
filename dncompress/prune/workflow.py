"""The default `prune` workflow: one-shot pruning on calibration images, then the guard — the pruned model's
fidelity to the original on calibration images the fit did not see (and mAP with a labelled --data).
Returns the pruned network and a report dict; the cli layer prints it and decides whether to write."""
from __future__ import annotations

import dataclasses
import time

import numpy as np

from ..data import Dataset, load_dataset
from ..detect import load_image, preprocess
from ..errors import DncompressError
from ..eval import compare_models, evaluate, fidelity_dataset, predict
from ..network import Network
from ..stats import summary
from ..zoo import samples_folder
from .groups import channel_groups
from .oneshot import Progress, _silent, cost_model, prune_oneshot
from .report import pruning_report

# fidelity below this prints the loud warning
FIDELITY_WARNING = 0.5
# calibration images held out from the fit to measure fidelity
HOLDOUT_IMAGES = 32
# the packaged samples (a source checkout): fit on coco12, measure fidelity on the 7 Darknet photos


@dataclasses.dataclass
class CalibrationSplit:
    fit: Dataset
    holdout: Dataset
    source: str          # what the output says about where the images came from
    user_given: bool


def split_calibration(calib: str | None, count: int) -> CalibrationSplit | None:
    """The first `count` images of --calib for the fit, up to HOLDOUT_IMAGES after them for fidelity (the
    fit images when --calib has no more). Without --calib: the packaged samples, or None if absent."""
    if calib:
        images = load_dataset(calib)
        fit = dataclasses.replace(images, items=images.items[:count])
        rest = images.items[count:count + HOLDOUT_IMAGES]
        holdout = dataclasses.replace(images, items=rest) if rest else fit
        where = (f"fit on {len(fit)} --calib images (+ mirrors), fidelity on the {len(rest)} after them" if rest
                 else f"fit on {len(fit)} --calib images (+ mirrors); fidelity on the same images (optimistic: "
                 "--calib has no more)")
        return CalibrationSplit(fit, holdout, where, True)
    if has_samples():
        samples = samples_folder()
        fit, holdout = load_dataset(samples / "coco12"), load_dataset(samples)
        return CalibrationSplit(fit, holdout, f"fit on the {len(fit)} packaged coco12 sample images (+ mirrors), "
                                f"fidelity on the {len(holdout)} Darknet sample photos", False)
    return None


def batch_of(dataset: Dataset, width: int, height: int, channels: int = 3) -> np.ndarray:
    return np.concatenate([preprocess(load_image(s.image), width, height, True, channels) for s in dataset.items])


def check_target(net: Network, kind: str, target: float) -> None:
    """Refuse a target at or above the current cost before any work."""
    groups = channel_groups(net)
    full = cost_model(net, groups, kind).cost(np.array([len(g.positions) for g in groups], float))
    if kind == "bflops":
        full = full * 2 / 1e9
    if target >= full:
        label = {"bflops": "BFLOPs", "params": "conv weights", "channels": "prunable channels"}[kind]
        raise DncompressError(f"the target {target:g} is not below the network's {full:,.6g} {label}: nothing to "
                              "prune", net.file)


def channel_target(net: Network, ratio: float) -> float:
    """--ratio R: keep (1 - R) of the prunable channels."""
    if not 0 < ratio < 1:
        raise DncompressError(f"--ratio {ratio} must be in (0, 1)")
    prunable = sum(len(p) for g in channel_groups(net) if g.prunable for p in g.positions)
    return (1 - ratio) * prunable


def fidelity_reference(net: Network, holdout: Dataset) -> Dataset:
    size = (net.info.width, net.info.height)
    reference = fidelity_dataset(predict(net.forward, net.heads, holdout, *size, progress=False), holdout)
    if not reference.num_boxes:
        raise DncompressError("the original model detects nothing (conf >= 0.25) on the calibration images that "
                              "measure fidelity, so no loss could be seen; give --calib images with objects",
                              holdout.source)
    return reference


def oneshot_prune(net: Network, calib: str | None, calib_images: int, kind: str, target: float,
                  min_keep: float = 0.1, multiple: int = 1, data: str | None = None,
                  progress: Progress = _silent) -> tuple[Network, dict]:
    """Check inputs, prune, measure. Returns (pruned network, report) with the pruning report keys plus
    'method', 'calibration', 'steps', 'sparsity' ('trained', 'small_gamma_share'), 'holdout_fidelity',
    'seconds', and with --data 'fidelity_map50' and (labelled) 'map50'/'map50_95' [before, after]."""
    if not 0 <= min_keep <= 1:
        raise DncompressError(f"--min-keep {min_keep} must be a fraction in [0, 1]")
    check_target(net, kind, target)
    dataset = load_dataset(data) if data else None
    if dataset is not None and not dataset.num_boxes:
        raise DncompressError("--data has no labels, so no mAP can be measured (leave --data out: fidelity on "
                              "held-out calibration images is printed anyway)", dataset.source)
    split = split_calibration(calib, calib_images)
    if split is None:
        raise DncompressError("no calibration images: give --calib DIR (the packaged samples are not installed), "
                              "or choose a data-free --criterion such as bn")
    size = (net.info.width, net.info.height)
    reference = fidelity_reference(net, split.holdout)
    start = time.perf_counter()
    result = prune_oneshot(net, batch_of(split.fit, *size, net.info.channels), target, kind, min_keep, multiple, progress=progress)
    seconds = time.perf_counter() - start
    pruned = result.network
    preds = predict(pruned.forward, pruned.heads, reference, *size, progress=False)
    report = pruning_report(net, pruned)
    report.update(method="one-shot OBS selection + least-squares refit", calibration=split.source,
                  user_calibration=split.user_given, seconds=seconds, calibration_rows=result.calibration_rows,
                  holdout_fidelity=evaluate(preds, reference, net.heads[0].classes).map50,
                  sparsity={"trained": result.sparsity_trained, "small_gamma_share": result.small_gamma_share},
                  steps=[dataclasses.asdict(s) for s in result.steps])
    if dataset is not None:
        report.update(compare_models(net, pruned, dataset, progress=False))
    report["cost_after"] = summary(pruned)
    return pruned, report


def has_samples() -> bool:
    """Whether the packaged sample images are there (default calibration without --calib)."""
    try:
        return any(samples_folder().glob("*.jpg"))
    except DncompressError:
        return False
