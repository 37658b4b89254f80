"""`dncompress eval`: accuracy on a labelled dataset, or fidelity to another model."""
from __future__ import annotations

import json

import click
import numpy as np

from ..errors import DncompressError
from .common import backend_forward, open_network, progress_lines
from .options import UNIT, imgsz_option, model_arguments


def print_eval(result, names: list[str], label: str) -> None:
    click.echo(f"{label}: {result.n_images} images, {result.n_boxes} boxes, {result.images_per_s:.1f} images/s")
    click.echo(f"  {'class':<16} {'AP@0.5':>7} {'AP@.5:.95':>9}")
    for c, ap in sorted(result.ap50_per_class.items()):
        name = names[c] if c < len(names) else str(c)
        click.echo(f"  {name:<16} {ap:7.3f} {np.mean(result.ap_per_class[c]):9.3f}")
    click.echo(f"mAP@0.5 (VOC all-point)      {result.map50:.4f}")
    click.echo(f"mAP@0.5:0.95 (COCO 101-pt)   {result.map50_95:.4f}")
    click.echo(f"precision / recall @ conf 0.25, IoU 0.5: {result.precision:.3f} / {result.recall:.3f}")
    click.echo(result.scoring_note())


@click.command("eval")
@model_arguments
@click.option("--data", "data_path", required=True, type=click.Path(),
              help="Folder with images/ and labels/, a list of image paths, or a Darknet .data file.")
@imgsz_option
@click.option("--letterbox/--resize", default=True, show_default=True,
              help="Keep aspect ratio with grey padding (Darknet letterbox) or stretch to the input size.")
@click.option("--conf", default=0.005, show_default=True, type=UNIT,
              help="Lowest confidence kept for the AP curves.")
@click.option("--iou", "nms_threshold", default=0.45, show_default=True, type=UNIT,
              help="NMS IoU threshold.")
@click.option("--backend", type=click.Choice(["numpy", "onnx"]), default="numpy", show_default=True,
              help="numpy engine, or onnxruntime on an in-memory ONNX export of the model.")
@click.option("--reference", nargs=2, metavar="CFG2 WEIGHTS2",
              help="Fidelity mode: the detections (conf >= 0.25) of this model are the ground truth.")
@click.option("--batch", default=8, show_default=True, type=click.IntRange(1),
              help="Images per forward pass.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def eval_command(cfg, weights, data_path, imgsz, letterbox, conf, nms_threshold, backend, reference, batch,
                 as_json):
    """mAP@0.5, mAP@0.5:0.95, per-class AP, P/R and images/s of CFG on a labelled dataset (or, with
    --reference, agreement with another model's detections).

    \b
    Examples:
      dncompress eval yolov3-tiny --data voc765/eval200.txt
      dncompress eval small.cfg small.weights --data coco128 --imgsz 320 320
      dncompress eval small.cfg small.weights --data photos/ --reference yolov3-tiny.cfg yolov3-tiny.weights
    """
    from ..data import load_dataset
    from ..detect import check_heads, read_names
    from .prune_recover import labels_for_model
    from ..eval import evaluate, fidelity_dataset, predict, timed_predict
    dataset = load_dataset(data_path)
    if not reference:
        dataset.require_labels("to compare against another model without labels, pass --reference CFG2 WEIGHTS2")
    net = open_network(cfg, weights, tuple(imgsz) if imgsz else None)
    check_heads(net.heads, net.file)
    dataset = labels_for_model(dataset, net)  # a `prune --classes` model: labels renumbered by name
    classes = net.heads[0].classes
    if dataset.classes not in (None, classes) and not reference:
        raise DncompressError(f"classes={dataset.classes} but the network has {classes} classes", data_path,
                              "classes")
    dataset.check_classes(classes)
    names = dataset.names or read_names(None, classes)
    size = (net.info.width, net.info.height)
    options = dict(use_letterbox=letterbox, conf=conf, nms=nms_threshold, batch=batch,
                   progress=None if as_json else progress_lines)
    if reference:
        ref_net = open_network(reference[0], reference[1], size)
        ref_preds = predict(ref_net.forward, ref_net.heads, dataset, *size, **options)
        dataset = fidelity_dataset(ref_preds, dataset)
    preds, images_per_s = timed_predict(backend_forward(net, backend), net.heads, dataset, *size, **options)
    result = evaluate(preds, dataset, classes)
    result.images_per_s = images_per_s
    if as_json:
        fields = result.to_dict()
        fields["ground_truth"] = f"detections of {' '.join(reference)}" if reference else "labels"
        click.echo(json.dumps(fields, indent=1))
    else:
        print_eval(result, names, "fidelity vs reference" if reference else "eval")
