"""Write a quantized network in one of the output formats; returns the files written."""
from __future__ import annotations

from pathlib import Path

from ..export.onnx import save_onnx
from ..export.qdq import INT4_OPSET, build_qdq_onnx
from ..fsutil import check_outputs
from ..network import Network
from .apply import LayerCodes, to_plain
from .packed import write_packed

FORMATS = ("darknet-q", "darknet", "onnx", "packed")


def output_paths(prefix: str | Path, fmt: str) -> list[Path]:
    prefix = Path(prefix)
    if fmt in ("darknet-q", "darknet"):
        return [prefix.with_name(prefix.name + ".cfg"), prefix.with_name(prefix.name + ".weights")]
    return [prefix.with_name(prefix.name + (".onnx" if fmt == "onnx" else ".dnq"))]


def onnx_opset(codes: dict[int, LayerCodes]) -> int:
    """Opset 21 (int4 weight initializers) when some layer has <= 4 bits, else 13."""
    return INT4_OPSET if any(c.bits <= 4 for c in codes.values()) else 13


def write_quantized(net: Network, codes: dict[int, LayerCodes], prefix: str | Path, fmt: str,
                    inputs=(), force: bool = False) -> list[Path]:
    """Check the outputs (never over an input; existing ones need force), then write them."""
    paths = output_paths(prefix, fmt)
    check_outputs(paths, inputs, force)
    if fmt == "darknet-q":
        net.save(*paths)
    elif fmt == "darknet":
        to_plain(net).save(*paths)
    elif fmt == "packed":
        write_packed(paths[0], net, codes)
    else:
        opset = onnx_opset(codes)
        save_onnx(build_qdq_onnx(net, opset, int4=opset >= INT4_OPSET), paths[0])
    return paths
