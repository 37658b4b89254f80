"""`dncompress prune search`: Pruning-as-Search (per-layer widths learned by training channel indicators)."""
from __future__ import annotations

from pathlib import Path

import click

from .common import open_network, progress_lines
from .options import Number, data_option, force_option, model_arguments, prefix_option
from .prune_report import print_pruning_report


@click.command("search", short_help="Learn per-layer widths by training channel indicators (Pruning-as-Search).")
@model_arguments
@click.option("--target-bflops", required=True, type=Number(0, low_open=True), help="BFLOPs to reach.")
@data_option("Labelled dataset the indicators are trained on (YOLO loss); mAP and fidelity are reported on it.",
             required=True)
@click.option("--epochs", default=3, show_default=True, type=click.IntRange(1), help="Epochs over --data.")
@click.option("--penalty", default=200.0, show_default=True, type=Number(0),
              help="Weight of ((BFLOPs - target) / target)^2 beside the YOLO loss per image.")
@click.option("--gate-lr", default=0.3, show_default=True, type=Number(0, low_open=True),
              help="SGD rate of the indicators (they start at 1 and switch off below 0.5).")
@click.option("--weight-lr", default=0.0, show_default=True, type=Number(0),
              help="Constant SGD rate of the weights during the search (0: frozen; fine-tune the result with "
              "`train`, whose burn-in protects pretrained weights).")
@click.option("--batch", default=8, show_default=True, type=click.IntRange(1), help="Images per step.")
@prefix_option("<stem>-search<TARGET>; writes PREFIX.cfg and PREFIX.weights")
@force_option
def search_command(cfg, weights, target_bflops, data_path, epochs, penalty, gate_lr, weight_lr, batch, prefix, force):
    """Pruning-as-Search (Li et al. 2022): learn per-layer widths by training a binary indicator per channel
    (and optionally the weights) on --data towards --target-bflops; writes the pruned cfg + weights.

    \b
    Examples:
      dncompress prune search yolov3-tiny --target-bflops 3 --data train/
      dncompress prune search yolov3-tiny --target-bflops 4.5 --data search96.txt --epochs 5 -o pas45
    """
    from ..fsutil import atomic_write_many, check_outputs
    from ..prune.modes import search_run
    from ..prune.search import SearchConfig
    from ..layers.conv import refuse_xnor
    net = open_network(cfg, weights)
    refuse_xnor(net, "prune")
    prefix = prefix or f"{Path(net.file).stem}-search{target_bflops:g}"
    outputs = [f"{prefix}.cfg", f"{prefix}.weights"]
    check_outputs(outputs, [net.file, weights, data_path], force)
    config = SearchConfig(target_bflops, epochs, batch, penalty, gate_lr, weight_lr)
    run = search_run(net, data_path, config, progress=progress_lines)
    if run.searched_bflops > 1.1 * target_bflops:
        click.echo(f"warning: the search stopped {run.searched_bflops / target_bflops - 1:.0%} above "
                   "--target-bflops; the widths read at a higher threshold rank channels by barely trained "
                   "indicators (more --epochs or a larger --gate-lr let the search get there)", err=True)
    click.echo(f"indicators > 0.5: {run.searched_bflops:.3f} BFLOPs; read at {run.threshold:.3f} (the lowest "
               f"threshold within --target-bflops): {run.read_bflops:.3f} BFLOPs")
    print_pruning_report(run.report)
    click.echo("(mAP and fidelity on the search set --data" + ("" if weight_lr == 0 else
               ", which the weights were trained on") + ")")
    atomic_write_many(run.pruned.darknet_files(*outputs))
    click.echo(f"wrote {outputs[0]} and {outputs[1]}")
