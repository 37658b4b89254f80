"""What `prune` prints: the before/after table of a pruned model, one-shot's report (calibration, input-size
candidates, per-group steps, the held-out fidelity)."""
from __future__ import annotations

import click

from .common import print_comparison


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


def print_oneshot_report(report: dict) -> None:
    rows = f"{report['calibration_rows']:,} sampled rows; " if report["calibration_rows"] else ""
    click.echo(f"method: {report['method']}; {report['calibration']} ({rows}{report['seconds']:.0f} s)")
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
    weighted = report.get("allocation") == "heads"
    click.echo("(errors: relative output error of the group's consumers" + (" (predicted: each weighted by what an "
               "error there costs at the heads, --allocation heads)" if weighted else "") + "; predicted on the "
               "original network, refit: 2-fold held-out on the calibration images)")
