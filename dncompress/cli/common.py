"""What several commands share: opening a model, the progress renderer, the comparison lines (option types and
decorators: cli/options.py)."""
from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ..errors import DncompressError
from ..limits import DEFAULT_MAX_ACTIVATION_MB, MAX_ACTIVATION_ENV  # noqa: F401 (used by cli/__init__)

if TYPE_CHECKING:
    from ..network import Network
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


class LazyGroup(click.Group):
    """A group whose commands are `table` rows, name -> (module in dncompress.cli, function, ...), each
    module imported only when its command runs or its help is shown."""

    table: dict[str, tuple] = {}

    def list_commands(self, ctx):
        return list(self.table)

    def get_command(self, ctx, name):
        if name not in self.table:
            return None
        module, attr = self.table[name][:2]
        return getattr(importlib.import_module(f"{__package__}.{module}"), attr)


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
