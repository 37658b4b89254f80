"""The `dncompress` command: one module per command, loaded only when that command runs.

Each module parses options, calls the library and prints; nothing below `cli/` imports click for its
user interface. Heavy libraries (OpenCV, onnx, onnxruntime) are imported inside the commands, so that
`dncompress --help` and the error paths stay fast.
"""
from __future__ import annotations

import signal
import threading

import click

from .. import __version__
from ..errors import DncompressError
from ..fsutil import Terminated, raise_terminated
from ..threads import THREADS_ENV, configure as configure_threads
from .common import LazyGroup, MAX_ACTIVATION_ENV, DEFAULT_MAX_ACTIVATION_MB, open_network, progress_lines  # noqa: F401 (re-exported)

# command name -> (module in dncompress.cli, function, its line in `dncompress --help`); the order is the
# order of `dncompress --help`, which imports none of the modules
COMMANDS = {
    "detect": ("detect", "detect", "Detect objects in images; write annotated copies."),
    "classify": ("classify", "classify_command", "Top classes of images with a Darknet classifier."),
    "eval": ("eval", "eval_command", "mAP, per-class AP, speed on a labelled dataset; agreement."),
    "stats": ("stats", "stats_command", "Per-layer params, BFLOPs, memory, energy."),
    "prune": ("prune", "prune_command", "Prune channels (default) or weights; search widths; sensitivity."),
    "quantize": ("quantize", "quantize_command", "Quantize convolutions (GPTQ, calibrated ranges); write formats."),
    "sparsify": ("sparsify", "sparsify_command", "Zero weights (SIMD groups, unstructured) and/or activations."),
    "reparam": ("reparam", "reparam_command", "Fold BN and linear conv branches into single convs."),
    "export": ("export", "export_command", "Write ONNX, checked with onnxruntime."),
    "train": ("train", "train_command", "Train or fine-tune on a YOLO-format dataset."),
    "fetch": ("detect", "fetch_command", "Download official weights into the cache (sha256)."),
}


class Group(LazyGroup):
    """Loads each command's module on demand (COMMANDS); prints DncompressError and bad option values as one
    `error: ...` line with exit code 2 (no traceback, no usage text) and Ctrl-C as one line with exit code 130."""

    table = COMMANDS

    def format_commands(self, ctx, formatter):
        with formatter.section("Commands"):
            formatter.write_dl([(name, summary) for name, (_, _, summary) in COMMANDS.items()])

    def invoke(self, ctx):
        previous = catch_signals()
        try:
            return super().invoke(ctx)
        except DncompressError as err:
            click.echo(f"error: {err}", err=True)
            ctx.exit(2)
        except click.BadParameter as err:  # an option value out of range: one line, like the errors above
            click.echo(f"error: {' '.join(err.format_message().split())}", err=True)
            ctx.exit(2)
        except KeyboardInterrupt as err:
            terminated = isinstance(err, Terminated)
            click.echo(f"{'terminated' if terminated else 'interrupted'}; no partial output was written", err=True)
            ctx.exit(143 if terminated else 130)
        finally:
            progress_lines.end()
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def catch_signals() -> dict:
    """Ctrl-C and SIGTERM as exceptions while a command runs, so that temp files are removed on the way
    out (SIGTERM's default would kill the process and leave them); returns the handlers to restore."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, raise_terminated)
    return {sig: handler for sig, handler in previous.items() if handler is not None}


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="dncompress")
@click.option("--max-activation-mb", type=float, metavar="MB",
              help=f"Refuse networks whose peak activation memory for one image exceeds MB "
              f"(default: ${MAX_ACTIVATION_ENV}, else {DEFAULT_MAX_ACTIVATION_MB:.0f}).")
@click.option("--threads", type=int, metavar="N",
              help=f"Threads of the numpy engine (default: ${THREADS_ENV}, else the cores not busy now: the "
              f"allowed cores minus the 1-minute load average). Example: dncompress --threads 1 detect dog.jpg")
def main(max_activation_mb, threads):
    """Compress Darknet/YOLO detectors: prune, quantize, export, measure.

    A CFG may be a path or a packaged model name (yolov3-tiny, yolov4-tiny, yolov3, yolov2-tiny);
    without one, the default model yolov3-tiny is used and its COCO weights fetched on first use.

    \b
    Examples:
      dncompress detect samples/dog.jpg
      dncompress prune yolov3-tiny.cfg --ratio 0.7
      dncompress quantize yolov3-tiny.cfg --bits 4
      dncompress --threads 1 eval yolov3-tiny --data voc/val.txt
    """
    _count, note = configure_threads(threads)
    if note:
        click.echo(f"note: {note}", err=True)
