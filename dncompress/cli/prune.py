"""`dncompress prune`: remove channels (or, with --criterion energy, weights) and write a smaller model."""
from __future__ import annotations

from pathlib import Path

import click

from ..errors import DncompressError
from ..prune.criteria import CRITERIA
from ..layers.conv import refuse_xnor
from .common import Number, UNIT, model_arguments, open_network, progress_lines
from .prune_oneshot import print_pruning_report, run_oneshot


def parse_ratios(text: str) -> list[float]:
    try:
        ratios = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise DncompressError(f"--ratios '{text}' must be comma-separated numbers like 0.25,0.5,0.75") from None
    if not ratios or not all(0 < r < 1 for r in ratios):
        raise DncompressError(f"--ratios '{text}' must be numbers between 0 and 1")
    return ratios


@click.command("prune")
@model_arguments
@click.option("--ratio", type=Number(), help="Fraction of prunable channels to remove (0.7 = 70%); with the default "
              "criterion a cost target spread over the layers by measured reconstruction error.")
@click.option("--criterion", type=click.Choice(["obs"] + sorted(CRITERIA) + ["energy"]), default="obs",
              show_default=True,
              help="obs: one-shot pruning with layer-wise reconstruction (channels chosen by their consumers' "
              "output error, Optimal Brain Surgeon on the Gram matrix of their inputs, consumers refit by least "
              "squares, widths allocated by measured error under the target; needs calibration images: --calib, "
              "else the packaged samples). Or a per-channel score with slicing + compensation: |BN gamma| "
              "(network slimming), filter L1/L2 norm, mean activation, random; or 'energy': energy-aware weight "
              "pruning (RATIO of each conv's weights zeroed, highest-energy convs first, restore + least-squares "
              "refit on --calib, stop past --max-drop).")
@click.option("--min-keep", default=0.1, show_default=True, type=Number(),
              help="Per-layer floor: fraction of each layer's channels kept (and at least 1 channel).")
@click.option("--round", "multiple", type=click.Choice(["1", "8", "16"]), default="1", show_default=True,
              help="Round kept filter counts up to a multiple (hardware-regular widths).")
@click.option("--scope", type=click.Choice(["global", "layer"]), default="global", show_default=True,
              help="One threshold over the whole network, or RATIO of every layer.")
@click.option("--compensate/--no-compensate", default=True, show_default=True,
              help="Fold removed channels' constant output act(beta) into their consumers.")
@click.option("--reconstruct", is_flag=True, help="Refit consumers by least squares on --calib images.")
@click.option("--calib", type=click.Path(), help="Calibration images (folder or dataset) for --reconstruct "
              "and --criterion activation.")
@click.option("--calib-images", type=click.IntRange(min=1),
              help="How many calibration images to fit on (default 64 for obs, else 16); obs measures fidelity "
              "on up to 32 --calib images after them.")
@click.option("--target-params", type=click.FloatRange(min=0, min_open=True),
              help="obs: conv weights to reach (instead of --ratio).")
@click.option("--min-fidelity", type=click.FloatRange(0, 1),
              help="obs: refuse to write the model (exit 2) when its fidelity to the original on held-out "
              "calibration images is below this. Default: a floor of 0.1 (a model that lost nearly all the "
              "original's detections is never written silently); --min-fidelity 0 writes whatever comes out.")
@click.option("--imgsz", "resize", metavar="auto|W[,W...]",
              help="obs with --target-bflops: also shrink the network input (width/height in the pruned cfg, "
              "multiples of 32) and prune channels only for the rest of the cost. 'auto' tries the largest size "
              "at which the unpruned model alone meets the target and the two sizes above it (pruned for the "
              "rest); or give the widths to try (the height keeps the aspect). Each candidate's fidelity to the "
              "original (at the original's input size) is measured on the held-out calibration images; the "
              "best is written and every candidate printed.")
@click.option("-o", "--output", "prefix", help="Output prefix: writes PREFIX.cfg and PREFIX.weights "
              "(default <stem>-pruned<RATIO>).")
@click.option("--data", "data_path", type=click.Path(), help="Dataset: report mAP before/after and fidelity.")
@click.option("--sensitivity", is_flag=True, help="With --data: prune each layer group alone at --ratios and "
              "write a table and a PNG plot instead of a pruned model (channels ranked by --criterion; |BN gamma| "
              "when it is obs).")
@click.option("--ratios", default="0.25,0.5,0.75,0.9", show_default=True, help="Ratios for --sensitivity.")
@click.option("--max-drop", default=0.05, show_default=True, type=UNIT,
              help="--criterion energy: stop when fidelity to the original (mAP@0.5 of its detections on the "
              "--calib images after the first --calib-images, held out from the fit) falls below 1 - MAX_DROP.")
