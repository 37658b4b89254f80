"""The packed format (.dnq): the true size of a quantized model. Layout (little-endian):

    b"DNCQ", uint32 version (1), uint32 cfg length, cfg text (UTF-8, the [quantize_convolutional] cfg)
    per layer with parameters, in cfg order:
      [quantize_convolutional]: uint32 scale count (O or 1), float64 scales, float32 biases (O),
                                 weights as unsigned integers q + (2^(bits-1) - 1), `bitw` bits each,
                                 bit-packed MSB first and padded to a whole byte
      other layers:             their .weights tensors as float32
    a layer's integers are exactly its on-grid weights: reading gives bit-identical float weights.
"""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from ..cfg import parse_cfg, write_cfg
from ..engine.quantize import channel_max_abs, dequantize, quantize, signed_range, symmetric_scale
from ..fsutil import atomic_write, open_framed
from ..network import Network

MAGIC = b"DNCQ"
VERSION = 1


def pack_bits(values: np.ndarray, bits: int) -> bytes:
    """Unsigned integers < 2^bits -> a bitstream, `bits` per value, MSB first."""
    as_bits = np.unpackbits(values.astype(">u2").view(np.uint8).reshape(-1, 2), axis=1)[:, 16 - bits:]
    return np.packbits(as_bits.reshape(-1)).tobytes()


def unpack_bits(data: bytes, bits: int, count: int) -> np.ndarray:
    stream = np.unpackbits(np.frombuffer(data, np.uint8))[: count * bits].reshape(count, bits)
    return (stream.astype(np.uint32) << np.arange(bits - 1, -1, -1, dtype=np.uint32)).sum(axis=1)


def layer_integers(layer) -> tuple[np.ndarray, np.ndarray]:
    """(integer weights, scales) of an affine [quantize_convolutional]: its on-grid weights exactly."""
    w = layer.params["weights"]
    scale = symmetric_scale(channel_max_abs(w, layer.per_channel), layer.bitw)
    return quantize(w, scale, 0, *signed_range(layer.bitw)), scale.reshape(-1).astype("<f8")


def packed_chunks(net: Network) -> list[bytes]:
    """The byte chunks of the packed file of `net`."""
    cfg = write_cfg(net.sections).encode()
    chunks = [MAGIC, struct.pack("<II", VERSION, len(cfg)), cfg]
    for layer in net.layers:
        if not layer.param_shapes():
            continue
        if layer.is_quantized and layer.method == "affine" and not layer.batch_normalize:
            q, scales = layer_integers(layer)
            offset = signed_range(layer.bitw)[1]
            chunks += [struct.pack("<I", scales.size), scales.tobytes(), layer.params["biases"].astype("<f4").tobytes(),
                       pack_bits((q + offset).reshape(-1), layer.bitw)]
        else:
            chunks += [layer.params[name].astype("<f4").tobytes() for name in layer.param_shapes()]
    return chunks


def write_packed(net: Network, path: str | Path) -> int:
    """Write `net` packed; returns the file size in bytes."""
    net.check_params(str(path))
    atomic_write(path, packed_chunks(net))
    return Path(path).stat().st_size


def read_packed(path: str | Path) -> Network:
    """A Network from a .dnq file."""
    path = Path(path)
    cfg, reader = open_framed(path, MAGIC, VERSION, "packed")
    net = Network(parse_cfg(cfg, str(path)), str(path))
    take = reader.take
    for layer in net.layers:
        shapes = layer.param_shapes()
        if not shapes:
            continue
        if layer.is_quantized and layer.method == "affine" and not layer.batch_normalize:
            n_scales = int(take(1, "<u4")[0])
            scales = take(n_scales, "<f8")
            biases = take(layer.filters).copy()
            count = int(np.prod(shapes["weights"]))
            packed = take((count * layer.bitw + 7) // 8, "u1").tobytes()
            q = unpack_bits(packed, layer.bitw, count).astype(np.int64) - signed_range(layer.bitw)[1]
            weights = dequantize(q.reshape(shapes["weights"]), scales.reshape(-1, 1, 1, 1), 0)
            layer.set_params(biases=biases, weights=weights)
        else:
            layer.set_params(**{name: take(int(np.prod(shape))).reshape(shape).copy() for name, shape in shapes.items()})
    reader.finish()
    net.check_params(str(path))
    return net


def packed_size(net: Network) -> int:
    """Bytes write_packed would produce, without writing."""
    return sum(len(chunk) for chunk in packed_chunks(net))
