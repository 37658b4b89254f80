"""`prune`'s default method (one-shot pruning with reconstruction): the guard, the outputs, the report."""
from __future__ import annotations

import click

from ..errors import DncompressError
from .common import echo_err, print_comparison


def print_pruning_report(report: dict) -> None:
    click.echo(f"{'layer':>5} {'filters':>13} {'params':>21} {'BFLOPs':>15}")
    for row in report["layers"]:
        f, p, b = row["filters"], row["params"], row["bflops"]
        click.echo(f"{row['index']:>5} {f[0]:>5} -> {f[1]:<5} {p[0]:>9,} -> {p[1]:<9,} {b[0]:6.3f} -> {b[1]:<6.3f}")

    def change(key: str, fmt: str) -> str:
        a, b = report[key]
        return f"{a:{fmt}} -> {b:{fmt}} ({1 - b / a:.1%} less)"
    click.echo(f"prunable channels {change('prunable_channels', ',')}; all conv channels {change('channels', ',')}")
    click.echo(f"params {change('params', ',')}")
    click.echo(f"BFLOPs {change('bflops', '.3f')}; size MB {change('size_mb', '.2f')}; energy {change('energy', '.3g')}")
    print_comparison(report)


def run_oneshot(net, weights, stem: str, ratio, target_bflops, target_params, calib, calib_images: int,
                min_keep: float, multiple: int, data_path, min_fidelity, prefix, force, class_names=None,
                finetune=None, resize=None) -> None:
    """The default method: one-shot pruning with reconstruction, the guard, then (if it passes) the write;
    with `finetune` = (epochs, lr, imgsz, batch) the pruned model is fine-tuned against `net` first (the
    guard then judges the fine-tuned model, which prune_recover reports)."""
    from ..fsutil import atomic_write_many, check_outputs
    from .prune_recover import cli_dataset, finetune_for_cli, names_bytes
    from ..prune.workflow import FIDELITY_FLOOR, FIDELITY_WARNING, channel_target, oneshot_prune
    targets = [t for t in (ratio, target_bflops, target_params) if t is not None]
    if len(targets) != 1:
        raise DncompressError("give one of --ratio, --target-bflops, --target-params (e.g. --ratio 0.5)")
    if ratio is not None:
        kind, target, label = "channels", channel_target(net, ratio), f"{ratio:g}"
    elif target_bflops is not None:
        kind, target, label = "bflops", target_bflops, f"{target_bflops:g}bflops"
    else:
        kind, target, label = "params", target_params, f"{target_params:g}params"
    prefix = prefix or f"{stem}-pruned{label}"
    outputs = [f"{prefix}.cfg", f"{prefix}.weights"]
    extra = ([f"{prefix}.names"] if class_names else []) + ([f"{prefix}_last.weights", f"{prefix}_last.npz"]
                                                            if finetune else [])
    check_outputs(outputs + extra, [net.file, weights, calib, data_path], force)
    if finetune and not (calib or data_path):
        raise DncompressError("--finetune needs images: --calib (fine-tune on them) or --data")
    if resize and kind != "bflops":
        raise DncompressError("--imgsz needs --target-bflops (the input size changes BFLOPs, not channels or "
                              "parameters)")
    # a specialized model's --data: labels renumbered to its classes by name
    data = cli_dataset(data_path, class_names) if class_names and data_path else data_path
    pruned, report = oneshot_prune(net, calib, calib_images, kind, target, min_keep, multiple, data, resize,
                                   progress=echo_err)
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
    names = {f"{prefix}.names": names_bytes(class_names)} if class_names else {}
    if finetune:
        atomic_write_many(names)    # the epochs' checkpoints are usable models, with their names
        epochs, lr, imgsz, batch = finetune
        pruned = finetune_for_cli(net, pruned, calib, data_path, class_names, epochs, lr, imgsz, batch, prefix)
        click.echo("note: with --finetune the fidelity floor (--min-fidelity) is not applied: fine-tuning is the "
                   "remedy; the fine-tuned model's figures are above", err=True)
    else:
        atomic_write_many(pruned.darknet_files(*outputs) | names)   # all appear together or none
    click.echo(f"wrote {outputs[0]} and {outputs[1]}" + (f" and {prefix}.names" if class_names else ""))


def print_oneshot_report(report: dict) -> None:
    click.echo(f"method: {report['method']}; {report['calibration']} "
               f"({report['calibration_rows']:,} sampled rows; {report['seconds']:.0f} s)")
    if not report["user_calibration"]:
        click.echo("note: calibration on the packaged samples; --calib with images like yours would do better")
    if "candidates" in report:
        click.echo("input size candidates (fidelity to the original at its own input size, held-out images):")
        for c in report["candidates"]:
            how = "channels pruned for the rest" if c["pruned"] else "unpruned, smaller input only"
            click.echo(f"  {c['size'][0]}x{c['size'][1]}: BFLOPs {c['bflops']:.3f}, fidelity {c['fidelity']:.4f} "
                       f"({how}; {c['seconds']:.0f} s)" + ("  <- chosen" if c["chosen"] else ""))
    if report["sparsity"] is not None:
        print_group_steps(report)
    print_pruning_report(report)
    w, h = report["input_size"]
    click.echo(f"fidelity to the original on held-out calibration images (mAP@0.5 of its detections at conf "
               f"0.25; this model at {w}x{h}): {report['holdout_fidelity']:.4f}")


def print_group_steps(report: dict) -> None:
    sparsity = report["sparsity"]
    click.echo(f"BN gamma histogram: {sparsity['small_gamma_share']:.1%} of prunable channels below 1% of their "
               "layer's largest: " + ("sparsity-trained (network slimming); near-zero channels go first"
                                      if sparsity["trained"] else "not sparsity-trained; widths allocated by "
                                      "measured reconstruction error, not by gamma"))
    click.echo(f"{'group':>10} {'channels':>13} {'predicted err':>13} {'refit err':>10} ridge")
    for step in report["steps"]:
        ridges = ",".join(f"{r:g}" for r in step["ridges"].values())
        click.echo(f"{'conv ' + ','.join(map(str, step['convs'])):>10} {step['positions']:>5} -> {step['kept']:<5} "
                   f"{step['predicted_error']:13.4f} {step['refit_error']:10.4f} {ridges}")
    click.echo("(errors: relative output error of the group's consumers; predicted on the original network, "
               "refit: 2-fold held-out on the calibration images)")
