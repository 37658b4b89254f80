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
from ..eval import compare_models, fidelity_dataset, model_map50, predict
from ..network import Network
from ..stats import summary
from ..zoo import samples_folder
from .groups import channel_groups
from .oneshot import Progress, _silent, cost_model, prune_oneshot
from .report import pruning_report

# fidelity below this prints the loud warning
FIDELITY_WARNING = 0.5
# below this the model is refused unless --min-fidelity says otherwise (0 forces the write)
FIDELITY_FLOOR = 0.1
# --imgsz auto: the largest input size at which the unpruned model meets the target, and this many larger ones
RESIZE_AUTO_LARGER = 2
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


def resized(net: Network, width: int, height: int) -> Network:
    """A copy of `net` at another input size ([net] width/height; the weights do not depend on it)."""
    sections = [s.copy() for s in net.sections]
    sections[0].options["width"], sections[0].options["height"] = str(width), str(height)
    return net.copy(sections)


def size_at_width(net: Network, width: int) -> tuple[int, int]:
    """(width, height) with the height keeping the network's aspect, a multiple of 32."""
    return width, max(32, round(net.info.height * width / net.info.width / 32) * 32)


def smaller_sizes(net: Network) -> list[tuple[int, int]]:
    """Input sizes below the network's, width in steps of 32."""
    return [size_at_width(net, w) for w in range((net.info.width - 1) // 32 * 32, 31, -32)]


def bflops_at(net: Network, width: int, height: int) -> float:
    return summary(resized(net, width, height))["bflops"]


def resize_baseline(net: Network, bflops: float) -> tuple[int, int] | None:
    """The largest smaller input size at which the unpruned `net` costs <= bflops (None if none)."""
    for w, h in smaller_sizes(net):
        if bflops_at(net, w, h) <= bflops:
            return w, h
    return None


def resize_candidates(net: Network, resize: str, kind: str, target: float) -> list[tuple[int, int]]:
    """--imgsz auto: the largest size where the unpruned model alone meets --target-bflops and the
    RESIZE_AUTO_LARGER sizes above it (these are pruned for the rest of the cost); or a comma list of widths."""
    if kind != "bflops":
        raise DncompressError("--imgsz needs --target-bflops (the input size changes BFLOPs, not channels or "
                              "parameters)")
    w0, h0 = net.info.width, net.info.height
    if resize == "auto":
        sizes = [(w0, h0)] + smaller_sizes(net)
        fits = next((i for i, (w, h) in enumerate(sizes) if bflops_at(net, w, h) <= target), len(sizes) - 1)
        return sizes[max(0, fits - RESIZE_AUTO_LARGER):fits + 1][::-1]
    try:
        widths = sorted({int(v) for v in resize.split(",") if v.strip()})
    except ValueError:
        raise DncompressError(f"--imgsz '{resize}' must be 'auto' or widths like 320,352,384") from None
    if not widths or any(w % 32 or not 32 <= w <= w0 for w in widths):
        raise DncompressError(f"--imgsz '{resize}': widths must be multiples of 32 between 32 and the network's "
                              f"{w0}")
    return [size_at_width(net, w) for w in widths]


def holdout_fidelity(model: Network, reference: Dataset, classes: int) -> float:
    """mAP@0.5 of `model` (at its own input size) against the original's detections on held-out images."""
    return model_map50(model, reference, classes, progress=False)


def oneshot_prune(net: Network, calib: str | None, calib_images: int, kind: str, target: float,
                  min_keep: float = 0.1, multiple: int = 1, data: str | Dataset | None = None, resize: str | None = None,
                  allocation: str = "heads", progress: Progress = _silent) -> tuple[Network, dict]:
    """Check inputs, prune, measure. Returns (pruned network, report) with the pruning report keys plus
    'method', 'calibration', 'steps', 'sparsity' ('trained', 'small_gamma_share'), 'holdout_fidelity',
    'seconds', 'resize_baseline' (the unpruned model at the largest smaller input size costing no more:
    size, bflops, fidelity; or None), with --imgsz 'candidates' (size, bflops, fidelity, seconds, chosen), and
    with --data 'fidelity_map50' and (labelled) 'map50'/'map50_95' [before, after]."""
    if not 0 <= min_keep <= 1:
        raise DncompressError(f"--min-keep {min_keep} must be a fraction in [0, 1]")
    check_target(net, kind, target)
    sizes = resize_candidates(net, resize, kind, target) if resize else [(net.info.width, net.info.height)]
    # a path, or a Dataset already mapped to the model's classes (prune --classes)
    dataset = data if isinstance(data, Dataset) or data is None else load_dataset(data)
    if dataset is not None and not dataset.num_boxes:
        raise DncompressError("--data has no labels, so no mAP can be measured (leave --data out: fidelity on "
                              "held-out calibration images is printed anyway)", dataset.source)
    split = split_calibration(calib, calib_images)
    if split is None:
        raise DncompressError("no calibration images: give --calib DIR (the packaged samples are not installed), "
                              "or choose a data-free --criterion such as bn")
    reference = fidelity_reference(net, split.holdout)
    classes = net.heads[0].classes
    candidates = []
    for w, h in sizes:
        start = time.perf_counter()
        model = resized(net, w, h) if (w, h) != (net.info.width, net.info.height) else net
        if resize and summary(model)["bflops"] <= target:
            result = None         # the smaller input alone meets the target
        else:
            progress(f"pruning at input {w}x{h}")
            result = prune_oneshot(model, batch_of(split.fit, w, h, net.info.channels), target, kind, min_keep,
                                   multiple, allocation=allocation, progress=progress)
            model = result.network
        candidates.append({"size": [w, h], "bflops": summary(model)["bflops"], "pruned": result is not None,
                           "fidelity": holdout_fidelity(model, reference, classes),
                           "seconds": time.perf_counter() - start, "network": model, "result": result})
    best = max(candidates, key=lambda c: c["fidelity"])
    pruned, result = best["network"], best["result"]
    report = pruning_report(net, pruned)
    report.update(method="one-shot OBS selection + least-squares refit" if result else
                  "the input size alone (the chosen candidate removes no channel)", calibration=split.source,
                  user_calibration=split.user_given, seconds=sum(c["seconds"] for c in candidates),
                  calibration_rows=result.calibration_rows if result else 0, holdout_fidelity=best["fidelity"],
                  input_size=best["size"], resize_baseline=None, allocation=allocation,
                  sparsity={"trained": result.sparsity_trained, "small_gamma_share": result.small_gamma_share}
                  if result else None, steps=[dataclasses.asdict(s) for s in result.steps] if result else [])
    if resize:
        report["candidates"] = [{k: c[k] for k in ("size", "bflops", "pruned", "fidelity", "seconds")}
                                | {"chosen": c is best} for c in candidates]
    else:
        report["resize_baseline"] = baseline_report(net, report["bflops"][1], reference)
    if dataset is not None:
        report.update(compare_models(net, pruned, dataset, progress=False))
    report["cost_after"] = summary(pruned)
    return pruned, report


def baseline_report(net: Network, bflops: float, reference: Dataset) -> dict | None:
    """The unpruned model at the largest smaller input size costing <= bflops, and its held-out fidelity."""
    size = resize_baseline(net, bflops)
    if size is None:
        return None
    small = resized(net, *size)
    return {"size": list(size), "bflops": summary(small)["bflops"],
            "fidelity": holdout_fidelity(small, reference, net.heads[0].classes)}


def has_samples() -> bool:
    """Whether the packaged sample images are there (default calibration without --calib)."""
    try:
        return any(samples_folder().glob("*.jpg"))
    except DncompressError:
        return False
