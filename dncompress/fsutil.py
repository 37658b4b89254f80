"""Safe output files: never half-written (temp + rename), never over an input, never over an existing
output without --force."""
from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from .errors import DncompressError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def publish(tmp: str | Path, path: str | Path) -> None:
    """Give a finished temp file the permissions a plain open() would (mkstemp makes it 0600), then
    rename it onto `path` in one step."""
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, path)


def atomic_write(path: str | Path, chunks: bytes | Iterable[bytes | np.ndarray]) -> None:
    """Write to a temp file beside `path`, then rename; an interrupt leaves no partial file."""
    atomic_write_many({path: chunks})


def atomic_write_many(files: dict[str | Path, bytes | Iterable[bytes | np.ndarray]]) -> None:
    """Write several files that belong together (cfg + weights): all temps first, then all renames, so
    an interrupt before the renames leaves none of them."""
    temps = []
    try:
        for path, chunks in files.items():
            path = Path(path)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            temps.append((tmp, path))
            with os.fdopen(fd, "wb") as out:
                for chunk in [chunks] if isinstance(chunks, bytes) else chunks:
                    out.write(chunk if isinstance(chunk, bytes) else np.ascontiguousarray(chunk).tobytes())
        for tmp, path in temps:
            publish(tmp, path)
    except BaseException:
        for tmp, _ in temps:
            Path(tmp).unlink(missing_ok=True)
        raise


def check_outputs(outputs: Iterable[str | Path], inputs: Iterable[str | Path | None] = (),
                  force: bool = False) -> None:
    """Refuse to write over an input ever, or over an existing file unless `force`."""
    resolved_inputs = {Path(p).resolve() for p in inputs if p is not None}
    for out in outputs:
        out = Path(out)
        if out.resolve() in resolved_inputs:
            raise DncompressError("output would overwrite an input file; choose another output name", str(out))
        if out.exists() and not force:
            raise DncompressError("output exists; pass --force to overwrite it", str(out))
        if not out.parent.exists():
            raise DncompressError(f"output folder {out.parent} does not exist", str(out))
