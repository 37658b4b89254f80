"""The `dncompress` command: thin click wrappers that parse options, call the library and print."""
from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import click
import cv2
import numpy as np

from . import __version__
from .cfg import write_cfg
from .data import calibration_batch, label_path, load_dataset
from .detect import check_heads, detect_image, draw, load_image, read_names
from .errors import DncompressError
from .export.onnx import build_onnx, onnx_forward, parity, save_onnx
from .eval import compare_models, evaluate, fidelity_dataset, predict, timed_predict
from .fsutil import StagedWrites, atomic_write_many, check_outputs
from .network import DEFAULT_MAX_ACTIVATION_MB, MAX_ACTIVATION_ENV, Network
from .quant.apply import QuantConfig, plain_convolutional, quantize_network
from .quant.calibrate import METHODS
from .quant.packed import packed_size, read_packed, write_packed
from .quant.qdq import build_qdq_onnx
from .prune.apply import prune_network
from .prune.criteria import CRITERIA
from .prune.energy import energy_aware_prune
from .prune.search import SearchConfig, apply_search, search
from .prune.groups import channel_groups
from .prune.plan import plan_pruning
from .prune.reconstruct import reconstruct as reconstruct_layers
from .prune.report import pruning_report
from .prune.sensitivity import plot_sensitivity, sensitivity
from .reparam import head_difference, reparameterize
from .sparse.activations import NEAR_ZERO, activation_stats, with_activation_masks
from .sparse.format import read_sparse, sparse_chunks
from .sparse.weights import (NORMS, PATTERNS, SCOPES, SparsifyConfig, correct_bias, sparsify_network,
                              weight_sparsity_report)
from .stats import summary
from .weights import weights_payload
from .zoo import DEFAULT_MODEL, fetch, find_weights, resolve_cfg

# model files that hold their cfg and weights together (quantize --format packed, sparsify)
SELF_CONTAINED = (".dnq", ".dns")
# images of --data on which `prune --search` re-estimates BN statistics of the pruned network
SEARCH_BN_IMAGES = 16
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


class Group(click.Group):
    """Prints DncompressError as one `error: ...` line with exit code 2; no traceback for user errors."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except DncompressError as err:
            click.echo(f"error: {err}", err=True)
            ctx.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted; no partial output was written", err=True)
            ctx.exit(130)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="dncompress")
@click.option("--max-activation-mb", type=float, metavar="MB",
              help=f"Refuse networks whose peak activation memory for one image exceeds MB "
              f"(default: ${MAX_ACTIVATION_ENV}, else {DEFAULT_MAX_ACTIVATION_MB:.0f}).")
def main(max_activation_mb):
    """Compress Darknet/YOLO detectors: prune, quantize, export, measure.

    A CFG may be a path or a packaged model name (yolov3-tiny, yolov4-tiny, yolov3, yolov2-tiny);
    without one, the default model yolov3-tiny is used and its COCO weights fetched on first use.
    """


def open_network(cfg: str | None, weights: str | None, imgsz: tuple[int, int] | None = None) -> Network:
    """Resolve a cfg name, find (or fetch) its weights, and build the network (a .dnq packed or .dns sparse
    model holds both)."""
    cfg_path = resolve_cfg(cfg or DEFAULT_MODEL)
    if cfg_path.suffix == ".dnq":
        if imgsz:
            raise DncompressError("--imgsz does not apply to a packed model; it keeps the input size it was made "
                                  "with", str(cfg_path))
        return read_packed(cfg_path)
    if cfg_path.suffix == ".dns":
        if imgsz:
            raise DncompressError("--imgsz does not apply to a sparse model; it keeps the input size it was made "
                                  "with", str(cfg_path))
        return read_sparse(cfg_path)
    weights_path = find_weights(cfg_path, weights)
    width, height = imgsz if imgsz else (None, None)
    return Network.from_cfg(cfg_path, weights_path, width, height, activation_limit())


def activation_limit() -> float | None:
    """The global --max-activation-mb, if given (else Network falls back to the environment)."""
    ctx = click.get_current_context(silent=True)
    limit = ctx.find_root().params.get("max_activation_mb") if ctx else None
    if limit is not None and not 0 < limit < float("inf"):
        raise DncompressError(f"--max-activation-mb {limit} must be a positive number")
    return limit


def expand_images(paths: tuple[str, ...]) -> list[Path]:
    """Image files from arguments; a directory contributes its images, sorted."""
    images: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise DncompressError("folder holds no images (.jpg, .png, ...)", str(path))
            images.extend(found)
        elif path.exists():
            images.append(path)
        else:
            raise DncompressError("image not found", str(path))
    return images


def next_run_dir(base: Path) -> Path:
    """base/exp, base/exp2, ...: a fresh folder per run, so earlier results are never overwritten."""
    n = 1
    while (base / ("exp" if n == 1 else f"exp{n}")).exists():
        n += 1
    return base / ("exp" if n == 1 else f"exp{n}")


@main.command()
@click.argument("images", nargs=-1, required=True, type=click.Path())
@click.option("--cfg", help="Darknet cfg (path or packaged name); default yolov3-tiny.")
@click.option("--weights", type=click.Path(), help="Darknet .weights; default <cfg stem>.weights beside "
              "the cfg, then the cache.")
@click.option("--names", type=click.Path(), help="Class names, one per line (default: COCO).")
@click.option("--thresh", default=0.25, show_default=True, help="Confidence threshold.")
@click.option("--nms", "nms_threshold", default=0.45, show_default=True, help="NMS IoU threshold.")
@click.option("--letterbox/--resize", default=True, show_default=True,
              help="Keep aspect ratio with grey padding (Darknet detector test) or stretch.")
@click.option("--imgsz", nargs=2, type=click.IntRange(1, 16384),
              help="Network input W H (default: the cfg's).")
@click.option("--out", type=click.Path(file_okay=False), help="Folder for annotated images "
              "(default: a new runs/detect/expN).")
@click.option("--json", "as_json", is_flag=True, help="Print detections as JSON on stdout.")
@click.option("--backend", type=click.Choice(["numpy", "onnx"]), default="numpy", show_default=True,
              help="Inference engine: the numpy engine, or onnxruntime on an ONNX export of the model.")
@click.option("--force", is_flag=True, help="Overwrite existing annotated images in --out.")
def detect(images, cfg, weights, names, thresh, nms_threshold, letterbox, imgsz, out, as_json, backend, force):
    """Detect objects in IMAGES (files or folders) and write annotated copies."""
    paths = expand_images(images)
    net = open_network(cfg, weights, tuple(imgsz) if imgsz else None)
    check_heads(net.heads, net.file)
    class_names = read_names(names, net.heads[0].classes)
    out_dir = Path(out) if out else next_run_dir(Path("runs/detect"))
    targets = [out_dir / f"{p.stem}.jpg" for p in paths]
    if len(set(targets)) < len(targets):
        clash = next(t for t in targets if targets.count(t) > 1)
        raise DncompressError("two input images would both be written here (same name stem); "
                              "detect them in separate runs", str(clash))
    if out_dir.exists():
        check_outputs(targets, paths, force)
    forward = backend_forward(net, backend)
    results = []
    # annotated images appear only once every image succeeded: a bad image or Ctrl-C leaves none
    with click.progressbar(paths, label="detect", file=sys.stderr,
                           hidden=len(paths) < 2 or not sys.stderr.isatty()) as bar, \
            StagedWrites(out_dir) as staged:
        for path, target in zip(bar, targets):
            img = load_image(path)
            dets = detect_image(forward, net.heads, img, net.info.width, net.info.height, thresh,
                                nms_threshold, letterbox, class_names)
            ok, encoded = cv2.imencode(".jpg", draw(img, dets))
            staged.write(target, encoded.tobytes())
            results.append({"image": str(path), "annotated": str(target),
                            "detections": [d.to_dict() for d in dets]})
            if not as_json:
                click.echo(f"{path}: {len(dets)} objects -> {target}")
                for d in dets:
                    x1, y1, x2, y2 = d.box
                    click.echo(f"  {d.name:<14} {d.confidence:.2f}  box {x1:.0f},{y1:.0f},{x2:.0f},{y2:.0f}")
    if as_json:
        click.echo(json.dumps(results, indent=1))


@main.command("fetch")
@click.argument("model", default=DEFAULT_MODEL)
@click.option("--force", is_flag=True, help="Download again even when the cached file verifies.")
def fetch_command(model, force):
    """Download MODEL's official weights into the cache and verify their sha256."""
    path = fetch(model, progress=True, force=force)
    click.echo(str(path))


