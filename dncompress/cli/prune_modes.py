"""The modes of `dncompress prune` beside channel pruning: Pruning-as-Search, energy-aware weight pruning,
per-group sensitivity."""
from __future__ import annotations

import dataclasses
import json

import click
import cv2
import numpy as np

from ..data import calibration_batch, load_dataset
from ..detect import check_heads
from ..errors import DncompressError
from ..eval import compare_models, evaluate, fidelity_dataset, predict
from ..fsutil import atomic_write_many
from ..network import Network
from ..prune.criteria import CRITERIA
from ..prune.energy import energy_aware_prune
from ..prune.report import pruning_report
from ..prune.search import SearchConfig, apply_search, search
from ..prune.sensitivity import plot_sensitivity, sensitivity
from ..stats import summary
from .common import print_comparison, progress_lines
from .prune import print_pruning_report

# images of --data on which `prune --search` re-estimates BN statistics of the pruned network
SEARCH_BN_IMAGES = 16


def run_search(net: Network, dataset, config: SearchConfig, bn_batch: np.ndarray, outputs: list[str]) -> None:
    """Pruning-as-search, then the searched widths applied, BN statistics re-estimated on bn_batch."""
    check_heads(net.heads, net.file)
    dataset.check_classes(net.heads[0].classes)
    if not dataset.num_boxes:
        raise DncompressError("--search trains the indicators with the YOLO loss on labels, and --data has none",
                              dataset.source)
    full = summary(net)["bflops"]
    if config.target_bflops >= full:
        raise DncompressError(f"--target-bflops {config.target_bflops:g} is not below the network's {full:.3f} "
                              "BFLOPs: nothing to prune")
    original = net.copy()
    steps, done = config.epochs * (len(dataset) // min(config.batch, len(dataset))), 0

    def on_step(log):
        nonlocal done
        done += 1
        progress_lines(f"search: epoch {log.epoch + 1} loss {log.loss:.2f} BFLOPs {log.bflops:.3f} | "
                       f"{log.images_per_s:.1f} img/s | step", done, steps)
    indicators = search(net, dataset, config, on_step)
    threshold = indicators.threshold_for(config.target_bflops)
    searched = indicators.bflops()[0]
    if searched > 1.1 * config.target_bflops:
        click.echo(f"warning: the search stopped {searched / config.target_bflops - 1:.0%} above "
                   "--target-bflops; the widths read at a higher threshold rank channels by barely trained "
                   "indicators (more --epochs or a larger --gate-lr let the search get there)", err=True)
    click.echo(f"indicators > 0.5: {searched:.3f} BFLOPs; read at {threshold:.3f} (the lowest "
               f"threshold within --target-bflops): {indicators.bflops(threshold)[0]:.3f} BFLOPs")
    pruned = apply_search(net, indicators, bn_batch, threshold)
    pruned.save(*outputs)
    report = pruning_report(original, pruned)
    report.update(compare_models(original, pruned, dataset, progress=progress_lines))
    print_pruning_report(report)
    click.echo("(mAP and fidelity on the search set --data" + ("" if config.weight_lr == 0 else
               ", which the weights were trained on") + ")")
    click.echo(f"wrote {outputs[0]} and {outputs[1]}")


def run_energy_pruning(net: Network, ratio: float, calib: str | None, calib_images: int, max_drop: float,
                       outputs: list[str], data_path: str | None) -> None:
    """Energy-aware weight pruning; fidelity is measured on calibration images held out from the fit."""
    if not calib:
        raise DncompressError("--criterion energy needs calibration images (--calib DIR)")
    if not 0 < ratio < 1:
        raise DncompressError(f"--ratio {ratio:g} must be between 0 and 1 for --criterion energy")
    size = (net.info.width, net.info.height)
    images = load_dataset(calib)
    fit_count = min(calib_images, len(images))
    # fidelity on images the least-squares fit did not see: on its own images it is optimistic
    held_out = images.items[fit_count:fit_count + calib_images]
    dataset = dataclasses.replace(images, items=held_out or images.items[:fit_count])
    click.echo(f"least-squares fit on {fit_count} --calib images; fidelity on "
               + (f"the {len(held_out)} after them" if held_out else "the same images (--calib has no more)"))
    reference = fidelity_dataset(predict(net.forward, net.heads, dataset, *size, progress=False), dataset)
    if not reference.num_boxes:
        raise DncompressError("the original model detects nothing (conf >= 0.25) on the images that measure "
                              "fidelity, so no drop can be seen; give --calib images with objects", calib)

    def fidelity(candidate: Network) -> float:
        preds = predict(candidate.forward, candidate.heads, dataset, *size, progress=False)
        return evaluate(preds, reference, net.heads[0].classes).map50
    batch = calibration_batch(calib, calib_images, *size, channels=net.info.channels)
    pruned, steps = energy_aware_prune(net, batch, ratio, fidelity, max_drop, progress=progress_lines)
    pruned.save(*outputs)
    click.echo(f"{'layer':>5} {'energy':>7} {'density':>8} {'output error':>22} {'fidelity':>9}")
    for step in steps:
        verdict = "" if step.accepted else "  over --max-drop: restored, stop"
        click.echo(f"{step.index:>5} {step.energy / 1e9:7.3f} {step.density:8.1%} {step.error_magnitude:10.4f} -> "
                   f"{step.error:<8.4f} {step.fidelity:9.4f}{verdict}")
    click.echo("(energy: G MAC-units before pruning; output error: relative, magnitude pruning -> after "
               "restore + least-squares refit)")
    before, after = summary(net, skip_zeros=True), summary(pruned, skip_zeros=True)
    for key, label, fmt in (("params", "nonzero params", ","), ("bflops", "BFLOPs (zero-skipping)", ".3f"),
                            ("energy", "energy (zero-skipping, model)", ".4g")):
        a, b = before[key], after[key]
        click.echo(f"{label} {a:{fmt}} -> {b:{fmt}} ({1 - b / a:.1%} less)")
    if data_path:
        print_comparison(compare_models(net, pruned, load_dataset(data_path), progress=progress_lines))
    click.echo(f"wrote {outputs[0]} and {outputs[1]}")


def run_sensitivity(net: Network, criterion: str, ratios: list[float], dataset, prefix: str, calib) -> None:
    """Prune each group alone at each ratio; accuracy is mAP@0.5 with labels, else fidelity."""
    size = (net.info.width, net.info.height)
    classes = net.heads[0].classes
    if not dataset.num_boxes:
        dataset = fidelity_dataset(predict(net.forward, net.heads, dataset, *size), dataset)

    def measure(candidate: Network) -> float:
        preds = predict(candidate.forward, candidate.heads, dataset, *size, progress=False)
        return evaluate(preds, dataset, classes).map50
    baseline = measure(net)
    table = sensitivity(net, CRITERIA[criterion](net, calib=calib), ratios, measure, progress=progress_lines)
    click.echo(f"mAP@0.5 with one group pruned (baseline {baseline:.4f})")
    click.echo(f"{'group':>8} " + " ".join(f"{r:>7g}" for r in ratios))
    for conv, row in sorted(table.items()):
        click.echo(f"layer {conv:>2} " + " ".join(f"{v:7.4f}" for v in row))
    ok, png = cv2.imencode(".png", plot_sensitivity(table, ratios, baseline))
    atomic_write_many({f"{prefix}.png": png.tobytes(),
                       f"{prefix}.json": json.dumps({"baseline": baseline, "ratios": ratios,
                                                     "map50": {str(k): v for k, v in table.items()}}).encode()})
    click.echo(f"wrote {prefix}.png and {prefix}.json")
