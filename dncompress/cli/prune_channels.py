"""`dncompress prune [channels]`: remove channels and write a smaller cfg + weights (the default mode)."""
from __future__ import annotations

from pathlib import Path

import click

from ..errors import DncompressError
from ..layers.conv import refuse_xnor
from ..prune.criteria import CRITERIA
from .common import open_network
from .options import Number, data_option, force_option, model_arguments, prefix_option
from .prune import DefaultModeCommand
from .prune_oneshot import run_oneshot, run_scored

SECTIONS = {
    "Target (one of)": ["ratio", "target_bflops", "target_params"],
    "Method": ["criterion", "allocation", "min_keep", "multiple", "scope", "compensate", "reconstruct"],
    "Calibration and the guard": ["calib", "calib_images", "min_fidelity", "resize", "data_path"],
    "Classes and recovery": ["class_list", "names_path", "finetune_epochs", "finetune_lr", "finetune_imgsz", "finetune_hints",
                             "batch"],
    "Outputs": ["prefix", "force"],
}


@click.command("channels", cls=DefaultModeCommand, sections=SECTIONS,
               short_help="Remove channels: a smaller cfg + weights (one-shot obs, or a per-channel score).")
@model_arguments
@click.option("--ratio", type=Number(), help="Fraction of prunable channels to remove (0.7 = 70%); with obs a cost "
              "target spread over the layers by measured reconstruction error.")
@click.option("--target-bflops", type=Number(0, low_open=True), help="obs: BFLOPs to reach.")
@click.option("--target-params", type=click.FloatRange(min=0, min_open=True), help="obs: conv weights to reach.")
@click.option("--criterion", type=click.Choice(["obs"] + sorted(CRITERIA)), default="obs", show_default=True,
              help="obs: one-shot pruning with layer-wise reconstruction (channels chosen by their consumers' "
              "output error, Optimal Brain Surgeon on their inputs' Gram matrix, consumers refit by least squares, "
              "widths allocated by measured error; calibration: --calib, else the packaged samples). Or a "
              "per-channel score, sliced with compensation: |BN gamma| (network slimming), filter L1/L2 norm, mean "
              "activation, random.")
@click.option("--allocation", type=click.Choice(["heads", "local"]), default="heads", show_default=True,
              help="obs: how widths are spread over the layers: by each layer's reconstruction error weighted by "
              "what that error costs at the detection heads (measured by noise injection), or by the local error "
              "alone (before 2026-12-02).")
@click.option("--min-keep", default=0.1, show_default=True, type=Number(),
              help="Per-layer floor: fraction of each layer's channels kept (and at least 1 channel).")
@click.option("--round", "multiple", type=click.Choice(["1", "8", "16"]), default="1", show_default=True,
              help="Round kept filter counts up to a multiple (hardware-regular widths).")
@click.option("--scope", type=click.Choice(["global", "layer"]), default="global", show_default=True,
              help="Per-channel scores: one threshold over the whole network, or RATIO of every layer.")
@click.option("--compensate/--no-compensate", default=True, show_default=True,
              help="Per-channel scores: fold removed channels' constant output act(beta) into their consumers.")
@click.option("--reconstruct", is_flag=True, help="Per-channel scores (bn if none given): refit consumers by least "
              "squares on --calib images.")
@click.option("--calib", type=click.Path(), help="Calibration images (folder or dataset).")
@click.option("--calib-images", type=click.IntRange(min=1), help="How many calibration images to fit on (default 64 "
              "for obs, else 16); obs measures fidelity on up to 32 --calib images after them.")
@click.option("--min-fidelity", type=click.FloatRange(0, 1), help="obs: refuse to write the model (exit 2) when its "
              "fidelity to the original on held-out calibration images is below this (default 0.1; 0 writes "
              "whatever comes out).")
@click.option("--imgsz", "resize", metavar="auto|W[,W...]", help="obs with --target-bflops: also shrink the network "
              "input (multiples of 32) and prune channels only for the rest of the cost; 'auto' tries the largest "
              "size at which the unpruned model alone meets the target and the two above it. Each candidate's "
              "fidelity is measured on the held-out calibration images; the best is written, all are printed.")
@data_option()
@click.option("--classes", "class_list", help="Keep only these classes: a comma list (person,car,dog) or a file of "
              "names; PREFIX.names is written beside the cfg. Without a target: specialization only.")
