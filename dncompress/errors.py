"""The one error type users see: it names the file, the place in it, and what to do."""
from __future__ import annotations


class DncompressError(Exception):
    """A user-facing error: `file:where: message`. The CLI prints it on one line and exits 2."""

    def __init__(self, message: str, file: str | None = None, where: str | None = None):
        self.message = message
        self.file = None if file is None else str(file)
        self.where = where
        super().__init__(str(self))

    def __str__(self) -> str:
        place = ":".join(p for p in (self.file, self.where) if p)
        text = f"{place}: {self.message}" if place else self.message
        return " ".join(text.split("\n"))