def backend_forward(net: Network, backend: str):
    """The forward callable of the chosen backend: the numpy engine, or onnxruntime on an export of it
    (batch dimension symbolic, since eval runs several images per pass)."""
    return net.forward if backend == "numpy" else onnx_forward(build_onnx(net, dynamic_batch=True))


def print_eval(result, names: list[str], label: str) -> None:
    click.echo(f"{label}: {result.n_images} images, {result.n_boxes} boxes, {result.images_per_s:.1f} images/s")
    click.echo(f"  {'class':<16} {'AP@0.5':>7} {'AP@.5:.95':>9}")
    for c, ap in sorted(result.ap50_per_class.items()):
        name = names[c] if c < len(names) else str(c)
        click.echo(f"  {name:<16} {ap:7.3f} {np.mean(result.ap_per_class[c]):9.3f}")
    click.echo(f"mAP@0.5 (VOC all-point)      {result.map50:.4f}")
    click.echo(f"mAP@0.5:0.95 (COCO 101-pt)   {result.map50_95:.4f}")
    click.echo(f"precision / recall @ conf 0.25, IoU 0.5: {result.precision:.3f} / {result.recall:.3f}")


@main.command("eval")
@click.argument("cfg", required=False)
@click.argument("weights", required=False, type=click.Path())
@click.option("--data", "data_path", required=True, type=click.Path(),
              help="Folder with images/ and labels/, a list of image paths, or a Darknet .data file.")
@click.option("--imgsz", nargs=2, type=click.IntRange(1, 16384),
              help="Network input W H (default: the cfg's).")
@click.option("--letterbox/--resize", default=True, show_default=True,
              help="Keep aspect ratio with grey padding (Darknet letterbox) or stretch to the input size.")
@click.option("--conf", default=0.005, show_default=True, type=click.FloatRange(0, 1),
              help="Lowest confidence kept for the AP curves.")
@click.option("--iou", "nms_threshold", default=0.45, show_default=True, type=click.FloatRange(0, 1),
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
    --reference, agreement with another model's detections)."""
    dataset = load_dataset(data_path)
    if not reference and not dataset.num_boxes:
        raise DncompressError("no image has a labelled object (labels are looked for by the images->labels "
                              f"rule, e.g. {label_path(dataset.items[0].image)}); to compare against "
                              "another model without labels, pass --reference CFG2 WEIGHTS2", str(data_path))
    net = open_network(cfg, weights, tuple(imgsz) if imgsz else None)
    check_heads(net.heads, net.file)
    classes = net.heads[0].classes
    if dataset.classes not in (None, classes) and not reference:
        raise DncompressError(f"classes={dataset.classes} but the network has {classes} classes", data_path,
                              "classes")
    dataset.check_classes(classes)
    names = dataset.names or read_names(None, classes)
    size = (net.info.width, net.info.height)
    options = dict(use_letterbox=letterbox, conf=conf, nms=nms_threshold, batch=batch, progress=not as_json)
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


@main.command("export")
@click.argument("cfg", required=False)
@click.argument("weights", required=False, type=click.Path())
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="ONNX file (default: <cfg stem>.onnx).")
@click.option("--opset", default=13, show_default=True, type=click.IntRange(13, 21))
@click.option("--decode", is_flag=True, help="Add the YOLO decode: outputs boxes (cx, cy, w, h relative to "
              "the input) and scores (objectness * class).")
