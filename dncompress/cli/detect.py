"""`dncompress detect` and `dncompress fetch`."""
from __future__ import annotations

import json
from pathlib import Path

import click

from ..errors import DncompressError
from ..zoo import DEFAULT_MODEL
from .common import backend_forward, expand_images, open_network, progress_lines
from .options import UNIT, imgsz_option

MODEL_SUFFIXES = (".cfg", ".dnq", ".dns")


def split_model_arguments(args: tuple[str, ...], cfg: str | None, weights: str | None):
    """`detect my.cfg [my.weights] IMAGE...`: a leading model file is the cfg (and a .weights after it)."""
    args = list(args)
    if args and Path(args[0]).suffix.lower() in MODEL_SUFFIXES:
        if cfg:
            raise DncompressError(f"two cfgs given: --cfg {cfg} and {args[0]}; give one")
        cfg = args.pop(0)
        if args and Path(args[0]).suffix.lower() == ".weights":
            if weights:
                raise DncompressError(f"two weights files given: --weights {weights} and {args[0]}; give one")
            weights = args.pop(0)
    if not args:
        raise DncompressError("no image given (dncompress detect [CFG [WEIGHTS]] IMAGE...)")
    return tuple(args), cfg, weights


def next_run_dir(base: Path) -> Path:
    """base/exp, base/exp2, ...: a fresh folder per run, so earlier results are never overwritten."""
    n = 1
    while (base / ("exp" if n == 1 else f"exp{n}")).exists():
        n += 1
    return base / ("exp" if n == 1 else f"exp{n}")


@click.command()
@click.argument("images", nargs=-1, required=True, type=click.Path())
@click.option("--cfg", help="Darknet cfg (path or packaged name); default yolov3-tiny. A .cfg given as the first "
              "argument does the same.")
@click.option("--weights", type=click.Path(), help="Darknet .weights; default <cfg stem>.weights beside "
              "the cfg, then the cache.")
@click.option("--names", type=click.Path(), help="Class names, one per line (default: COCO).")
@click.option("--thresh", default=0.25, show_default=True, type=UNIT, help="Confidence threshold.")
@click.option("--nms", "nms_threshold", default=0.45, show_default=True, type=UNIT, help="NMS IoU threshold.")
@click.option("--letterbox/--resize", default=True, show_default=True,
              help="Keep aspect ratio with grey padding (Darknet detector test) or stretch.")
@imgsz_option
@click.option("--out", type=click.Path(file_okay=False), help="Folder for annotated images "
              "(default: a new runs/detect/expN).")
@click.option("--json", "as_json", is_flag=True, help="Print detections as JSON on stdout.")
@click.option("--backend", type=click.Choice(["numpy", "onnx"]), default="numpy", show_default=True,
              help="Inference engine: the numpy engine, or onnxruntime on an ONNX export of the model.")
@click.option("--force", is_flag=True, help="Overwrite existing annotated images in --out.")
def detect(images, cfg, weights, names, thresh, nms_threshold, letterbox, imgsz, out, as_json, backend, force):
    """Detect objects in IMAGES (files or folders) and write annotated copies.

    \b
    Examples:
      dncompress detect samples/dog.jpg
      dncompress detect my.cfg my.weights photos/ --thresh 0.4
      dncompress detect small-w4a8.dnq samples/ --json
    """
    images, cfg, weights = split_model_arguments(images, cfg, weights)
    paths = expand_images(images)
    import cv2

    from ..detect import check_heads, detect_image, draw, load_image, read_names
    from ..fsutil import StagedWrites, check_outputs
    from ..progress import counted
    from ..prune.classes import names_beside
    net = open_network(cfg, weights, tuple(imgsz) if imgsz else None)
    check_heads(net.heads, net.file)
    class_names = read_names(names or names_beside(net.file), net.heads[0].classes)  # prune --classes
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
    with StagedWrites(out_dir) as staged:
        for path, target in zip(counted(paths, "detect", progress_lines if len(paths) > 1 else None), targets):
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


@click.command("fetch")
@click.argument("model", default=DEFAULT_MODEL)
@click.option("--force", is_flag=True, help="Download again even when the cached file verifies.")
def fetch_command(model, force):
    """Download MODEL's official weights into the cache and verify their sha256.

    \b
    Examples:
      dncompress fetch
      dncompress fetch yolov3-tiny --force
    """
    from ..zoo import fetch
    path = fetch(model, progress=progress_lines, force=force)
    click.echo(str(path))
