"""Option types and the option decorators several commands share (model arguments, --imgsz, --force, ...)."""
from __future__ import annotations

import math

import click


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
