"""What several commands share: opening a model, option decorators, the comparison lines."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import click

from ..errors import DncompressError
from ..network import DEFAULT_MAX_ACTIVATION_MB, MAX_ACTIVATION_ENV, Network  # noqa: F401 (used by cli/__init__)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


class Number(click.ParamType):
    """A finite float, optionally within [low, high] (ends open with low_open/high_open). click's FloatRange
    lets nan through (every comparison with nan is false: `--thresh nan` kept nothing, `eval --conf nan`
    scored 0); inf is refused too. Errors are one `error:` line (cli Group)."""

    name = "number"

    def __init__(self, low: float | None = None, high: float | None = None, low_open: bool = False,
                 high_open: bool = False):
        self.low, self.high, self.low_open, self.high_open = low, high, low_open, high_open

    def describe(self) -> str:
        left = "-inf" if self.low is None else f"{self.low:g}"
        right = "inf" if self.high is None else f"{self.high:g}"
        return f"{'(' if self.low_open or self.low is None else '['}{left}, {right}{')' if self.high_open or self.high is None else ']'}"

    def convert(self, value, param, ctx) -> float:
        if isinstance(value, float) and math.isfinite(value) and self._inside(value):
            return value
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value} is not a finite number", param, ctx)
        if not self._inside(number):
            self.fail(f"{value} is not in {self.describe()}", param, ctx)
        return number

    def _inside(self, x: float) -> bool:
        above = self.low is None or (x > self.low if self.low_open else x >= self.low)
        below = self.high is None or (x < self.high if self.high_open else x <= self.high)
        return above and below


# thresholds (confidence, IoU): [0, 1]
UNIT = Number(0, 1)


def model_arguments(command):
    """CFG (path or packaged name; default yolov3-tiny) and WEIGHTS (default: beside the cfg, then the cache)."""
    command = click.argument("weights", required=False, type=click.Path())(command)
    return click.argument("cfg", required=False)(command)


def imgsz_option(command):
    return click.option("--imgsz", nargs=2, type=click.IntRange(1, 16384),
                        help="Network input W H (default: the cfg's).")(command)


def force_option(command):
    return click.option("--force", is_flag=True, help="Overwrite existing outputs.")(command)


def data_option(help_text: str = "Dataset: report mAP before/after and fidelity.", required: bool = False):
    return click.option("--data", "data_path", type=click.Path(), required=required, help=help_text)


def prefix_option(default_text: str):
    return click.option("-o", "--output", "prefix", help=f"Output prefix (default {default_text}).")


class ProgressLines:
    """Shows the library's progress reports (dncompress.progress) on stderr: on a terminal, a counted task
    (`done`/`total`) updates one line in place, ended when done == total; in logs and pipes, and for
    free-form messages, one line per report."""

    def __init__(self):
        self.open = False   # a terminal line awaiting its newline

    def __call__(self, message: str, done: int | None = None, total: int | None = None) -> None:
        text = message if done is None else f"{message} {done}/{total}" if total else f"{message} {done}"
        if done is not None and sys.stderr.isatty():
            click.echo(f"\r\x1b[K{text}", err=True, nl=False)
            self.open = done != total
            if not self.open:
                click.echo("", err=True)
        else:
            self.end()
            click.echo(text, err=True)

    def end(self) -> None:
        """Finish a line left open (an error or Ctrl-C mid-task), so the next output starts on its own line."""
        if self.open:
            click.echo("", err=True)
            self.open = False


# the one renderer every command hands to the library (ended by the cli Group when a command stops)
progress_lines = ProgressLines()


def open_network(cfg: str | None, weights: str | None, imgsz: tuple[int, int] | None = None,
                 load_weights: bool = True) -> Network:
    """model_io.open_model with the global --max-activation-mb, printing the cfg's warnings (unused
    fields) and any download progress on stderr."""
    from ..model_io import open_model
    return echo_warnings(open_model(cfg, weights, imgsz, load_weights=load_weights,
                                    max_activation_mb=activation_limit(), progress=progress_lines))


def echo_warnings(net: Network) -> Network:
    """Print what the library collected while reading the model (Network.warnings) as `warning:` lines."""
    for warning in net.warnings:
        click.echo(f"warning: {warning}", err=True)
    return net


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


def backend_forward(net: Network, backend: str):
    """The forward callable of the chosen backend: the numpy engine, or onnxruntime on an export of it
    (batch dimension symbolic, since eval runs several images per pass)."""
    if backend == "numpy":
        return net.forward
    from ..export.onnx import build_onnx, onnx_forward
    return onnx_forward(build_onnx(net, dynamic_batch=True))


def print_comparison(report: dict, reference: str = "the original") -> None:
    """mAP before/after (with labels) and fidelity, as `compare_models` returns them."""
    if "map50" in report:
        a, b = report["map50"]
        click.echo(f"mAP@0.5 {a:.4f} -> {b:.4f}; mAP@0.5:0.95 {report['map50_95'][0]:.4f} -> "
                   f"{report['map50_95'][1]:.4f}")
    if "fidelity_map50" in report:
        click.echo(f"fidelity to {reference} (mAP@0.5 of its detections): {report['fidelity_map50']:.4f}")


def echo_err(text: str) -> None:
    click.echo(text, err=True)
