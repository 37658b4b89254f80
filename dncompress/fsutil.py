"""Safe output files: never half-written (temp + rename), never over an input, never over an existing
output without --force."""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import struct
import tempfile
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import DncompressError

if TYPE_CHECKING:
    import numpy as np


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def publish(tmp: str | Path, path: str | Path) -> None:
    """Give a finished temp file the permissions a plain open() would (mkstemp makes it 0600), then
    rename it onto `path` in one step."""
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, path)


def _keep_aside(path: Path) -> str | None:
    """A second name (hard link, else a copy) for an existing file about to be replaced, so that the
    replacement can be undone; None when there is no such file."""
    if not path.is_file():
        return None
    fd, backup = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent)
    os.close(fd)
    os.unlink(backup)  # a unique free name for the link
    try:
        os.link(path, backup)
    except OSError:  # no hard links on this file system
        shutil.copy2(path, backup)
    return backup


def publish_all(pairs: list[tuple[str, Path]]) -> None:
    """Rename every (temp, target) pair, all or nothing: when one rename fails, the targets already
    replaced get their previous file back (or disappear if they did not exist) and the temps are removed
    by the caller. Ctrl-C is held meanwhile."""
    with deferred_interrupt():
        backups = [_keep_aside(Path(path)) for _, path in pairs]
        done = 0
        try:
            for tmp, path in pairs:
                publish(tmp, path)
                done += 1
        except BaseException:
            for (_, path), backup in zip(pairs[:done], backups):
                if backup is None:
                    Path(path).unlink(missing_ok=True)
                else:
                    os.replace(backup, path)
            raise
        finally:
            for backup in backups:
                if backup is not None:
                    Path(backup).unlink(missing_ok=True)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C (by `raise_terminated`) so that the same cleanup removes temp files."""


def raise_terminated(signum, frame):
    raise Terminated


@contextlib.contextmanager
def deferred_interrupt() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM until the block ends, so a set of renames is never cut in half; then raise."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    if None in previous.values():  # a handler installed outside Python cannot be restored
        yield
        return
    for sig in previous:
        signal.signal(sig, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if signal.SIGTERM in caught:
        signal.raise_signal(signal.SIGTERM)  # to the restored handler (raise_terminated under the CLI)
    if signal.SIGINT in caught:
        raise KeyboardInterrupt


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
            with deferred_interrupt():  # a temp made but not yet listed would never be removed
                fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
                temps.append((tmp, path))
            with os.fdopen(fd, "wb") as out:
                for chunk in [chunks] if isinstance(chunks, bytes) else chunks:
                    out.write(chunk if isinstance(chunk, bytes) else chunk.tobytes(order="C"))
        publish_all(temps)
    except BaseException as err:
        for tmp, _ in temps:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise write_error(err, Path(err.filename2 or path)) from None
        raise


def write_error(err: OSError, path: Path) -> DncompressError:
    """An OS refusal to write (permissions, disk full, a file where a folder should be) as a user error."""
    return DncompressError(f"cannot write: {err.strerror or err}", str(path))


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


def read_framed(path: str | Path, magic: bytes, version: int, kind: str) -> tuple[bytes, str, int]:
    """A dncompress model file: `magic`, uint32 version, uint32 cfg length, cfg text, body. Returns (all bytes,
    the cfg text, the offset of the body); `kind` names the format in errors."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DncompressError(f"cannot read {kind} model: {err.strerror}", str(path)) from None
    if data[:4] != magic or len(data) < 12:
        raise DncompressError(f"not a dncompress {kind} model (no {magic.decode()} header)", str(path))
    found, cfg_len = struct.unpack_from("<II", data, 4)
    if found != version:
        raise DncompressError(f"{kind} format version {found}; this dncompress reads {version}", str(path))
    if 12 + cfg_len > len(data):
        raise DncompressError(f"the cfg inside claims {cfg_len} bytes, past the end of the file; it is truncated or "
                              "corrupt", str(path))
    try:
        cfg = data[12:12 + cfg_len].decode("utf-8")
    except UnicodeDecodeError:  # a corrupt length field makes part of the binary body look like cfg text
        raise DncompressError("the cfg inside is not UTF-8 text; the file is corrupt", str(path)) from None
    return data, cfg, 12 + cfg_len


class ByteReader:
    """The body of a framed model file (.dnq, .dns) read in order: little-endian arrays taken one after
    another; running out or bytes left over is one error naming the file."""

    def __init__(self, data: bytes, offset: int, path: str | Path):
        self.data, self.offset, self.path = data, offset, str(path)

    def take(self, count: int, dtype: str = "<f4") -> np.ndarray:
        """The next `count` values of `dtype` (a read-only view of the file bytes)."""
        import numpy as np
        size = count * np.dtype(dtype).itemsize
        if self.offset + size > len(self.data):
            raise DncompressError("file ends early; it is truncated", self.path)
        values = np.frombuffer(self.data, dtype, count, self.offset)
        self.offset += size
        return values

    def finish(self) -> None:
        if self.offset != len(self.data):
            raise DncompressError(f"{len(self.data) - self.offset} bytes left over after the last layer", self.path)


def open_framed(path: str | Path, magic: bytes, version: int, kind: str) -> tuple[str, ByteReader]:
    """(the cfg text, a reader at the start of the body) of a framed model file (read_framed)."""
    data, cfg, offset = read_framed(path, magic, version, kind)
    return cfg, ByteReader(data, offset, path)


class StagedWrites:
    """All-or-nothing output set: `write` puts each file in a temp beside its target, and only a clean
    exit renames them all; an error or Ctrl-C removes the temps (and the folder, if this created it)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.created: Path | None = None  # the outermost folder this made, removed again on failure
        self.staged: list[tuple[str, Path]] = []

    def __enter__(self) -> "StagedWrites":
        return self

    def write(self, path: str | Path, data: bytes) -> None:
        path = Path(path)
        try:
            if not self.folder.exists():
                self.created = next(p for p in reversed([self.folder, *self.folder.parents]) if not p.exists())
                self.folder.mkdir(parents=True)
            with deferred_interrupt():
                fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
                self.staged.append((tmp, path))
            with os.fdopen(fd, "wb") as out:
                out.write(data)
        except OSError as err:
            raise write_error(err, path) from None

    def __exit__(self, kind, error, trace) -> None:
        if kind is None:
            try:
                publish_all(self.staged)
                return
            except OSError as err:
                self._discard()
                raise write_error(err, Path(err.filename2 or err.filename or self.folder)) from None
            except BaseException:
                self._discard()
                raise
        self._discard()

    def _discard(self) -> None:
        """Remove the temps, and the folders this made if they are empty again."""
        for tmp, _ in self.staged:
            Path(tmp).unlink(missing_ok=True)
        if self.created is not None:
            for folder in [self.folder, *self.folder.parents]:
                if folder.is_dir():
                    if any(folder.iterdir()):
                        break
                    folder.rmdir()
                if folder == self.created:
                    break
