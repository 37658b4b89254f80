"""Parse and write Darknet .cfg text: ordered sections, keys as written, comments and line numbers kept."""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

from .errors import DncompressError


@dataclasses.dataclass
class Section:
    """One `[type]` block. `options` keeps key order and raw string values; `comments` are the lines
    (comments, blanks) before the header, `inner_comments` those among its keys (written after them)."""

    type: str
    options: dict[str, str] = dataclasses.field(default_factory=dict)
    line: int = 0
    file: str | None = None
    comments: list[str] = dataclasses.field(default_factory=list)
    inner_comments: list[str] = dataclasses.field(default_factory=list)
    key_lines: dict[str, int] = dataclasses.field(default_factory=dict)
    # constructs Darknet accepts with a warning (a duplicate key); Network adds them to its `warnings`
    warnings: list[str] = dataclasses.field(default_factory=list)

    def where(self, key: str | None = None) -> str:
        """`line N [type]` for error messages; the key's own line when known."""
        line = self.key_lines.get(key, self.line) if key else self.line
        return f"line {line} [{self.type}]" + (f" {key}" if key else "")

    def error(self, message: str, key: str | None = None) -> DncompressError:
        return DncompressError(message, self.file, self.where(key))

    def get_str(self, key: str, default: str | None = None) -> str:
        if key in self.options:
            return self.options[key]
        if default is None:
            raise self.error(f"missing required key '{key}'")
        return default

    def get_int(self, key: str, default: int | None = None) -> int:
        if key not in self.options:
            if default is None:
                raise self.error(f"missing required key '{key}'")
            return default
        raw = self.options[key]
        try:
            return int(raw)
        except ValueError:
            try:
                value = float(raw)
            except ValueError:
                raise self.error(f"'{key}={raw}' is not an integer", key) from None
            if not value.is_integer():
                raise self.error(f"'{key}={raw}' is not an integer", key) from None
            return int(value)

    def get_float(self, key: str, default: float | None = None) -> float:
        if key not in self.options:
            if default is None:
                raise self.error(f"missing required key '{key}'")
            return default
        try:
            value = float(self.options[key])
        except ValueError:
            raise self.error(f"'{key}={self.options[key]}' is not a number", key) from None
        if not math.isfinite(value):
            raise self.error(f"'{key}={self.options[key]}' is not a finite number", key)
        return value

    def get_ints(self, key: str, default: list[int] | None = None) -> list[int]:
        if key not in self.options:
            if default is None:
                raise self.error(f"missing required key '{key}'")
            return list(default)
        try:
            return [int(v) for v in self.options[key].split(",") if v.strip()]
        except ValueError:
            raise self.error(f"'{key}={self.options[key]}' is not a list of integers", key) from None

    def get_floats(self, key: str, default: list[float] | None = None) -> list[float]:
        if key not in self.options:
            if default is None:
                raise self.error(f"missing required key '{key}'")
            return list(default)
        try:
            values = [float(v) for v in self.options[key].split(",") if v.strip()]
        except ValueError:
            raise self.error(f"'{key}={self.options[key]}' is not a list of numbers", key) from None
        if not all(math.isfinite(v) for v in values):
            raise self.error(f"'{key}={self.options[key]}' holds a non-finite number", key)
        return values

    def copy(self) -> "Section":
        """A copy to transform; the parse warnings stay with the original (shown once)."""
        return dataclasses.replace(self, options=dict(self.options), comments=list(self.comments),
                                   inner_comments=list(self.inner_comments), key_lines=dict(self.key_lines),
                                   warnings=[])


def _is_comment(line: str) -> bool:
    return line == "" or line[0] in "#;"


def parse_cfg(text: str, file: str | None = None) -> list[Section]:
    """Sections of a cfg text, in order. Raises DncompressError naming the file and line."""
    sections: list[Section] = []
    pending: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if _is_comment(line):
            pending.append(raw.rstrip())
            continue
        if line.startswith("["):
            if not line.endswith("]") or len(line) < 3:
                raise DncompressError(f"malformed section header '{line}'; expected e.g. [convolutional]",
                                      file, f"line {number}")
            sections.append(Section(line[1:-1].strip().lower(), line=number, file=file, comments=pending))
            pending = []
            continue
        if not sections:
            raise DncompressError(f"'{line}' stands before any [section]; a cfg starts with [net]",
                                  file, f"line {number}")
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not key:
            raise DncompressError(f"expected key=value, got '{line}'", file,
                                  f"line {number} [{sections[-1].type}]")
        section = sections[-1]
        if key in section.options:
            # Darknet's option_find and OpenCV's importer take the first value; warn, as Darknet does
            section.warnings.append(f"{file or '<cfg>'}:line {number} [{section.type}]: duplicate key '{key}' "
                                    f"(first set on line {section.key_lines[key]}); the first value is used, as "
                                    "in Darknet")
            section.inner_comments.extend(pending + [f"# {line}  (duplicate key, ignored)"])
            pending = []
            continue
        # a comment after the value (`filters=16 # x`): Darknet's atoi/atof stop at it, OpenCV strips it
        section.options[key] = "".join(value.split("#", 1)[0].split())
        section.key_lines[key] = number
        section.inner_comments.extend(pending)
        pending = []
    if not sections:
        raise DncompressError("no sections found; a Darknet cfg starts with [net]", file)
    sections[-1].inner_comments.extend(pending)
    return sections


def read_cfg(path: str | Path) -> list[Section]:
    """Read and parse a cfg file; errors name the file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DncompressError(f"cannot read cfg: {err.strerror}", str(path)) from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise DncompressError("not UTF-8 text; is this really a Darknet .cfg?", str(path),
                              f"line {line}") from None
    return parse_cfg(text, str(path))


def write_cfg(sections: list[Section]) -> str:
    """Cfg text for `sections`; comments before a header or among keys stay where they were."""
    out: list[str] = []
    for section in sections:
        out.extend(section.comments)
        out.append(f"[{section.type}]")
        out.extend(f"{key}={value}" for key, value in section.options.items())
        out.extend(section.inner_comments)
    return "\n".join(out) + "\n"
