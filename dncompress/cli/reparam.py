"""`dncompress reparam`: fold BN, RepVGG branches and stacked linear convs into single convs."""
from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from ..errors import DncompressError
from ..layers.conv import refuse_xnor
from .common import open_network
from .options import force_option, model_arguments


@click.command("reparam")
@model_arguments
@click.option("-o", "--output", "prefix", help="Output prefix: writes PREFIX.cfg and PREFIX.weights "
              "(default <stem>-reparam).")
@force_option
def reparam_command(cfg, weights, prefix, force):
    """Fold batchnorm, parallel linear conv branches (RepVGG) and stacked linear convs into single convs;
    the outputs stay the same (checked in the numpy engine before writing).

    \b
    Examples:
      dncompress reparam yolov3-tiny-rep -o deploy
      dncompress reparam pruned.cfg pruned.weights --force
    """
    from ..fsutil import check_outputs
    from ..model_io import save_model
    from ..reparam import head_difference, reparameterize
    from ..stats import summary
    net = open_network(cfg, weights)
    refuse_xnor(net, "reparam")
    prefix = prefix or f"{Path(net.file).stem}-reparam"
    outputs = [f"{prefix}.cfg", f"{prefix}.weights"]
    check_outputs(outputs, [net.file, net.weights_file], force)
    folded, bn_folded, folds = reparameterize(net)
    x = np.random.default_rng(0).random((1, *net.input_shape), dtype=np.float32)
    diff = head_difference(net, folded, x)
    if diff > 1e-4:
        raise DncompressError(f"the folded network differs from the original by {diff:.3g} of the output scale "
                              f"(> 1e-4); not written", outputs[0])
    save_model(folded, outputs)
    if bn_folded:
        click.echo(f"batchnorm folded into {len(bn_folded)} convs")
    for fold in folds:
        click.echo(fold.describe())
    if not bn_folded and not folds:
        click.echo("nothing to fold: the output is the same network")
    before, after = summary(net), summary(folded)
    click.echo(f"layers {len(net.layers)} -> {len(folded.layers)}; params {before['params']:,} -> {after['params']:,}; "
               f"BFLOPs {before['bflops']:.3f} -> {after['bflops']:.3f}")
    click.echo(f"heads vs the original (numpy engine, random input): max abs diff {diff:.1e} of the output scale")
    click.echo(f"wrote {outputs[0]} and {outputs[1]}")
