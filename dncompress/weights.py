"""Read and write Darknet .weights: a small header, then every layer's float32 tensors back to back."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from .errors import DncompressError
from .fsutil import atomic_write


@dataclasses.dataclass
class WeightsHeader:
    """major, minor, revision (int32); `seen` is int64 when major*10+minor >= 2, int32 before."""

    major: int = 0
    minor: int = 2
    revision: int = 5
    seen: int = 0

    @property
    def seen_is_int64(self) -> bool:
        return self.major * 10 + self.minor >= 2

    @property
    def nbytes(self) -> int:
        return 12 + (8 if self.seen_is_int64 else 4)

    def to_bytes(self) -> bytes:
        head = np.array([self.major, self.minor, self.revision], dtype="<i4").tobytes()
        return head + np.array([self.seen], dtype="<i8" if self.seen_is_int64 else "<i4").tobytes()


def parse_header(data: bytes, file: str | None = None) -> WeightsHeader:
    """Decode the header at the start of `data`; rejects sizes and versions that cannot be Darknet's."""
    if len(data) < 16:
        raise DncompressError(f"file is {len(data)} bytes, shorter than a Darknet weights header",
                              file, "header")
    major, minor, revision = (int(v) for v in np.frombuffer(data, "<i4", 3))
    if not (0 <= major < 1000 and 0 <= minor < 1000 and 0 <= revision < 1_000_000):
        raise DncompressError(f"implausible header version {major}.{minor}.{revision}; not a Darknet "
                              ".weights file", file, "header")
    header = WeightsHeader(major, minor, revision)
    if len(data) < header.nbytes:
        raise DncompressError(f"file is {len(data)} bytes, shorter than the {header.nbytes}-byte header of "
                              f"version {major}.{minor}", file, "header")
    dtype = "<i8" if header.seen_is_int64 else "<i4"
    header.seen = int(np.frombuffer(data, dtype, 1, offset=12)[0])
    return header


def read_weights(path: str | Path) -> tuple[WeightsHeader, np.ndarray, int]:
    """Header, the flat float32 payload, and the count of stray bytes after the last whole float."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DncompressError(f"cannot read weights: {err.strerror}", str(path)) from None
    header = parse_header(data, str(path))
    payload = data[header.nbytes:]
    whole = len(payload) // 4 * 4
    return header, np.frombuffer(payload[:whole], "<f4").copy(), len(payload) - whole


class WeightsReader:
    """Hands out consecutive float32 tensors from a payload, naming the layer that ran out."""

    def __init__(self, payload: np.ndarray, file: str | None = None, stray_bytes: int = 0):
        self.payload = payload
        self.offset = 0
        self.file = file
        self.stray_bytes = stray_bytes

    def take(self, count: int, where: str) -> np.ndarray:
        end = self.offset + count
        if end > self.payload.size:
            left = self.payload.size - self.offset
            raise DncompressError(f"weights ran out: needs {count} floats, only {left} left; the "
                                  "file is truncated or belongs to another cfg", self.file, where)
        values = self.payload[self.offset:end]
        if not np.isfinite(values).all():
            bad = np.flatnonzero(~np.isfinite(values))
            raise DncompressError(f"{bad.size} non-finite values (nan/inf), the first at float "
                                  f"{self.offset + bad[0]} of the payload; the file is corrupt",
                                  self.file, where)
        self.offset = end
        return values

    def finish(self) -> None:
        """Error when floats are left over: the cfg and weights do not belong together."""
        left = self.payload.size - self.offset
        if left or self.stray_bytes:
            raise DncompressError(f"{left} floats and {self.stray_bytes} bytes left over after the last layer; the weights belong to "
                                  "another cfg (or pass a cfg with the same layers)", self.file)


def weights_payload(header: WeightsHeader, tensors: list[np.ndarray]) -> list[bytes | np.ndarray]:
    """The chunks of a .weights file: header, then every tensor as little-endian float32."""
    return [header.to_bytes()] + [np.asarray(t, "<f4").ravel() for t in tensors]


def write_weights(path: str | Path, header: WeightsHeader, tensors: list[np.ndarray]) -> None:
    """A .weights file, written atomically."""
    atomic_write(path, weights_payload(header, tensors))
