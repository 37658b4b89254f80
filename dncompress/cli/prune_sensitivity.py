"""`dncompress prune sensitivity`: each layer group pruned alone; writes a table and a plot, not a model."""
from __future__ import annotations

from pathlib import Path

import click

from ..errors import DncompressError
from ..layers.conv import refuse_xnor
from ..prune.criteria import CRITERIA
from .common import open_network, progress_lines
from .options import data_option, force_option, model_arguments, prefix_option


def parse_ratios(text: str) -> list[float]:
    try:
        ratios = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise DncompressError(f"--ratios '{text}' must be comma-separated numbers like 0.25,0.5,0.75") from None
    if not ratios or not all(0 < r < 1 for r in ratios):
        raise DncompressError(f"--ratios '{text}' must be numbers between 0 and 1")
    return ratios


@click.command("sensitivity", short_help="Prune each layer group alone; write a table and a plot, not a model.")
@model_arguments
@data_option("Images to measure on: mAP@0.5 with labels, else fidelity to the original's detections.",
             required=True)
@click.option("--ratios", default="0.25,0.5,0.75,0.9", show_default=True,
              help="Fractions of one group's channels removed.")
@click.option("--criterion", type=click.Choice(sorted(CRITERIA)), default="bn", show_default=True,
              help="How each group's channels are ranked: |BN gamma|, filter L1/L2 norm, mean activation "
              "(on --calib), random.")
@click.option("--calib", type=click.Path(), help="Calibration images for --criterion activation.")
@click.option("--calib-images", default=16, show_default=True, type=click.IntRange(1))
@prefix_option("<stem>-sensitivity; writes PREFIX.png and PREFIX.json")
@force_option
def sensitivity_command(cfg, weights, data_path, ratios, criterion, calib, calib_images, prefix, force):
    """Sensitivity analysis: prune each layer group alone at each of --ratios and measure; writes the
    table (PREFIX.json) and a plot (PREFIX.png), not a model.

    \b
    Examples:
      dncompress prune sensitivity yolov3-tiny --data val/
      dncompress prune sensitivity yolov3-tiny.cfg --data voc/fit.txt --ratios 0.5,0.9 -o sens
    """
    from ..fsutil import atomic_write_many, check_outputs
    from ..prune.modes import sensitivity_run
    values = parse_ratios(ratios)
    net = open_network(cfg, weights)
    refuse_xnor(net, "prune")
    prefix = prefix or f"{Path(net.file).stem}-sensitivity"
    check_outputs([f"{prefix}.png", f"{prefix}.json"], [net.file, weights, data_path, calib], force)
    run = sensitivity_run(net, criterion, values, data_path, calib, calib_images, progress=progress_lines)
    click.echo(f"mAP@0.5 with one group pruned (baseline {run.baseline:.4f})")
    click.echo(f"{'group':>8} " + " ".join(f"{r:>7g}" for r in values))
    for conv, row in sorted(run.table.items()):
        click.echo(f"layer {conv:>2} " + " ".join(f"{v:7.4f}" for v in row))
    atomic_write_many(run.files(prefix))
    click.echo(f"wrote {prefix}.png and {prefix}.json")
