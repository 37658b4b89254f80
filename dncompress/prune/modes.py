"""The workflows of `prune`'s modes beside one-shot pruning (prune/workflow.py), each one library call
returning a report the command layer prints: per-channel scores with slicing (`score_prune`), energy-aware
weight pruning (`energy_prune_run`: fit / held-out split, fidelity), Pruning-as-Search (`search_run`: the
indicators' read-out) and per-group sensitivity (`sensitivity_run`: the table and its files)."""
from __future__ import annotations

import dataclasses
import json

import numpy as np

from ..data import calibration_batch, load_dataset
from ..detect import check_heads
from ..errors import DncompressError
from ..eval import compare_models, fidelity_dataset, model_map50, predict
from ..network import Network
from ..progress import Progress, silent
from ..stats import summary
from .apply import prune_network
from .criteria import CRITERIA
from .energy import EnergyStep, energy_aware_prune
from .groups import channel_groups
from .plan import plan_pruning
from .reconstruct import reconstruct
from .report import pruning_report
from .search import SearchConfig, apply_search, search
from .sensitivity import plot_sensitivity, sensitivity

# images of the search set on which the searched network's BN statistics are re-estimated
SEARCH_BN_IMAGES = 16


def network_batch(net: Network, path: str, count: int) -> np.ndarray:
    """The first `count` images of `path` at the network's input size and channels."""
    return calibration_batch(path, count, net.info.width, net.info.height, channels=net.info.channels)


def score_prune(net: Network, criterion: str, ratio: float, scope: str = "global", min_keep: float = 0.1,
                multiple: int = 1, compensate: bool = True, calib: np.ndarray | None = None,
                refit: bool = False, progress: Progress = silent) -> tuple[Network, dict]:
    """Channels ranked by a per-channel score (CRITERIA), sliced out with act(beta) compensation, the
    consumers optionally refit on `calib` images; returns (pruned, pruning_report)."""
    keep = plan_pruning(channel_groups(net), CRITERIA[criterion](net, calib=calib), ratio, scope, min_keep, multiple)
    pruned = prune_network(net, keep, compensate)
    if refit:
        reconstruct(net, pruned, keep, calib, progress=progress)
    return pruned, pruning_report(net, pruned)


@dataclasses.dataclass
class EnergyRun:
    pruned: Network
    steps: list[EnergyStep]
    fit_images: int
    holdout_images: int      # 0: fidelity measured on the fit images (--calib had no more)
    before: dict             # stats.summary(skip_zeros=True) of the original and of the pruned network
    after: dict
    comparison: dict         # compare_models on `data`, or {}


def energy_prune_run(net: Network, ratio: float, calib: str, calib_images: int, max_drop: float,
                     data: str | None = None, progress: Progress = silent) -> EnergyRun:
    """Energy-aware weight pruning fit on the first `calib_images` of `calib`; fidelity to the original is
    measured on the next `calib_images` (the fit ones when there are no more: optimistic)."""
    if not 0 < ratio < 1:
        raise DncompressError(f"--ratio {ratio:g} must be between 0 and 1 for energy pruning")
    measure_set = load_dataset(data) if data else None
    images = load_dataset(calib)
    fit_count = min(calib_images, len(images))
    held_out = images.items[fit_count:fit_count + calib_images]
    dataset = dataclasses.replace(images, items=held_out or images.items[:fit_count])
    progress(f"least-squares fit on {fit_count} --calib images; fidelity on "
             + (f"the {len(held_out)} after them" if held_out else "the same images (--calib has no more)"))
    reference = fidelity_dataset(predict(net.forward, net.heads, dataset, net.info.width, net.info.height,
                                         progress=False), dataset)
    if not reference.num_boxes:
        raise DncompressError("the original model detects nothing (conf >= 0.25) on the images that measure "
                              "fidelity, so no drop can be seen; give --calib images with objects", calib)
    pruned, steps = energy_aware_prune(net, network_batch(net, calib, calib_images), ratio,
                                       lambda candidate: model_map50(candidate, reference, net.heads[0].classes),
                                       max_drop, progress=progress)
    comparison = compare_models(net, pruned, measure_set, progress=progress) if measure_set else {}
    return EnergyRun(pruned, steps, fit_count, len(held_out), summary(net, skip_zeros=True),
                     summary(pruned, skip_zeros=True), comparison)


