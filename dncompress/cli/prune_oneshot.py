"""`prune channels`, once its options are read: one-shot pruning with the guard (`run_oneshot`) or a
per-channel score (`run_scored`), their outputs (checked first, written together) and their reports."""
from __future__ import annotations

import click

from ..errors import DncompressError
from .common import echo_err, progress_lines
from .prune_report import print_oneshot_report, print_pruning_report


def run_oneshot(net, weights, stem: str, ratio, target_bflops, target_params, calib, calib_images: int,
                min_keep: float, multiple: int, data_path, min_fidelity, prefix, force, class_names=None,
                finetune=None, resize=None, allocation: str = "heads") -> None:
    """The default method: one-shot pruning with reconstruction, the guard, then (if it passes) the write;
    with `finetune` = (epochs, lr, imgsz, batch, hints) the pruned model is fine-tuned against `net` first (the
    guard then judges the fine-tuned model, which prune_recover reports)."""
    from ..prune.workflow import FIDELITY_FLOOR, FIDELITY_WARNING, channel_target, oneshot_prune
    from .prune_recover import cli_dataset
    targets = [t for t in (ratio, target_bflops, target_params) if t is not None]
    if len(targets) != 1:
        raise DncompressError("give one of --ratio, --target-bflops, --target-params (e.g. --ratio 0.5)")
    if ratio is not None:
        kind, target, label = "channels", channel_target(net, ratio), f"{ratio:g}"
    elif target_bflops is not None:
        kind, target, label = "bflops", target_bflops, f"{target_bflops:g}bflops"
    else:
        kind, target, label = "params", target_params, f"{target_params:g}params"
    outputs = checked_outputs(prefix or f"{stem}-pruned{label}", class_names, finetune, [net.file, weights],
                              calib, data_path, force)
    # a specialized model's --data: labels renumbered to its classes by name
    data = cli_dataset(data_path, class_names) if class_names and data_path else data_path
    pruned, report = oneshot_prune(net, calib, calib_images, kind, target, min_keep, multiple, data, resize,
                                   allocation, progress=echo_err)
    print_oneshot_report(report)
    fidelity = report["holdout_fidelity"]
    baseline = report.get("resize_baseline")
    if baseline and baseline["fidelity"] > fidelity:
        w, h = baseline["size"]
        click.echo(f"note: the unpruned model simply run at {w}x{h} costs {baseline['bflops']:.3f} BFLOPs (this model: "
                   f"{report['bflops'][1]:.3f}) and keeps fidelity {baseline['fidelity']:.4f} on the same held-out "
                   f"images (this model: {fidelity:.4f}). Try --imgsz auto (with --target-bflops), or run the "
                   f"original at {w}x{h} (eval/detect --imgsz {w} {h}).", err=True)
    floor = FIDELITY_FLOOR if min_fidelity is None else min_fidelity
    if fidelity < FIDELITY_WARNING:
        click.echo(f"WARNING: fidelity {fidelity:.3f} < {FIDELITY_WARNING}: this model loses most of what the "
                   "original detects. Remedies: " + ("" if report["user_calibration"] else "--calib with ~64+ "
                   "images like yours, ") + "a smaller --ratio / larger --target-bflops, or fine-tune it "
                   "(prune --finetune / train --teacher).", err=True)
    if not finetune and fidelity < floor:
        which = (f"--min-fidelity {min_fidelity:g}" if min_fidelity is not None else
                 f"the floor {FIDELITY_FLOOR:g} (--min-fidelity 0 writes it anyway)")
        raise DncompressError(f"fidelity {fidelity:.4f} is below {which}; nothing written. Remedies: a smaller "
                              "--ratio / larger --target-bflops, --imgsz auto, more --calib images, --finetune")
    write_pruned(net, pruned, outputs, class_names, finetune, calib, data_path)
    if finetune:
        click.echo("note: with --finetune the fidelity floor (--min-fidelity) is not applied: fine-tuning is the "
                   "remedy; the fine-tuned model's figures are above", err=True)


def run_scored(net, weights, prefix: str, criterion: str, ratio: float, scope: str, min_keep: float, multiple: int,
               compensate: bool, refit: bool, calib, calib_images: int, data_path, class_names, finetune,
               force: bool) -> None:
    """Channels ranked by a per-channel score, sliced with compensation (refit on --calib with `refit`)."""
    from ..eval import compare_models
    from ..prune.modes import network_batch, score_prune
    from .prune_recover import cli_dataset
    outputs = checked_outputs(prefix, class_names, finetune, [net.file, weights], calib, data_path, force)
    images = network_batch(net, calib, calib_images) if calib else None
    pruned, report = score_prune(net, criterion, ratio, scope, min_keep, multiple, compensate, images, refit,
                                 progress=progress_lines)
    if data_path and not finetune:
        report.update(compare_models(net, pruned, cli_dataset(data_path, class_names), progress=progress_lines))
    print_pruning_report(report)
    write_pruned(net, pruned, outputs, class_names, finetune, calib, data_path)


def checked_outputs(prefix: str, class_names, finetune, inputs: list, calib, data_path, force: bool) -> list[str]:
    """[PREFIX.cfg, PREFIX.weights], after checking every file the run will write (never over an input;
    existing ones only with --force) and that --finetune has images."""
    from ..fsutil import check_outputs
    outputs = [f"{prefix}.cfg", f"{prefix}.weights"]
    extra = ([f"{prefix}.names"] if class_names else []) + ([f"{prefix}_last.weights", f"{prefix}_last.npz"]
                                                            if finetune else [])
    check_outputs(outputs + extra, inputs + [calib, data_path], force)
    if finetune and not (calib or data_path):
        raise DncompressError("--finetune needs images: --calib (fine-tune on them) or --data")
    return outputs


def write_pruned(net, pruned, outputs: list[str], class_names, finetune, calib, data_path) -> None:
    """PREFIX.cfg/.weights (+ .names) together; with `finetune` = (epochs, lr, imgsz, batch, hints) the names first,
    then the fine-tuned epochs (each a usable model)."""
    from ..fsutil import atomic_write_many
    from .prune_recover import finetune_for_cli, names_bytes
    prefix = outputs[0][:-len(".cfg")]
    names = {f"{prefix}.names": names_bytes(class_names)} if class_names else {}
    if finetune:
        atomic_write_many(names)
        epochs, lr, imgsz, batch, hints = finetune
        finetune_for_cli(net, pruned, calib, data_path, class_names, epochs, lr, imgsz, batch, prefix, hints)
    else:
        atomic_write_many(pruned.darknet_files(*outputs) | names)
    click.echo(f"wrote {outputs[0]} and {outputs[1]}" + (f" and {prefix}.names" if class_names else ""))
