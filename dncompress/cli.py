"""The `dncompress` command: thin click wrappers that parse options, call the library and print."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click
import cv2

from . import __version__
from .detect import check_heads, detect_image, draw, load_image, read_names
from .errors import DncompressError
from .fsutil import StagedWrites, check_outputs
from .network import DEFAULT_MAX_ACTIVATION_MB, MAX_ACTIVATION_ENV, Network
from .zoo import DEFAULT_MODEL, fetch, find_weights, resolve_cfg

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
    """Resolve a cfg name, find (or fetch) its weights, and build the network."""
    cfg_path = resolve_cfg(cfg or DEFAULT_MODEL)
    weights_path = find_weights(cfg_path, weights)
    width, height = imgsz if imgsz else (None, None)
    ctx = click.get_current_context(silent=True)
    limit = ctx.find_root().params.get("max_activation_mb") if ctx else None
    if limit is not None and not 0 < limit < float("inf"):
        raise DncompressError(f"--max-activation-mb {limit} must be a positive number")
    return Network.from_cfg(cfg_path, weights_path, width, height, limit)


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
@click.option("--imgsz", nargs=2, type=int, help="Network input W H (default: the cfg's).")
@click.option("--out", type=click.Path(file_okay=False), help="Folder for annotated images "
              "(default: a new runs/detect/expN).")
@click.option("--json", "as_json", is_flag=True, help="Print detections as JSON on stdout.")
@click.option("--force", is_flag=True, help="Overwrite existing annotated images in --out.")
def detect(images, cfg, weights, names, thresh, nms_threshold, letterbox, imgsz, out, as_json, force):
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
    results = []
    # annotated images appear only once every image succeeded: a bad image or Ctrl-C leaves none
    with click.progressbar(paths, label="detect", file=sys.stderr,
                           hidden=len(paths) < 2 or not sys.stderr.isatty()) as bar, \
            StagedWrites(out_dir) as staged:
        for path, target in zip(bar, targets):
            img = load_image(path)
            dets = detect_image(net.forward, net.heads, img, net.info.width, net.info.height, thresh,
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