@click.option("--search", is_flag=True, help="Pruning-as-Search: learn per-layer widths by training binary "
              "channel indicators (and the weights) on --data towards --target-bflops.")
@click.option("--target-bflops", type=Number(0, low_open=True),
              help="obs and --search: BFLOPs to reach (instead of --ratio).")
@click.option("--epochs", default=3, show_default=True, type=click.IntRange(1), help="--search: epochs over --data.")
@click.option("--penalty", default=200.0, show_default=True, type=Number(0),
              help="--search: weight of ((BFLOPs - target) / target)^2 beside the YOLO loss per image.")
@click.option("--gate-lr", default=0.3, show_default=True, type=Number(0, low_open=True),
              help="--search: SGD rate of the indicators (they start at 1 and switch off below 0.5).")
@click.option("--weight-lr", default=0.0, show_default=True, type=Number(0),
              help="--search: constant SGD rate of the weights during the search (0: frozen; fine-tune the result "
              "with `train`, whose burn-in protects pretrained weights).")
@click.option("--batch", default=8, show_default=True, type=click.IntRange(1),
              help="--search and --finetune: images per step.")
@click.option("--classes", "class_list", help="Keep only these classes: a comma list (person,car,dog) or a file of "
              "names; the heads get classes= and smaller head convs, PREFIX.names is written beside the cfg "
              "(eval and detect read it). Without --ratio: specialization only.")
@click.option("--names", "names_path", type=click.Path(exists=True, dir_okay=False),
              help="The model's class names, for --classes (default: COCO).")
@click.option("--finetune", "finetune_epochs", type=click.IntRange(1), metavar="EPOCHS",
              help="Recover by distillation: fine-tune the pruned model EPOCHS epochs against the original as "
              "teacher, on the --calib images if given, else on --data (labels are used when present); "
              "fidelity and mAP are then reported on --data.")
@click.option("--finetune-lr", default=2e-4, show_default=True, type=click.FloatRange(0, min_open=True),
              help="--finetune: SGD rate (Darknet's update; constant after a short burn-in, x0.1 for the last 20%).")
@click.option("--finetune-imgsz", default=320, show_default=True, type=click.IntRange(32),
              help="--finetune: training input size (the model keeps its own).")