@click.option("--nms", is_flag=True, help="With --decode: add NonMaxSuppression (output selected_indices).")
@click.option("--dynamic-batch", is_flag=True, help="Make the batch dimension symbolic.")
@click.option("--imgsz", nargs=2, type=click.IntRange(1, 16384),
              help="Network input W H (default: the cfg's).")
@click.option("--force", is_flag=True, help="Overwrite an existing output file.")
def export_command(cfg, weights, output, opset, decode, nms, dynamic_batch, imgsz, force):
    """Write CFG as ONNX (BN folded into Conv), then check it with onnxruntime against the numpy engine."""
    net = open_network(cfg, weights, tuple(imgsz) if imgsz else None)
    output = Path(output or f"{Path(net.file).stem}.onnx")
    check_outputs([output], [net.file, weights], force)
    quantized = any(layer.type == "quantize_convolutional" for layer in net.layers)
    model = (build_qdq_onnx if quantized else build_onnx)(net, opset, decode=decode, nms=nms,
                                                          dynamic_batch=dynamic_batch)
    diff = parity(net, model, decode, 2 if dynamic_batch else 1)
    if diff > 1e-4:
        raise DncompressError(f"onnxruntime differs from the numpy engine by {diff:.3g} (> 1e-4); not written",
                              str(output))
    save_onnx(model, output)
    click.echo(f"wrote {output} ({output.stat().st_size / 1e6:.2f} MB, opset {opset}); onnxruntime vs numpy "
               f"engine max abs diff {diff:.2e}")


@main.command("stats")
@click.argument("cfg", required=False)
@click.argument("weights", required=False, type=click.Path())
@click.option("--imgsz", nargs=2, type=click.IntRange(1, 16384),
              help="Network input W H (default: the cfg's).")
@click.option("--skip-zeros", is_flag=True, help="Count only nonzero conv weights (needs WEIGHTS): the MACs "
              "and weight accesses of a zero-skipping accelerator, for weight-pruned models.")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def stats_command(cfg, weights, imgsz, skip_zeros, as_json):
    """Per-layer cost table (like Darknet's) and totals: params, size, BFLOPs, peak activation memory,
    energy estimate. Needs no weights; WEIGHTS, if given, is checked against the cfg, and its zero conv
    weights are counted (with the MACs a zero-skipping engine would skip)."""
    width, height = imgsz if imgsz else (None, None)
    cfg_path = resolve_cfg(cfg or DEFAULT_MODEL)
    if skip_zeros and not weights and cfg_path.suffix not in SELF_CONTAINED:
        raise DncompressError("--skip-zeros counts nonzero weights: give WEIGHTS too")
    if cfg_path.suffix in SELF_CONTAINED:
        net = open_network(cfg, weights, tuple(imgsz) if imgsz else None)
    else:
        net = Network.from_cfg(cfg_path, find_weights(cfg_path, weights) if weights else None, width, height,
                               activation_limit())
    figures = summary(net, skip_zeros=skip_zeros)
    if as_json:
        click.echo(json.dumps(figures, indent=1))
        return
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


def parse_ratios(text: str) -> list[float]:
    try:
        ratios = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise DncompressError(f"--ratios '{text}' must be comma-separated numbers like 0.25,0.5,0.75") from None
    if not ratios or not all(0 < r < 1 for r in ratios):
        raise DncompressError(f"--ratios '{text}' must be numbers between 0 and 1")
    return ratios


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


def print_comparison(report: dict, reference: str = "the original") -> None:
    """mAP before/after (with labels) and fidelity, as `compare_models` returns them."""
    if "map50" in report:
        a, b = report["map50"]
        click.echo(f"mAP@0.5 {a:.4f} -> {b:.4f}; mAP@0.5:0.95 {report['map50_95'][0]:.4f} -> "
                   f"{report['map50_95'][1]:.4f}")
    if "fidelity_map50" in report:
        click.echo(f"fidelity to {reference} (mAP@0.5 of its detections): {report['fidelity_map50']:.4f}")


@main.command("prune")
@click.argument("cfg", required=False)
@click.argument("weights", required=False, type=click.Path())
@click.option("--ratio", type=float, help="Fraction of prunable channels to remove (0.7 = 70%).")
@click.option("--criterion", type=click.Choice(sorted(CRITERIA) + ["energy"]), default="bn", show_default=True,
              help="Channel importance: |BN gamma| (network slimming), filter L1/L2 norm, mean activation, random; "
              "or 'energy': energy-aware weight pruning (RATIO of each conv's weights zeroed, highest-energy "
              "convs first, restore + least-squares refit on --calib, stop past --max-drop).")
