"""The packed format: real integer weights (b bits each) + scales, so the file shows the true size.
Layout in docs/quantization.md: magic, version, JSON header (cfg text, tensor table), then the blobs."""
from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

from ..cfg import parse_cfg, write_cfg
from ..errors import DncompressError
from ..fsutil import atomic_write
from ..network import Network
from ..weights import WeightsHeader
from .apply import LayerCodes
from .quantizers import signed_range

MAGIC = b"DNCPACK\0"
VERSION = 1
PREFIX = struct.Struct("<8sII")  # magic, version, header length


def pack_bits(values: np.ndarray, bits: int) -> bytes:
    """Unsigned values (< 2^bits) as a little-endian bit stream: value i occupies bits i*b .. i*b+b-1,
    so 4-bit values go two per byte (low nibble first) and 2-bit values four per byte."""
    planes = (values.reshape(-1, 1).astype(np.uint8) >> np.arange(bits, dtype=np.uint8)) & 1
    return np.packbits(planes.reshape(-1), bitorder="little").tobytes()


def unpack_bits(data: bytes, bits: int, count: int) -> np.ndarray:
    """Inverse of pack_bits: (count,) int32."""
    planes = np.unpackbits(np.frombuffer(data, np.uint8), bitorder="little")[:count * bits]
    return (planes.reshape(count, bits).astype(np.int32) << np.arange(bits)).sum(axis=1, dtype=np.int32)


def packed_blobs(net: Network, codes: dict[int, LayerCodes]):
    """(tensor table, blobs): codes for quantized weights, float32 for every other tensor."""
    table, blobs, offset = [], [], 0

    def add(entry: dict, blob: bytes) -> None:
        nonlocal offset
        table.append({**entry, "offset": offset, "nbytes": len(blob)})
        blobs.append(blob)
        offset += len(blob)

    for layer in net.layers:
        for name, shape in layer.param_shapes().items():
            entry = {"layer": layer.index, "name": name, "shape": list(shape)}
            code = codes.get(layer.index) if name == "weights" else None
            if code is None:
                add({**entry, "dtype": "float32"}, np.ascontiguousarray(layer.params[name], "<f4").tobytes())
                continue
            add({**entry, "dtype": f"int{code.bits}", "bits": code.bits},
                pack_bits(code.q - signed_range(code.bits)[0], code.bits))
            add({"layer": layer.index, "name": "weights.scale", "shape": list(code.scale.shape),
                 "dtype": "float32"}, np.ascontiguousarray(code.scale, "<f4").tobytes())
    return table, blobs


def write_packed(path: str | Path, net: Network, codes: dict[int, LayerCodes]) -> None:
    """Write `net` (its cfg, the codes of quantized weights, everything else as float32)."""
    table, blobs = packed_blobs(net, codes)
    h = net.header
    header = json.dumps({"cfg": write_cfg(net.sections), "weights_header": [h.major, h.minor, h.revision, h.seen],
                         "tensors": table}).encode()
    atomic_write(path, [PREFIX.pack(MAGIC, VERSION, len(header)), header, *blobs])


def read_packed(path: str | Path) -> Network:
    """The network a packed file describes, weights dequantized (bit-identical to the on-grid floats)."""
    data = Path(path).read_bytes()
    if len(data) < PREFIX.size or data[:8] != MAGIC:
        raise DncompressError("not a dncompress packed file (bad magic)", str(path), "header")
    _, version, length = PREFIX.unpack_from(data)
    if version != VERSION:
        raise DncompressError(f"packed format version {version}; this dncompress reads {VERSION}", str(path))
    header = json.loads(data[PREFIX.size:PREFIX.size + length])
    body = memoryview(data)[PREFIX.size + length:]
    net = Network(parse_cfg(header["cfg"], str(path)), str(path))
    net.header = WeightsHeader(*header["weights_header"])
    tensors: dict[tuple[int, str], np.ndarray] = {}
    for t in header["tensors"]:
        blob = bytes(body[t["offset"]:t["offset"] + t["nbytes"]])
        if len(blob) != t["nbytes"]:
            raise DncompressError(f"file is truncated in layer {t['layer']} {t['name']}", str(path))
        count = int(np.prod(t["shape"]))
        if t["dtype"] == "float32":
            tensors[t["layer"], t["name"]] = np.frombuffer(blob, "<f4", count).reshape(t["shape"]).copy()
        else:
            q = unpack_bits(blob, t["bits"], count) + signed_range(t["bits"])[0]
            tensors[t["layer"], t["name"]] = q.reshape(t["shape"])
    for layer in net.layers:
        names = layer.param_shapes()
        missing = [name for name in names if (layer.index, name) not in tensors]
        if missing:
            raise DncompressError(f"no {missing[0]} for layer {layer.index} [{layer.type}]", str(path))
        if names:
            params = {name: tensors[layer.index, name] for name in names}
            if (layer.index, "weights.scale") in tensors:
                scale = tensors[layer.index, "weights.scale"]
                params["weights"] = LayerCodes(params["weights"], scale, 0).dequantize()
            layer.set_params(**params)
    return net