@click.option("--force", is_flag=True, help="Overwrite existing outputs.")
def prune_command(cfg, weights, ratio, criterion, min_keep, multiple, scope, compensate, reconstruct, calib,
                  calib_images, target_params, min_fidelity, resize, prefix, data_path, sensitivity, ratios, max_drop, search,
                  target_bflops, epochs, penalty, gate_lr, weight_lr, batch, class_list, names_path, finetune_epochs,
                  finetune_lr, finetune_imgsz, force):
    """Remove channels (network slimming and friends) and write a smaller cfg + weights that Darknet and
    OpenCV load.

    \b
    Examples:
      dncompress prune yolov3-tiny --target-bflops 3.3 --calib voc/fit.txt --data voc/val.txt
      dncompress prune yolov3-tiny --target-bflops 2.8 --imgsz auto --calib voc/fit.txt
      dncompress prune yolov3-tiny.cfg --ratio 0.7 --min-fidelity 0.5
      dncompress prune yolov3-tiny.cfg --ratio 0.3 --criterion bn --reconstruct --calib images/
      dncompress prune yolov3-tiny --criterion energy --ratio 0.5 --calib images/
      dncompress prune yolov3-tiny --search --target-bflops 3 --data train/
      dncompress prune yolov3-tiny --target-bflops 2.78 --calib voc/fit.txt --finetune 15 --data voc/val.txt \\
          -o tiny-p50    # the recipe measured in docs/pruning.md (one-shot, then 15 epochs of distillation)
      dncompress prune yolov3-tiny --classes person,car,dog -o tiny-3classes
    """
    from ..data import calibration_batch, load_dataset
    from ..eval import compare_models
    from ..fsutil import check_outputs
    from ..prune.apply import prune_network
    from ..prune.groups import channel_groups
    from ..prune.plan import plan_pruning
    from ..prune.reconstruct import reconstruct as reconstruct_layers
    from ..prune.report import pruning_report
    from ..prune.search import SearchConfig
    from .prune_modes import SEARCH_BN_IMAGES, run_energy_pruning, run_search, run_sensitivity
    from ..fsutil import atomic_write
    from .prune_recover import cli_dataset, finetune_for_cli, names_bytes, specialize_for_cli, write_specialized
    net = open_network(cfg, weights)
    refuse_xnor(net, "prune")
    stem = Path(net.file).stem
    size = (net.info.width, net.info.height)
    # --classes: every later step sees the specialized model as the original (cli/prune_recover.py)
    class_names = None
    if class_list:
        class_names, net = specialize_for_cli(net, class_list, names_path)
        if ratio is None and target_bflops is None and target_params is None and not (sensitivity or search):
            write_specialized(net, class_names, prefix or f"{stem}-{len(class_names)}classes", weights)
            return
    if reconstruct and criterion == "obs":
        criterion = "bn"            # --reconstruct belongs to the score-and-slice methods
    if criterion == "obs" and not (sensitivity or search):
        from ..prune.workflow import has_samples
        if calib or has_samples():
            finetune = (finetune_epochs, finetune_lr, finetune_imgsz, batch) if finetune_epochs else None
            run_oneshot(net, weights, stem, ratio, target_bflops, target_params, calib, calib_images or 64,
                        min_keep, int(multiple), data_path, min_fidelity, prefix, force, class_names, finetune,
                        resize)
            return
        click.echo("note: no calibration images (--calib) and no packaged samples: falling back to the data-free "
                   "method, |BN gamma| of each layer at RATIO with compensation; calibration images would do "
                   "much better", err=True)
        criterion, scope = "bn", "layer"
    if resize:
        raise DncompressError("--imgsz belongs to the default one-shot method (--criterion obs, calibration "
                              "images)")
    if criterion == "obs":  # --sensitivity ranks each group's channels by a per-channel score
        criterion = "bn"
    calib_images = calib_images or 16
    if sensitivity:
        if not data_path:
            raise DncompressError("--sensitivity needs --data")
        prefix = prefix or f"{stem}-sensitivity"
        check_outputs([f"{prefix}.png", f"{prefix}.json"], [net.file, weights], force)
        run_sensitivity(net, criterion, parse_ratios(ratios), load_dataset(data_path), prefix,
                        calibration_batch(calib, calib_images, *size, channels=net.info.channels) if calib else None)
        return
    if search:
        if not data_path or target_bflops is None:
            raise DncompressError("--search needs a labelled --data set and --target-bflops")
        prefix = prefix or f"{stem}-search{target_bflops:g}"
        outputs = [f"{prefix}.cfg", f"{prefix}.weights"]
        check_outputs(outputs, [net.file, weights, data_path], force)
        run_search(net, load_dataset(data_path), SearchConfig(target_bflops, epochs, batch, penalty, gate_lr,
                                                              weight_lr),
                   calibration_batch(data_path, SEARCH_BN_IMAGES, *size, channels=net.info.channels), outputs)
        return
    if ratio is None:
        raise DncompressError("--ratio is required (e.g. --ratio 0.7)")
    if reconstruct and not calib:
        raise DncompressError("--reconstruct needs calibration images (--calib DIR)")
    prefix = prefix or f"{stem}-pruned{ratio:g}"
    outputs = [f"{prefix}.cfg", f"{prefix}.weights"]
    extra = ([f"{prefix}.names"] if class_names else []) + ([f"{prefix}_last.weights", f"{prefix}_last.npz"]
                                                            if finetune_epochs else [])
    check_outputs(outputs + extra, [net.file, weights], force)
    if finetune_epochs and not (calib or data_path):
        raise DncompressError("--finetune needs images: --calib (fine-tune on them) or --data")
    if criterion == "energy":
        run_energy_pruning(net, ratio, calib, calib_images, max_drop, outputs, data_path)
        return
    calib_batch = calibration_batch(calib, calib_images, *size, channels=net.info.channels) if calib else None
    keep = plan_pruning(channel_groups(net), CRITERIA[criterion](net, calib=calib_batch), ratio, scope, min_keep,
                        int(multiple))
    pruned = prune_network(net, keep, compensate)
    if reconstruct:
        reconstruct_layers(net, pruned, keep, calib_batch, progress=progress_lines)
    if class_names:
        atomic_write(f"{prefix}.names", names_bytes(class_names))
    report = pruning_report(net, pruned)
    if finetune_epochs:  # the widths first; fine-tuning writes PREFIX.cfg/.weights after every epoch
        print_pruning_report(report)
        pruned = finetune_for_cli(net, pruned, calib, data_path, class_names, finetune_epochs, finetune_lr,
                                  finetune_imgsz, batch, prefix)
    else:
        pruned.save(*outputs)
        if data_path:
            report.update(compare_models(net, pruned, cli_dataset(data_path, class_names), progress=progress_lines))
        print_pruning_report(report)
    click.echo(f"wrote {outputs[0]} and {outputs[1]}" + (f" and {prefix}.names" if class_names else ""))
