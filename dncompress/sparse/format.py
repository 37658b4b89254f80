"""The sparse format (.dns): a weight-pruned model stored without its zeros. Layout (little-endian):

    b"DNCS", uint32 version (1), uint32 cfg length, cfg text (UTF-8), the Darknet .weights header
    per layer with parameters, in cfg order:
      [convolutional]: its biases (and BN scales, rolling_mean, rolling_variance) as float32, then
                       uint8 encoding and the weights (O, R = C/groups*k*k) row-major:
        0 dense   float32 O*R
        1 groups  uint8 g; one bit per g-wide group of each row (ceil(R/g) per row, a row's last group
                  may be shorter), MSB first, padded to a whole byte; float32 values of every weight in a
                  set group, row-major
        2 csr     uint32 row offsets (O+1); uint16 column indices (uint32 when R > 65535); float32 values
      other layers:    their .weights tensors as float32
The writer picks, per conv, the smallest of dense, groups (g = the pruning group; 1 = a bit per weight)
and csr. A weight is stored when its bits are not all zero (so -0.0 survives): reading is bit-exact.
"""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from ..cfg import parse_cfg, write_cfg
from ..errors import DncompressError
from ..fsutil import ByteReader, atomic_write, read_framed
from ..graph import is_plain_conv
from ..network import Network
from ..weights import parse_header

MAGIC = b"DNCS"
VERSION = 1
DENSE, GROUPS, CSR = 0, 1, 2
ENCODINGS = {DENSE: "dense", GROUPS: "groups", CSR: "csr"}


def stored(rows: np.ndarray) -> np.ndarray:
    """Which float32 weights carry information: any bit set (+0.0 is the only value left out)."""
    return rows.view(np.uint32) != 0


def encode_groups(rows: np.ndarray, group: int) -> list[bytes]:
    out_c, width = rows.shape
    padded = np.zeros((out_c, -(-width // group) * group), bool)
    padded[:, :width] = stored(rows)
    kept = padded.reshape(out_c, -1, group).any(axis=2)
    elements = np.repeat(kept, group, axis=1)[:, :width]
    return [struct.pack("<BB", GROUPS, group), np.packbits(kept.ravel()).tobytes(),
            rows[elements].astype("<f4").tobytes()]


def encode_csr(rows: np.ndarray) -> list[bytes]:
    mask = stored(rows)
    offsets = np.concatenate([[0], np.cumsum(mask.sum(axis=1))]).astype("<u4")
    index_type = "<u2" if rows.shape[1] <= 65536 else "<u4"
    columns = np.nonzero(mask)[1].astype(index_type)
    return [struct.pack("<B", CSR), offsets.tobytes(), columns.tobytes(), rows[mask].astype("<f4").tobytes()]


def encode_weights(weights: np.ndarray, group: int) -> list[bytes]:
    """The smallest encoding of a conv's weights (O, C, k, k)."""
    rows = np.ascontiguousarray(weights.reshape(len(weights), -1), np.float32)
    candidates = [[struct.pack("<B", DENSE), rows.astype("<f4").tobytes()], encode_groups(rows, group),
                  encode_csr(rows)]
    return min(candidates, key=lambda chunks: sum(len(c) for c in chunks))


def sparse_chunks(net: Network, group: int = 1, encodings: dict[int, str] | None = None) -> list[bytes]:
    """The byte chunks of the sparse file of `net`; `encodings` (if given) receives each conv's encoding."""
    cfg = write_cfg(net.sections).encode()
    chunks = [MAGIC, struct.pack("<II", VERSION, len(cfg)), cfg, net.header.to_bytes()]
    for layer in net.layers:
        names = list(layer.param_shapes())
        chunks += [layer.params[name].astype("<f4").tobytes() for name in names if name != "weights"]
        if "weights" in names:
            weights = layer.params["weights"]
            if is_plain_conv(layer):
                encoded = encode_weights(weights, group)
                chunks += encoded
                if encodings is not None:
                    encodings[layer.index] = ENCODINGS[encoded[0][0]]
            else:
                chunks.append(weights.astype("<f4").tobytes())
    return chunks


def write_sparse(net: Network, path: str | Path, group: int = 1) -> int:
    """Write `net` in the sparse format; returns the file size in bytes."""
    net.check_params(str(path))
    atomic_write(path, sparse_chunks(net, group))
    return Path(path).stat().st_size


def sparse_size(net: Network, group: int = 1) -> int:
    """Bytes write_sparse would produce, without writing."""
    return sum(len(chunk) for chunk in sparse_chunks(net, group))


class _Reader(ByteReader):
    """The body of a .dns file: ByteReader plus the encoded conv weights."""

    def weights(self, shape: tuple[int, ...]) -> np.ndarray:
        out_c, width = shape[0], int(np.prod(shape[1:]))
        encoding = int(self.take(1, "u1")[0])
        if encoding == DENSE:
            return self.take(out_c * width).reshape(shape).copy()
        rows = np.zeros((out_c, width), np.float32)
        if encoding == GROUPS:
            group = int(self.take(1, "u1")[0])
            if not group:
                raise DncompressError("group size 0 in a groups-encoded layer", self.path)
            count = out_c * -(-width // group)
            kept = np.unpackbits(self.take((count + 7) // 8, "u1"))[:count].astype(bool).reshape(out_c, -1)
            mask = np.repeat(kept, group, axis=1)[:, :width]
        elif encoding == CSR:
            offsets = self.take(out_c + 1, "<u4").astype(np.int64)
            if offsets[0] != 0 or np.any(np.diff(offsets) < 0) or offsets[-1] > out_c * width:
                raise DncompressError("corrupt csr row offsets", self.path)
            columns = self.take(int(offsets[-1]), "<u2" if width <= 65536 else "<u4").astype(np.int64)
            if columns.size and columns.max() >= width:
                raise DncompressError("csr column index out of range", self.path)
            mask = np.zeros((out_c, width), bool)
            mask[np.repeat(np.arange(out_c), np.diff(offsets)), columns] = True
        else:
            raise DncompressError(f"unknown weight encoding {encoding}", self.path)
        rows[mask] = self.take(int(mask.sum()))
        return rows.reshape(shape)


def read_sparse(path: str | Path) -> Network:
    """A Network (dense weights with their zeros) from a .dns file."""
    path = Path(path)
    data, cfg, offset = read_framed(path, MAGIC, VERSION, "sparse")
    net = Network(parse_cfg(cfg, str(path)), str(path))
    net.header = parse_header(data[offset:], str(path))
    reader = _Reader(data, offset + net.header.nbytes, path)
    for layer in net.layers:
        shapes = layer.param_shapes()
        params = {name: reader.take(int(np.prod(shape))).reshape(shape).copy()
                  for name, shape in shapes.items() if name != "weights"}
        if "weights" in shapes:
            params["weights"] = reader.weights(shapes["weights"]) if is_plain_conv(layer) else \
                reader.take(int(np.prod(shapes["weights"]))).reshape(shapes["weights"]).copy()
        if params:
            layer.set_params(**params)
    reader.finish()
    net.check_params(str(path))
    return net