@dataclasses.dataclass
class SearchRun:
    pruned: Network
    searched_bflops: float   # of the network the indicators > 0.5 keep
    threshold: float         # where they were read: the lowest threshold within the target
    read_bflops: float
    report: dict             # pruning_report + compare_models on the search set


def search_run(net: Network, data: str, config: SearchConfig, progress: Progress = silent) -> SearchRun:
    """Pruning-as-Search on the labelled `data`; the widths read off the indicators, BN statistics
    re-estimated on SEARCH_BN_IMAGES of `data`. `net` is unchanged."""
    check_heads(net.heads, net.file)
    dataset = load_dataset(data)
    dataset.check_classes(net.heads[0].classes)
    if not dataset.num_boxes:
        raise DncompressError("--search trains the indicators with the YOLO loss on labels, and --data has none",
                              dataset.source)
    full = summary(net)["bflops"]
    if config.target_bflops >= full:
        raise DncompressError(f"--target-bflops {config.target_bflops:g} is not below the network's {full:.3f} "
                              "BFLOPs: nothing to prune")
    trained = net.copy()
    steps, done = config.epochs * (len(dataset) // min(config.batch, len(dataset))), 0

    def on_step(log):
        nonlocal done
        done += 1
        progress(f"search: epoch {log.epoch + 1} loss {log.loss:.2f} BFLOPs {log.bflops:.3f} | "
                 f"{log.images_per_s:.1f} img/s | step", done, steps)
    indicators = search(trained, dataset, config, on_step)
    threshold = indicators.threshold_for(config.target_bflops)
    pruned = apply_search(trained, indicators, network_batch(net, data, SEARCH_BN_IMAGES), threshold)
    report = pruning_report(net, pruned) | compare_models(net, pruned, dataset, progress=progress)
    return SearchRun(pruned, indicators.bflops()[0], threshold, indicators.bflops(threshold)[0], report)


@dataclasses.dataclass
class SensitivityRun:
    ratios: list[float]
    baseline: float                      # mAP@0.5 of the unpruned network
    table: dict[int, list[float]]        # first conv of each prunable group -> mAP@0.5 at each ratio

    def files(self, prefix: str) -> dict[str, bytes]:
        """PREFIX.png (the plot) and PREFIX.json (the table)."""
        import cv2
        ok, png = cv2.imencode(".png", plot_sensitivity(self.table, self.ratios, self.baseline))
        table = {"baseline": self.baseline, "ratios": self.ratios,
                 "map50": {str(k): v for k, v in self.table.items()}}
        return {f"{prefix}.png": png.tobytes(), f"{prefix}.json": json.dumps(table).encode()}


def sensitivity_run(net: Network, criterion: str, ratios: list[float], data: str, calib: str | None = None,
                    calib_images: int = 16, progress: Progress = silent) -> SensitivityRun:
    """Each prunable group pruned alone at each ratio (channels ranked by `criterion`); accuracy is mAP@0.5
    on `data`'s labels, else fidelity to the original's detections."""
    dataset = load_dataset(data)
    if not dataset.num_boxes:
        dataset = fidelity_dataset(predict(net.forward, net.heads, dataset, net.info.width, net.info.height,
                                           progress=progress), dataset)
    classes = net.heads[0].classes
    scores = CRITERIA[criterion](net, calib=network_batch(net, calib, calib_images) if calib else None)
    table = sensitivity(net, scores, ratios, lambda candidate: model_map50(candidate, dataset, classes),
                        progress=progress)
    return SensitivityRun(ratios, model_map50(net, dataset, classes), table)
