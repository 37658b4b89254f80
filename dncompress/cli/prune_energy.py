"""`dncompress prune energy`: energy-aware weight pruning (zeros in the weights; the cfg is unchanged)."""
from __future__ import annotations

from pathlib import Path

import click

from .common import open_network, print_comparison, progress_lines
from .options import UNIT, Number, data_option, force_option, model_arguments, prefix_option


@click.command("energy", short_help="Zero weights, most energy-hungry convs first; the cfg is unchanged.")
@model_arguments
@click.option("--ratio", required=True, type=Number(0, 1, low_open=True, high_open=True),
              help="Fraction of each visited conv's weights set to zero.")
@click.option("--calib", required=True, type=click.Path(), help="Calibration images (folder or dataset): the "
              "least-squares fit, then fidelity on the images after them.")
@click.option("--calib-images", default=16, show_default=True, type=click.IntRange(1),
              help="Images the fit uses; fidelity is measured on as many after them (the same ones if --calib "
              "has no more).")
@click.option("--max-drop", default=0.05, show_default=True, type=UNIT, help="Stop when fidelity to the original "
              "(mAP@0.5 of its detections on the held-out --calib images) falls below 1 - MAX_DROP.")
@data_option()
@prefix_option("<stem>-pruned<RATIO>; writes PREFIX.cfg and PREFIX.weights")
@force_option
def energy_command(cfg, weights, ratio, calib, calib_images, max_drop, data_path, prefix, force):
    """Energy-aware weight pruning: zero RATIO of the weights of the most energy-hungry convs first
    (Yang et al. 2017), restore and refit by least squares on --calib, stop past --max-drop; the cfg is
    unchanged, the weights hold zeros (`train --keep-zeros` fine-tunes them).

    \b
    Examples:
      dncompress prune energy yolov3-tiny --ratio 0.5 --calib images/
      dncompress prune energy yolov3-tiny.cfg yolov3-tiny.weights --ratio 0.6 --calib voc/fit.txt --max-drop 0.1
    """
    from ..fsutil import atomic_write_many, check_outputs
    from ..prune.modes import energy_prune_run
    from ..layers.conv import refuse_xnor
    net = open_network(cfg, weights)
    refuse_xnor(net, "prune")
    prefix = prefix or f"{Path(net.file).stem}-pruned{ratio:g}"
    outputs = [f"{prefix}.cfg", f"{prefix}.weights"]
    check_outputs(outputs, [net.file, weights, calib, data_path], force)
    run = energy_prune_run(net, ratio, calib, calib_images, max_drop, data_path, progress=progress_lines)
    click.echo(f"{'layer':>5} {'energy':>7} {'density':>8} {'output error':>22} {'fidelity':>9}")
    for step in run.steps:
        verdict = "" if step.accepted else "  over --max-drop: restored, stop"
        click.echo(f"{step.index:>5} {step.energy / 1e9:7.3f} {step.density:8.1%} {step.error_magnitude:10.4f} -> "
                   f"{step.error:<8.4f} {step.fidelity:9.4f}{verdict}")
    click.echo("(energy: G MAC-units before pruning; output error: relative, magnitude pruning -> after "
               "restore + least-squares refit)")
    for key, label, fmt in (("params", "nonzero params", ","), ("bflops", "BFLOPs (zero-skipping)", ".3f"),
                            ("energy", "energy (zero-skipping, model)", ".4g")):
        a, b = run.before[key], run.after[key]
        click.echo(f"{label} {a:{fmt}} -> {b:{fmt}} ({1 - b / a:.1%} less)")
    print_comparison(run.comparison)
    atomic_write_many(run.pruned.darknet_files(*outputs))
    click.echo(f"wrote {outputs[0]} and {outputs[1]}")