@click.option("--min-keep", default=0.1, show_default=True,
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
@click.option("--calib-images", default=16, type=click.IntRange(min=1), show_default=True,
              help="How many calibration images to use.")
@click.option("-o", "--output", "prefix", help="Output prefix: writes PREFIX.cfg and PREFIX.weights "
              "(default <stem>-pruned<RATIO>).")
@click.option("--data", "data_path", type=click.Path(), help="Dataset: report mAP before/after and fidelity.")
@click.option("--sensitivity", is_flag=True, help="With --data: prune each layer group alone at --ratios and "
              "write a table and a PNG plot instead of a pruned model.")
@click.option("--ratios", default="0.25,0.5,0.75,0.9", show_default=True, help="Ratios for --sensitivity.")
@click.option("--max-drop", default=0.05, show_default=True, type=click.FloatRange(0, 1),
              help="--criterion energy: stop when fidelity to the original (mAP@0.5 of its detections on the "
              "--calib images after the first --calib-images, held out from the fit) falls below 1 - MAX_DROP.")
@click.option("--search", is_flag=True, help="Pruning-as-Search: learn per-layer widths by training binary "
              "channel indicators (and the weights) on --data towards --target-bflops.")
@click.option("--target-bflops", type=click.FloatRange(min=0, min_open=True), help="--search: BFLOPs to reach.")
@click.option("--epochs", default=3, show_default=True, type=click.IntRange(1), help="--search: epochs over --data.")
@click.option("--penalty", default=200.0, show_default=True, type=click.FloatRange(0),
              help="--search: weight of ((BFLOPs - target) / target)^2 beside the YOLO loss per image.")
@click.option("--gate-lr", default=0.3, show_default=True, type=click.FloatRange(0, min_open=True),
              help="--search: SGD rate of the indicators (they start at 1 and switch off below 0.5).")
@click.option("--weight-lr", default=0.0, show_default=True, type=click.FloatRange(0),
              help="--search: constant SGD rate of the weights during the search (0: frozen; fine-tune the result "
              "with `train`, whose burn-in protects pretrained weights).")
@click.option("--batch", default=8, show_default=True, type=click.IntRange(1), help="--search: images per step.")
@click.option("--force", is_flag=True, help="Overwrite existing outputs.")
def prune_command(cfg, weights, ratio, criterion, min_keep, multiple, scope, compensate, reconstruct, calib,
                  calib_images, prefix, data_path, sensitivity, ratios, max_drop, search, target_bflops, epochs,
                  penalty, gate_lr, weight_lr, batch, force):
    """Remove channels (network slimming and friends) and write a smaller cfg + weights that Darknet and
    OpenCV load."""
    net = open_network(cfg, weights)
    stem = Path(net.file).stem
    size = (net.info.width, net.info.height)
    if sensitivity:
        if not data_path:
            raise DncompressError("--sensitivity needs --data")
        prefix = prefix or f"{stem}-sensitivity"
        check_outputs([f"{prefix}.png", f"{prefix}.json"], [net.file, weights], force)
        run_sensitivity(net, criterion, parse_ratios(ratios), load_dataset(data_path), prefix,
                        calibration_batch(calib, calib_images, *size) if calib else None)
        return
    if search:
        if not data_path or target_bflops is None:
            raise DncompressError("--search needs a labelled --data set and --target-bflops")
        prefix = prefix or f"{stem}-search{target_bflops:g}"
        outputs = [f"{prefix}.cfg", f"{prefix}.weights"]
        check_outputs(outputs, [net.file, weights, data_path], force)
        run_search(net, load_dataset(data_path), SearchConfig(target_bflops, epochs, batch, penalty, gate_lr,
                                                              weight_lr),
                   calibration_batch(data_path, SEARCH_BN_IMAGES, *size), outputs)
        return
    if ratio is None:
        raise DncompressError("--ratio is required (e.g. --ratio 0.7)")
    if reconstruct and not calib:
        raise DncompressError("--reconstruct needs calibration images (--calib DIR)")
    prefix = prefix or f"{stem}-pruned{ratio:g}"
    outputs = [f"{prefix}.cfg", f"{prefix}.weights"]
    check_outputs(outputs, [net.file, weights], force)
    if criterion == "energy":
        run_energy_pruning(net, ratio, calib, calib_images, max_drop, outputs, data_path)
        return
    calib_batch = calibration_batch(calib, calib_images, *size) if calib else None
    keep = plan_pruning(channel_groups(net), CRITERIA[criterion](net, calib=calib_batch), ratio, scope, min_keep,
                        int(multiple))
    pruned = prune_network(net, keep, compensate)
    if reconstruct:
        reconstruct_layers(net, pruned, keep, calib_batch)
    pruned.save(*outputs)
    report = pruning_report(net, pruned)
    if data_path:
        report.update(compare_models(net, pruned, load_dataset(data_path)))
    print_pruning_report(report)
    click.echo(f"wrote {outputs[0]} and {outputs[1]}")


def run_search(net: Network, dataset, config: SearchConfig, bn_batch: np.ndarray, outputs: list[str]) -> None:
    """Pruning-as-search, then the searched widths applied, BN statistics re-estimated on bn_batch."""
    check_heads(net.heads, net.file)
    dataset.check_classes(net.heads[0].classes)
    if not dataset.num_boxes:
        raise DncompressError("--search trains the indicators with the YOLO loss on labels, and --data has none",
                              dataset.source)
    full = summary(net)["bflops"]
    if config.target_bflops >= full:
        raise DncompressError(f"--target-bflops {config.target_bflops:g} is not below the network's {full:.3f} "
                              "BFLOPs: nothing to prune")
    original = net.copy()
    with click.progressbar(length=config.epochs * (len(dataset) // min(config.batch, len(dataset))), label="search",
                           file=sys.stderr, item_show_func=lambda text: text, hidden=not sys.stderr.isatty()) as bar:
        def on_step(log):
            bar.update(1, f"epoch {log.epoch + 1} loss {log.loss:.2f} BFLOPs {log.bflops:.3f} | "
                          f"{log.images_per_s:.1f} img/s")
        indicators = search(net, dataset, config, on_step)
    threshold = indicators.threshold_for(config.target_bflops)
    searched = indicators.bflops()[0]
    if searched > 1.1 * config.target_bflops:
        click.echo(f"warning: the search stopped {searched / config.target_bflops - 1:.0%} above "
                   "--target-bflops; the widths read at a higher threshold rank channels by barely trained "
                   "indicators (more --epochs or a larger --gate-lr let the search get there)", err=True)
    click.echo(f"indicators > 0.5: {searched:.3f} BFLOPs; read at {threshold:.3f} (the lowest "
               f"threshold within --target-bflops): {indicators.bflops(threshold)[0]:.3f} BFLOPs")
    pruned = apply_search(net, indicators, bn_batch, threshold)
    pruned.save(*outputs)
    report = pruning_report(original, pruned)
    report.update(compare_models(original, pruned, dataset))
    print_pruning_report(report)
    click.echo("(mAP and fidelity on the search set --data" + ("" if config.weight_lr == 0 else
               ", which the weights were trained on") + ")")
    click.echo(f"wrote {outputs[0]} and {outputs[1]}")


def run_energy_pruning(net: Network, ratio: float, calib: str | None, calib_images: int, max_drop: float,
                       outputs: list[str], data_path: str | None) -> None:
    """Energy-aware weight pruning; fidelity is measured on calibration images held out from the fit."""
    if not calib:
        raise DncompressError("--criterion energy needs calibration images (--calib DIR)")
    if not 0 < ratio < 1:
        raise DncompressError(f"--ratio {ratio:g} must be between 0 and 1 for --criterion energy")
    size = (net.info.width, net.info.height)
    images = load_dataset(calib)
    fit_count = min(calib_images, len(images))
    # fidelity on images the least-squares fit did not see: on its own images it is optimistic
    held_out = images.items[fit_count:fit_count + calib_images]
    dataset = dataclasses.replace(images, items=held_out or images.items[:fit_count])
    click.echo(f"least-squares fit on {fit_count} --calib images; fidelity on "
               + (f"the {len(held_out)} after them" if held_out else "the same images (--calib has no more)"))
    reference = fidelity_dataset(predict(net.forward, net.heads, dataset, *size, progress=False), dataset)
    if not reference.num_boxes:
        raise DncompressError("the original model detects nothing (conf >= 0.25) on the images that measure "
                              "fidelity, so no drop can be seen; give --calib images with objects", calib)

    def fidelity(candidate: Network) -> float:
        preds = predict(candidate.forward, candidate.heads, dataset, *size, progress=False)
        return evaluate(preds, reference, net.heads[0].classes).map50
    pruned, steps = energy_aware_prune(net, calibration_batch(calib, calib_images, *size), ratio, fidelity,
                                       max_drop)
    pruned.save(*outputs)
    click.echo(f"{'layer':>5} {'energy':>7} {'density':>8} {'output error':>22} {'fidelity':>9}")
    for step in steps:
        verdict = "" if step.accepted else "  over --max-drop: restored, stop"
        click.echo(f"{step.index:>5} {step.energy / 1e9:7.3f} {step.density:8.1%} {step.error_magnitude:10.4f} -> "
                   f"{step.error:<8.4f} {step.fidelity:9.4f}{verdict}")
    click.echo("(energy: G MAC-units before pruning; output error: relative, magnitude pruning -> after "
               "restore + least-squares refit)")
    before, after = summary(net, skip_zeros=True), summary(pruned, skip_zeros=True)
    for key, label, fmt in (("params", "nonzero params", ","), ("bflops", "BFLOPs (zero-skipping)", ".3f"),
                            ("energy", "energy (zero-skipping, model)", ".4g")):
        a, b = before[key], after[key]
        click.echo(f"{label} {a:{fmt}} -> {b:{fmt}} ({1 - b / a:.1%} less)")
    if data_path:
        print_comparison(compare_models(net, pruned, load_dataset(data_path)))
    click.echo(f"wrote {outputs[0]} and {outputs[1]}")


def run_sensitivity(net: Network, criterion: str, ratios: list[float], dataset, prefix: str, calib) -> None:
    """Prune each group alone at each ratio; accuracy is mAP@0.5 with labels, else fidelity."""
    size = (net.info.width, net.info.height)
    classes = net.heads[0].classes
    if not dataset.num_boxes:
        dataset = fidelity_dataset(predict(net.forward, net.heads, dataset, *size), dataset)

    def measure(candidate: Network) -> float:
        preds = predict(candidate.forward, candidate.heads, dataset, *size, progress=False)
        return evaluate(preds, dataset, classes).map50
    baseline = measure(net)
    table = sensitivity(net, CRITERIA[criterion](net, calib=calib), ratios, measure)
    click.echo(f"mAP@0.5 with one group pruned (baseline {baseline:.4f})")
    click.echo(f"{'group':>8} " + " ".join(f"{r:>7g}" for r in ratios))
    for conv, row in sorted(table.items()):
        click.echo(f"layer {conv:>2} " + " ".join(f"{v:7.4f}" for v in row))
    ok, png = cv2.imencode(".png", plot_sensitivity(table, ratios, baseline))
    atomic_write_many({f"{prefix}.png": png.tobytes(),
                       f"{prefix}.json": json.dumps({"baseline": baseline, "ratios": ratios,
                                                     "map50": {str(k): v for k, v in table.items()}}).encode()})
    click.echo(f"wrote {prefix}.png and {prefix}.json")


def parse_act_bits(text: str) -> int | None:
    if text.lower() == "none":
        return None
    if not text.isdigit() or not 2 <= int(text) <= 8:
        raise DncompressError(f"--act-bits {text} must be 2..8 or none")
    return int(text)


def set_net_keys(net: Network, **values) -> None:
    """Override [net] training keys given on the command line (None = keep the cfg's)."""
    for key, value in values.items():
        if value is not None:
            net.net_section.options[key] = str(value)


@main.command("train")
@click.argument("cfg", required=False)
@click.argument("weights", required=False, type=click.Path())
@click.option("--data", "data_path", required=True, type=click.Path(),
              help="Training set: folder with images/ and labels/, a list of image paths, or a .data file.")
@click.option("--epochs", required=True, type=click.IntRange(1), help="Epochs to train (in total, when resuming).")
@click.option("--imgsz", type=click.IntRange(32), help="Square network input size (default: the cfg's).")
@click.option("--batch", type=click.IntRange(1), help="Images per weight update (default: [net] batch if the "
              "cfg is a training cfg, batch > 1; else 8).")
@click.option("--subdivisions", type=click.IntRange(1), help="Forward/backward passes per update "
              "(batch/subdivisions images each) to bound memory (default: [net] subdivisions with its batch, else 1).")
@click.option("--lr", type=float, help="learning_rate (default: the cfg's [net]).")
@click.option("--burn-in", type=click.IntRange(0), help="burn_in updates (default: the cfg's [net]).")
@click.option("--keep-zeros", is_flag=True, help="Conv weights that are zero at the start stay zero: fine-tune a "
              "weight-pruned model (prune --criterion energy, sparsify) without refilling its zeros.")
@click.option("--sparsity", default=0.0, show_default=True, type=click.FloatRange(0),
              help="Network Slimming: add S*sign(gamma) to every prunable BN gamma's gradient.")
@click.option("--teacher", nargs=2, metavar="CFG W", help="Distil the head outputs of this model (labels are "
              "used too when the dataset has any).")
@click.option("--augment/--no-augment", default=True, show_default=True,
              help="Flip, HSV and scale/translate jitter (strengths from the cfg); else plain letterbox.")
@click.option("-o", "--output", "prefix", help="Checkpoint prefix: PREFIX.cfg/.weights each epoch, "
              "PREFIX_last.weights/.npz to resume (default <stem>-trained).")
@click.option("--resume", is_flag=True, help="Continue from PREFIX_last.weights (and its momentum).")
@click.option("--seed", default=0, show_default=True, help="Shuffling and augmentation seed.")
@click.option("--force", is_flag=True, help="Overwrite existing checkpoints.")
def train_command(cfg, weights, data_path, epochs, imgsz, batch, subdivisions, lr, burn_in, keep_zeros, sparsity,
                  teacher, augment, prefix, resume, seed, force):
    """Train or fine-tune CFG on a YOLO-format dataset with Darknet's YOLOv3 loss and SGD schedule."""
    from .train.loop import Checkpoints, TrainConfig, train
    from .train.sparsity import format_gamma_summary
    dataset = load_dataset(data_path)
    net = open_network(cfg, weights, (imgsz, imgsz) if imgsz else None)
    check_heads(net.heads, net.file)
    dataset.check_classes(net.heads[0].classes)
    set_net_keys(net, learning_rate=lr, burn_in=burn_in)
    teacher_net = open_network(teacher[0], teacher[1], (net.info.width, net.info.height)) if teacher else None
    checkpoints = Checkpoints(prefix or f"{Path(net.file).stem}-trained")
    if not resume:
        check_outputs(checkpoints.files, [net.file, weights, data_path], force)
    cfg_batch, cfg_subdivisions = (net.net_section.get_int(k, 1) for k in ("batch", "subdivisions"))
    if batch is None:
        batch, subdivisions = (cfg_batch, subdivisions or cfg_subdivisions) if cfg_batch > 1 else (8, subdivisions)
    config = TrainConfig(epochs, batch, min(subdivisions or 1, batch), sparsity, augment, seed, keep_zeros)
    bar = None

    def on_step(log):
        nonlocal bar
        if bar is None:
            bar = click.progressbar(length=log.steps, label=f"epoch {log.epoch + 1}/{epochs}", file=sys.stderr,
                                    item_show_func=lambda text: text, hidden=not sys.stderr.isatty())
            bar.__enter__()
        parts = " ".join(f"{k} {v:.3f}" for k, v in log.loss.items())
        bar.update(1, f"{parts} | {log.images_per_s:.1f} img/s lr {log.rate:.2g}")

    def on_epoch(epoch, record):
        nonlocal bar
        if bar is not None:
            bar.__exit__(None, None, None)
            bar = None
        parts = " ".join(f"{k} {v:.3f}" for k, v in record["loss"].items())
        click.echo(f"epoch {epoch + 1}: loss/image {parts}; seen {net.header.seen}")
        click.echo(f"  {format_gamma_summary(record['gamma'])}")
    train(net, dataset, config, checkpoints, teacher_net, resume, on_step, on_epoch)
    click.echo(f"wrote {checkpoints.files[0]} and {checkpoints.files[1]}")


@main.command("quantize")
@click.argument("cfg", required=False)
@click.argument("weights", required=False, type=click.Path())
@click.option("--bits", type=click.IntRange(2, 8), default=8, show_default=True, help="Weight bits.")
@click.option("--act-bits", default="8", show_default=True, help="Activation (conv input) bits 2..8, or none "
              "for weights-only quantization.")
@click.option("--per-channel/--per-tensor", default=True, show_default=True, help="Weight scale granularity.")
@click.option("--calib", type=click.Path(), help="Calibration images (folder or dataset); needed for "
              "activation ranges and --bias-correction.")
@click.option("--calib-images", default=32, show_default=True, type=click.IntRange(1, 100000))
@click.option("--method", type=click.Choice(METHODS), default="minmax", show_default=True,
              help="Range calibration for weights and activations.")
@click.option("--keep-first-last", default=8, show_default=True, help="Bits of the first conv and the convs "
              "feeding the detection heads (0: same as --bits).")
@click.option("--bias-correction", is_flag=True, help="Remove each layer's mean output shift on --calib.")
@click.option("--format", "fmt", type=click.Choice(["darknet-q", "darknet", "onnx", "packed"]), default="darknet-q",
              show_default=True, help="darknet-q: [quantize_convolutional] cfg + on-grid weights; darknet: plain "
              "[convolutional] (weights only) that Darknet/OpenCV load; onnx: QDQ ONNX; packed: integer .dnq file.")
@click.option("--opset", default=13, show_default=True, type=click.IntRange(13, 21),
              help="ONNX opset (21 stores <= 4-bit weights as INT4).")
@click.option("-o", "--output", "prefix", help="Output prefix (default <stem>-w<BITS>a<ACT>).")
@click.option("--data", "data_path", type=click.Path(), help="Dataset: report mAP fp32 vs quantized, fidelity.")
@click.option("--force", is_flag=True, help="Overwrite existing outputs.")
def quantize_command(cfg, weights, bits, act_bits, per_channel, calib, calib_images, method, keep_first_last,
                     bias_correction, fmt, opset, prefix, data_path, force):
    """Quantize convolutions to BITS (fake quantization the engine, eval and detect reproduce) and write
    them as [quantize_convolutional], plain Darknet, QDQ ONNX or a packed integer file."""
    act = parse_act_bits(act_bits)
    if fmt == "darknet" and act:
        raise DncompressError("--format darknet cannot carry activation quantization (Darknet/OpenCV run "
                              "float activations); add --act-bits none")
    if (act or bias_correction) and not calib:
        raise DncompressError("activation ranges and --bias-correction need calibration images (--calib DIR)")
    net = open_network(cfg, weights)
    prefix = prefix or f"{Path(net.file).stem}-w{bits}a{act or 'f'}"
    suffixes = {"darknet-q": [".cfg", ".weights"], "darknet": [".cfg", ".weights"], "onnx": [".onnx"],
                "packed": [".dnq"]}[fmt]
    outputs = [f"{prefix}{s}" for s in suffixes]
    check_outputs(outputs, [net.file, weights], force)
    calib_batch = calibration_batch(calib, calib_images, net.info.width, net.info.height) if calib else None
    config = QuantConfig(bits, act, per_channel, method, keep_first_last, bias_correction)
    quantized = quantize_network(net, config, calib_batch)
    if fmt == "darknet-q":
        quantized.save(*outputs)
    elif fmt == "darknet":
        plain_convolutional(quantized).save(*outputs)
    elif fmt == "onnx":
        save_onnx(build_qdq_onnx(quantized, opset), outputs[0])
    else:
        write_packed(quantized, outputs[0])
    fp32_mb = net.param_count() * 4 / 1e6
    click.echo(f"wrote {' and '.join(outputs)}: {sum(Path(o).stat().st_size for o in outputs) / 1e6:.2f} MB on disk "
               f"(float32 model {fp32_mb:.2f} MB; packed integers {packed_size(quantized) / 1e6:.2f} MB)")
    if data_path:
        print_comparison(compare_models(net, quantized, load_dataset(data_path)), "the float model")


@main.command("reparam")
@click.argument("cfg", required=False)
@click.argument("weights", required=False, type=click.Path())
@click.option("-o", "--output", "prefix", help="Output prefix: writes PREFIX.cfg and PREFIX.weights "
              "(default <stem>-reparam).")
@click.option("--force", is_flag=True, help="Overwrite existing outputs.")
def reparam_command(cfg, weights, prefix, force):
    """Fold batchnorm, parallel linear conv branches (RepVGG) and stacked linear convs into single convs;
    the outputs stay the same (checked in the numpy engine before writing)."""
    cfg_path = resolve_cfg(cfg or DEFAULT_MODEL)
    weights_path = None if cfg_path.suffix in SELF_CONTAINED else find_weights(cfg_path, weights)
    net = open_network(str(cfg_path), weights_path)
    prefix = prefix or f"{cfg_path.stem}-reparam"
    outputs = [f"{prefix}.cfg", f"{prefix}.weights"]
    check_outputs(outputs, [net.file, weights_path], force)
    folded, bn_folded, folds = reparameterize(net)
    x = np.random.default_rng(0).random((1, *net.input_shape), dtype=np.float32)
    diff = head_difference(net, folded, x)
    if diff > 1e-4:
        raise DncompressError(f"the folded network differs from the original by {diff:.3g} of the output scale "
                              f"(> 1e-4); not written", outputs[0])
    folded.save(*outputs)
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


def print_weight_sparsity(report: dict) -> None:
    click.echo(f"{'layer':>5} {'weights':>9} {'nonzero':>21} {'zero':>6} {'MACs skipped':>13}")
    for row in report["layers"]:
        a, b = row["nonzero"]
        click.echo(f"{row['index']:>5} {row['weights']:>9,} {a:>9,} -> {b:<9,} {1 - b / row['weights']:6.1%} "
                   f"{row['skipped_macs'] / 1e6:10.1f} M")
    a, b = report["nonzero"]
    click.echo(f"nonzero weights {a:,} -> {b:,} ({1 - b / report['weights']:.1%} of conv weights zero); "
               f"a zero-skipping engine skips {report['skipped_macs'] / 1e9:.3f} of {report['macs'] / 1e9:.3f} G MACs "
               f"({report['skipped_macs'] / report['macs']:.1%})")


def print_activation_sparsity(before: dict, after: dict, images: int) -> None:
    """Per conv: output zeros and near zeros before, zeros and kept fraction after, and the share of its
    in-image MACs (zero padding left out; per image) with a zero operand."""
    click.echo(f"{'layer':>5} {'out zero':>8} {f'|a|<{NEAR_ZERO:g}':>8} {'-> zero':>7} {'kept':>6} {'in zero':>7} "
               f"{'MACs/image':>13} {'skip: act':>16} {'w+act':>6}")
    totals = {key: [0, 0] for key in ("real", "act", "both")}
    for index, b in before.items():
        a = after[index]
        real = b.macs - b.padding_macs
        act = (real - b.nonzero_input_macs, real - a.nonzero_input_macs)
        for key, pair in (("real", (real, real)), ("act", act), ("both", (real - b.effectual_macs,
                                                                        real - a.effectual_macs))):
            totals[key] = [t + v for t, v in zip(totals[key], pair)]
        click.echo(f"{index:>5} {b.zeros / b.outputs:8.1%} {b.near_zeros / b.outputs:8.1%} {a.zeros / a.outputs:7.1%} "
                   f"{1 - a.zeros / a.outputs:6.1%} {a.input_zeros / a.inputs:7.1%} {real / images / 1e9:11.3f} G "
                   f"{act[0] / real:6.1%} -> {act[1] / real:6.1%} {1 - a.effectual_macs / real:6.1%}")
    real = totals["real"][0]
    click.echo(f"a zero-skipping engine skips, of {real / images / 1e9:.3f} G in-image MACs per image: zero "
               f"activations {totals['act'][0] / real:.1%} -> {totals['act'][1] / real:.1%}; zero weights or activations "
               f"{totals['both'][0] / real:.1%} -> {totals['both'][1] / real:.1%}")


def sparsify_prefix(stem: str, config: SparsifyConfig | None, threshold: float, winner_rate: float) -> str:
    parts = [stem]
    if config:
        parts.append(f"{config.pattern}{config.group if config.pattern == 'simd' else ''}-s{config.ratio:g}")
    if threshold:
        parts.append(f"at{threshold:g}")
    if winner_rate < 1:
        parts.append(f"wr{winner_rate:g}")
    return "-".join(parts)


@main.command("sparsify")
@click.argument("cfg", required=False)
@click.argument("weights", required=False, type=click.Path())
@click.option("--pattern", type=click.Choice(PATTERNS), help="Weight pruning: simd (Scalpel: whole groups of "
              "--group consecutive weights along each filter's reduction axis) or unstructured (per weight).")
@click.option("--group", type=click.Choice(["4", "8"]), default="4", show_default=True,
              help="SIMD width in weights (--pattern simd).")
@click.option("--ratio", type=float, help="Fraction of the groups (unstructured: weights) set to zero.")
@click.option("--norm", type=click.Choice(sorted(NORMS)), default="l2", show_default=True,
              help="Group score: norm of the BN-folded weights.")
@click.option("--scope", type=click.Choice(SCOPES), default="layer", show_default=True,
              help="RATIO of every layer, or one threshold over all pruned layers.")
@click.option("--skip-first-last", is_flag=True, help="Leave the first conv and the convs feeding the heads dense.")
@click.option("--bias-correction", is_flag=True, help="Remove each pruned conv's mean output shift on --calib "
              "images (folded into its bias or BN mean).")
@click.option("--calib", type=click.Path(), help="Calibration images (folder or dataset) for --bias-correction.")
@click.option("--calib-images", default=16, show_default=True, type=click.IntRange(1))
@click.option("--activation-threshold", default=0.0, type=click.FloatRange(0), help="Dynamic mask: zero conv "
              "outputs with |a| < T (cfg key activation_threshold=; Darknet and OpenCV ignore it).")
@click.option("--winner-rate", default=1.0, type=click.FloatRange(0, 1, min_open=True), help="Dynamic mask: keep "
              "the top fraction R (by |a|) of each conv's outputs per image (cfg key winner_rate=).")
@click.option("--activations", "measure_activations", is_flag=True, help="With --data: per-conv table of "
              "activation zeros and of the MACs a zero-skipping engine would skip, before/after.")
@click.option("--images", default=16, show_default=True, type=click.IntRange(1),
              help="How many --data images --activations measures.")
@click.option("-o", "--output", "prefix", help="Output prefix: PREFIX.cfg + PREFIX.weights (dense, with zeros), "
              "and PREFIX.dns (sparse) with --pattern (default <stem>-<pattern>-s<RATIO>).")
@click.option("--data", "data_path", type=click.Path(), help="Dataset: report mAP before/after and fidelity.")
@click.option("--force", is_flag=True, help="Overwrite existing outputs.")
def sparsify_command(cfg, weights, pattern, group, ratio, norm, scope, skip_first_last, bias_correction, calib,
                     calib_images, activation_threshold, winner_rate, measure_activations, images, prefix, data_path,
                     force):
    """Zero weights (SIMD-aligned groups or unstructured) and/or activations (dynamic masks) inside the
    dense model; write it as Darknet cfg + weights and as a sparse .dns file, and measure what it saves."""
    masks = activation_threshold > 0 or winner_rate < 1
    if pattern and ratio is None:
        raise DncompressError("--pattern needs --ratio (e.g. --ratio 0.5)")
    if ratio is not None and not pattern:
        raise DncompressError("--ratio needs --pattern simd or --pattern unstructured")
    if bias_correction and not (pattern and calib):
        raise DncompressError("--bias-correction needs --pattern and calibration images (--calib DIR)")
    if measure_activations and not data_path:
        raise DncompressError("--activations needs --data (the images to measure)")
    if not (pattern or masks or measure_activations):
        raise DncompressError("nothing to do: give --pattern and --ratio (weights), --activation-threshold or "
                              "--winner-rate (activations), or --activations --data PATH (measure)")
    config = SparsifyConfig(pattern, ratio, int(group), norm, scope, skip_first_last) if pattern else None
    net = open_network(cfg, weights)
    outputs = []
    if config or masks:
        prefix = prefix or sparsify_prefix(Path(net.file).stem, config, activation_threshold, winner_rate)
        outputs = [f"{prefix}.cfg", f"{prefix}.weights"] + ([f"{prefix}.dns"] if config else [])
        check_outputs(outputs, [net.file, weights], force)
    sparse = net
    if config:
        sparse, _ = sparsify_network(net, config)
        if bias_correction:
            correct_bias(net, sparse, calibration_batch(calib, calib_images, net.info.width, net.info.height))
        print_weight_sparsity(weight_sparsity_report(net, sparse))
    if masks:
        sparse = with_activation_masks(sparse, activation_threshold, winner_rate)
    if outputs:
        files = {outputs[0]: write_cfg(sparse.sections).encode(),
                 outputs[1]: weights_payload(sparse.header, sparse.weight_tensors())}
        encodings: dict[int, str] = {}
        if config:
            files[outputs[2]] = sparse_chunks(sparse, config.group_size, encodings)
        atomic_write_many(files)
        sizes = {o: Path(o).stat().st_size / 1e6 for o in outputs}
        click.echo(f"wrote {' and '.join(outputs)}")
        if config:
            counts = ", ".join(f"{sum(e == name for e in encodings.values())} {name}"
                               for name in ("groups", "csr", "dense") if name in encodings.values())
            click.echo(f"size: dense {outputs[1]} {sizes[outputs[1]]:.2f} MB, sparse {outputs[2]} "
                       f"{sizes[outputs[2]]:.2f} MB ({1 - sizes[outputs[2]] / sizes[outputs[1]]:.1%} less; "
                       f"conv encodings: {counts})")
    if data_path:
        dataset = load_dataset(data_path)
        if measure_activations:
            x = calibration_batch(data_path, images, net.info.width, net.info.height)
            before = activation_stats(net, x)
            print_activation_sparsity(before, activation_stats(sparse, x) if sparse is not net else before, len(x))
        if sparse is not net:
            print_comparison(compare_models(net, sparse, dataset))
