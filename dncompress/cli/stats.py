"""`dncompress stats`: Darknet's per-layer cost table and totals."""
from __future__ import annotations

import json

import click

from ..errors import DncompressError
from .common import open_network
from .options import imgsz_option, model_arguments


def print_stats(figures: dict, skip_zeros: bool) -> None:
    click.echo(f"{'layer':>5} {'type':<22} {'filters':>7} {'size/strd':>9}   {'input':>15} -> {'output':<15}"
               f" {'BFLOPs':>7} {'params':>9}")
    for row in figures["layers"]:
        kernel = f"{row['size']} x{row['size']}/{row['stride']}" if row["size"] else ""
        shape = (lambda s: f"{s[2]} x{s[1]:>4} x{s[0]:>5}")
        click.echo(f"{row['index']:>5} {row['type']:<22} {row['filters'] or '':>7} {kernel:>9}   "
                   f"{shape(row['input']):>15} -> {shape(row['output']):<15} {row['bflops']:7.3f} {row['params']:>9,}")
    share = ", ".join(f"{k} {v:.0%}" for k, v in figures["energy_share"].items())
    sam_ops = (f", {figures['adds'] / 1e9:.4f} G adds, {figures['compares'] / 1e9:.4f} G compares"
               if figures["adds"] else "")
    click.echo(f"params {figures['params']:,} ({figures['size_mb']:.2f} MB float32), {figures['bflops']:.3f} BFLOPs "
               f"({figures['macs'] / 1e9:.4f} G MACs{sam_ops})")
    click.echo(f"activations {figures['activation_mb']:.2f} MB in all, peak {figures['peak_activation_mb']:.2f} MB "
               f"alive at once (batch 1)")
    click.echo(f"energy {figures['energy'] / 1e9:.3f} G MAC-units ({share}); model in docs/energy.md")
    zeros = figures["weight_sparsity"]
    if zeros:
        dense_macs = figures["macs"] + (zeros["skipped_macs"] if skip_zeros else 0)
        click.echo(f"nonzero conv weights {zeros['nonzero_weights']:,} of {zeros['conv_weights']:,} "
                   f"({1 - zeros['nonzero_weights'] / zeros['conv_weights']:.1%} zero); a zero-skipping engine skips "
                   f"{zeros['skipped_macs'] / 1e9:.3f} of {dense_macs / 1e9:.3f} G MACs")
    if skip_zeros:
        click.echo("(--skip-zeros: params, MACs, BFLOPs and energy count nonzero conv weights only)")


@click.command("stats")
@model_arguments
@imgsz_option
@click.option("--skip-zeros", is_flag=True, help="Count only nonzero conv weights (needs WEIGHTS): the MACs "
              "and weight accesses of a zero-skipping accelerator, for weight-pruned models.")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def stats_command(cfg, weights, imgsz, skip_zeros, as_json):
    """Per-layer cost table (like Darknet's) and totals: params, size, BFLOPs, peak activation memory,
    energy estimate. Needs no weights; WEIGHTS, if given, is checked against the cfg, and its zero conv
    weights are counted (with the MACs a zero-skipping engine would skip).

    \b
    Examples:
      dncompress stats yolov3-tiny
      dncompress stats small.cfg --imgsz 320 320 --json
      dncompress stats sparse.cfg sparse.weights --skip-zeros
    """
    from ..stats import summary
    from ..model_io import model_paths
    if skip_zeros and not weights and model_paths(cfg)[1] is None:
        raise DncompressError("--skip-zeros counts nonzero weights: give WEIGHTS too")
    net = open_network(cfg, weights, tuple(imgsz) if imgsz else None, load_weights=False)
    figures = summary(net, skip_zeros=skip_zeros)
    if as_json:
        click.echo(json.dumps(figures, indent=1))
    else:
        print_stats(figures, skip_zeros)
