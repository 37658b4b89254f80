"""Progress of long library work, reported through one callback type; only the command layer shows it
(`cli/common.ProgressLines`: in place on a terminal, one line per step in logs and pipes). Nothing here
prints.

    progress("calibration statistics: images 1-8 of 40")     a free-form step
    progress("predict", 16, 200)                            step 16 of 200 of a counted task
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

# progress(message, done=None, total=None)
Progress = Callable[..., None]
T = TypeVar("T")


def silent(message: str, done: int | None = None, total: int | None = None) -> None:
    """The default sink: report nowhere."""


def sink(progress) -> Progress:
    """`progress` if it is a callback, else `silent` (None, and the True/False flags older callers pass)."""
    return progress if callable(progress) else silent


def counted(items: Iterable[T], label: str, progress, total: int | None = None) -> Iterator[T]:
    """Yield `items`, reporting `label` done/total after each one is handled."""
    report = sink(progress)
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    for done, item in enumerate(items, 1):
        yield item
        report(label, done, total)