@click.option("--names", "names_path", type=click.Path(exists=True, dir_okay=False),
              help="The model's class names, for --classes (default: COCO).")
@click.option("--finetune", "finetune_epochs", type=click.IntRange(1), metavar="EPOCHS", help="Recover by "
              "distillation: fine-tune the pruned model EPOCHS epochs against the original as teacher, on --calib "
              "if given, else on --data; fidelity and mAP are then reported on --data.")
@click.option("--finetune-lr", default=2e-4, show_default=True, type=click.FloatRange(0, min_open=True),
              help="--finetune: SGD rate (Darknet's update; constant after a short burn-in, x0.1 for the last 20%).")
@click.option("--finetune-imgsz", default=320, show_default=True, type=click.IntRange(32),
              help="--finetune: training input size (the model keeps its own).")
@click.option("--finetune-hints", default=0.0, show_default=True, type=click.FloatRange(0),
              help="--finetune: weight of feature imitation (each trunk conv pulled towards the original's output "
              "of the same layer); 0: the heads only. Measured: --ratio 0.7, 35 epochs: 0.3020 vs 0.2724 mAP@0.5 "
              "without (docs/pruning.md).")
@click.option("--batch", default=8, show_default=True, type=click.IntRange(1), help="--finetune: images per step.")
@prefix_option("<stem>-pruned<TARGET>; writes PREFIX.cfg and PREFIX.weights")
@force_option
def channels_command(cfg, weights, ratio, target_bflops, target_params, criterion, allocation, min_keep, multiple, scope,
                     compensate, reconstruct, calib, calib_images, min_fidelity, resize, data_path, class_list,
                     names_path, finetune_epochs, finetune_lr, finetune_imgsz, finetune_hints, batch, prefix, force):
    """Remove channels and write a smaller cfg + weights that Darknet and OpenCV load (the default mode:
    `prune CFG ...` = `prune channels CFG ...`).

    \b
    Examples:
      dncompress prune yolov3-tiny.cfg --ratio 0.7
      dncompress prune yolov3-tiny --target-bflops 2.78 --calib voc/fit.txt --finetune 15 --data voc/val.txt \\
          -o tiny-p50    # the recipe measured in docs/pruning.md (one-shot, then 15 epochs of distillation)
      dncompress prune yolov3-tiny --classes person,car,dog -o tiny-3classes
    """
    from ..prune.workflow import has_samples
    from .prune_recover import specialize_for_cli, write_specialized
    net = open_network(cfg, weights)
    refuse_xnor(net, "prune")
    stem = Path(net.file).stem
    class_names = None      # --classes: every later step sees the specialized model as the original
    if class_list:
        class_names, net = specialize_for_cli(net, class_list, names_path)
        if ratio is None and target_bflops is None and target_params is None:
            write_specialized(net, class_names, prefix or f"{stem}-{len(class_names)}classes", weights, force)
            return
    finetune = (finetune_epochs, finetune_lr, finetune_imgsz, batch, finetune_hints) if finetune_epochs else None
    if reconstruct and criterion == "obs":
        criterion = "bn"            # --reconstruct belongs to the score-and-slice methods
    if criterion == "obs":
        if calib or has_samples():
            run_oneshot(net, weights, stem, ratio, target_bflops, target_params, calib, calib_images or 64,
                        min_keep, int(multiple), data_path, min_fidelity, prefix, force, class_names, finetune,
                        resize, allocation)
            return
        click.echo("note: no calibration images (--calib) and no packaged samples: falling back to the data-free "
                   "method, |BN gamma| of each layer at RATIO with compensation; calibration images would do "
                   "much better", err=True)
        criterion, scope = "bn", "layer"
    if resize:
        raise DncompressError("--imgsz belongs to the default one-shot method (--criterion obs, calibration "
                              "images)")
    if ratio is None:
        raise DncompressError("--ratio is required (e.g. --ratio 0.7)")
    if reconstruct and not calib:
        raise DncompressError("--reconstruct needs calibration images (--calib DIR)")
    run_scored(net, weights, prefix or f"{stem}-pruned{ratio:g}", criterion, ratio, scope, min_keep, int(multiple),
               compensate, reconstruct, calib, calib_images or 16, data_path, class_names, finetune, force)
