"""Opening and saving models: one table of formats (files, reader, writer, options that apply), so that
every command, tool and test loads and writes a model the same way.

    open_model("yolov3-tiny")                       packaged cfg, weights beside it / cached / fetched
    open_model("small.cfg", "small.weights", imgsz=(320, 320))
    open_model("model-w4a8-packed.dnq")             cfg and weights in one file
    save_model(net, "out/small")                    out/small.cfg + out/small.weights
    save_model(net, "small.onnx", opset=17)         checked in onnxruntime before it is written
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from pathlib import Path

from .errors import DncompressError
from .fsutil import atomic_write_many
from .network import Network
from .progress import Progress
from .zoo import DEFAULT_MODEL, find_weights, resolve_cfg

Chunks = bytes | Iterable[bytes]


@dataclasses.dataclass(frozen=True)
class ModelFormat:
    """One way a model is stored. `suffixes`: the files written, in order; `read`: path -> Network for the
    self-contained formats (None: opened as a cfg plus WEIGHTS, or not readable); `files(net, paths,
    **options)` -> {path: bytes}; `write_options`: the keyword options `save_model` passes on."""

    name: str
    suffixes: tuple[str, ...]
    description: str
    files: Callable[..., dict[Path, Chunks]]
    read: Callable[[Path], Network] | None = None
    resizable: bool = False           # --imgsz applies when opening
    write_options: frozenset[str] = frozenset()


def _darknet_files(net: Network, paths: list[Path]) -> dict[Path, Chunks]:
    """cfg + float32 .weights; [quantize_convolutional] written as plain convs with their on-grid weights."""
    if any(layer.is_quantized for layer in net.layers):
        from .quant.apply import plain_convolutional
        net = plain_convolutional(net)
    return _darknet_q_files(net, paths)


def _darknet_q_files(net: Network, paths: list[Path]) -> dict[Path, Chunks]:
    """cfg + .weights as they are (quantized sections kept: dncompress reads them, Darknet does not)."""
    return net.darknet_files(*paths)


def _packed_files(net: Network, paths: list[Path]) -> dict[Path, Chunks]:
    from .quant.packed import packed_chunks
    net.check_params(str(paths[0]))
    return {paths[0]: packed_chunks(net)}


def _read_packed(path: Path) -> Network:
    from .quant.packed import read_packed
    return read_packed(path)


def _sparse_files(net: Network, paths: list[Path], group: int = 1,
                  encodings: dict[int, str] | None = None) -> dict[Path, Chunks]:
    """`encodings`, if given, receives each conv's encoding (dense, groups, csr)."""
    from .sparse.format import sparse_chunks
    net.check_params(str(paths[0]))
    return {paths[0]: sparse_chunks(net, group, encodings)}


def _read_sparse(path: Path) -> Network:
    from .sparse.format import read_sparse
    return read_sparse(path)


def _onnx_files(net: Network, paths: list[Path], opset: int = 13, decode: bool = False, nms: bool = False,
                dynamic_batch: bool = False, parity: dict | None = None) -> dict[Path, Chunks]:
    """The ONNX graph (quantized convs as QDQ), refused unless onnxruntime reproduces the engine;
    `parity`, if given, receives the difference as parity["max_diff"]."""
    from .export.onnx import build_onnx, check_parity
    build = build_onnx
    if any(layer.is_quantized for layer in net.layers):
        from .quant.qdq import build_qdq_onnx as build
    model = build(net, opset, decode=decode, nms=nms, dynamic_batch=dynamic_batch)
    diff = check_parity(net, model, paths[0], decode, 2 if dynamic_batch else 1)
    if parity is not None:
        parity["max_diff"] = diff
    return {paths[0]: model.SerializeToString()}


def _onnx_int8_files(net: Network, paths: list[Path], calib=None, opset: int = 13) -> dict[Path, Chunks]:
    """The quantized network as a QDQ graph onnxruntime runs on integer kernels (QLinearConv), refused unless
    its outputs agree with the engine's on two of the `calib` images (N, C, H, W)."""
    from .quant.ort_int8 import check_int8, engine_int8_onnx
    model = engine_int8_onnx(net, opset)
    check_int8(net, model, calib[:2], str(paths[0]))
    return {paths[0]: model.SerializeToString()}


FORMATS: dict[str, ModelFormat] = {f.name: f for f in (
    ModelFormat("darknet", (".cfg", ".weights"), "Darknet cfg + float32 weights (Darknet, OpenCV DNN)",
                _darknet_files, resizable=True),
    ModelFormat("darknet-q", (".cfg", ".weights"), "cfg with [quantize_convolutional] + on-grid float32 weights",
                _darknet_q_files, resizable=True),
    ModelFormat("packed", (".dnq",), "quantized weights as bit-packed integers + scales, cfg inside",
                _packed_files, read=_read_packed),
    ModelFormat("sparse", (".dns",), "weights without their zeros (bitmask / CSR per conv), cfg inside",
                _sparse_files, read=_read_sparse, write_options=frozenset({"group", "encodings"})),
    ModelFormat("onnx", (".onnx",), "ONNX (BN folded; quantized convs as QDQ)", _onnx_files,
                write_options=frozenset({"opset", "decode", "nms", "dynamic_batch", "parity"})),
    ModelFormat("onnx-int8", (".onnx",), "ONNX int8: the engine's quantized model as QDQ that onnxruntime fuses into QLinearConv", _onnx_int8_files,
                write_options=frozenset({"calib", "opset"})),
)}
# model files that hold their cfg and weights together
SELF_CONTAINED = {f.suffixes[0]: f for f in FORMATS.values() if f.read}


def format_of(path: str | Path) -> ModelFormat | None:
    """The self-contained format a file's suffix names (.dnq, .dns), else None (a cfg)."""
    return SELF_CONTAINED.get(Path(path).suffix)


def model_paths(model: str | None) -> tuple[Path, ModelFormat | None]:
    """The resolved model file (a packaged name, a cfg, or a self-contained file) and its format."""
    path = resolve_cfg(model or DEFAULT_MODEL)
    return path, format_of(path)


def open_model(model: str | Path | None = None, weights: str | Path | None = None,
               imgsz: tuple[int, int] | None = None, *, load_weights: bool = True,
               max_activation_mb: float | None = None, progress: Progress | None = None) -> Network:
    """A Network from a cfg (path or packaged name; default yolov3-tiny) and its weights (given, else
    beside the cfg, in the cache, or fetched for a known model), or from a self-contained .dnq/.dns file.
    With `load_weights=False` weights are read only when given; a download reports to `progress`. `net.weights_file` names the weights read;
    cfg warnings (unused fields) are in `net.warnings`."""
    path, fmt = model_paths(str(model) if model is not None else None)
    if fmt is not None:
        if imgsz:
            raise DncompressError(f"--imgsz does not apply to a {fmt.name} model; it keeps the input size it was "
                                  "made with", str(path))
        return fmt.read(path)
    if path.suffix == ".onnx":
        raise DncompressError("dncompress does not read ONNX; open the cfg and weights it was exported from",
                              str(path))
    weights_path = find_weights(path, weights, progress=progress) if load_weights or weights else None
    width, height = imgsz if imgsz else (None, None)
    return Network.from_cfg(path, weights_path, width, height, max_activation_mb)


def output_paths(target: str | Path | list, fmt: ModelFormat) -> list[Path]:
    """The files of `fmt` at `target`: a prefix (suffixes added), one of the files, or the list of them."""
    if isinstance(target, (list, tuple)):
        if len(target) != len(fmt.suffixes):
            raise DncompressError(f"the {fmt.name} format writes {len(fmt.suffixes)} files "
                                  f"({', '.join(fmt.suffixes)}), not {len(target)}")
        return [Path(p) for p in target]
    target = Path(target)
    stem = target.with_suffix("") if target.suffix in fmt.suffixes else target
    return [Path(f"{stem}{suffix}") for suffix in fmt.suffixes]


def infer_format(net: Network, target: str | Path | list) -> str:
    """The format a file name asks for: .dnq packed, .dns sparse, .onnx onnx, else Darknet files (darknet-q
    for a network with quantized sections)."""
    suffix = Path(target[0] if isinstance(target, (list, tuple)) else target).suffix
    for fmt in FORMATS.values():
        if suffix == fmt.suffixes[0] and fmt.suffixes[0] != ".cfg":
            return fmt.name
    quantized = any(layer.is_quantized for layer in net.layers)
    return "darknet-q" if quantized else "darknet"


def model_files(net: Network, target: str | Path | list, fmt: str | None = None, **options) -> dict[Path, Chunks]:
    """{path: bytes} of `net` in format `fmt` (inferred from `target`'s suffix when None), not written."""
    name = fmt or infer_format(net, target)
    if name not in FORMATS:
        raise DncompressError(f"unknown format '{name}'; use {', '.join(FORMATS)}")
    spec = FORMATS[name]
    extra = set(options) - spec.write_options
    if extra:
        raise DncompressError(f"{', '.join(sorted(extra))} does not apply to the {name} format")
    return spec.files(net, output_paths(target, spec), **options)


def save_model(net: Network, target: str | Path | list, fmt: str | None = None, **options) -> list[Path]:
    """Write `net` as `fmt` at `target` (a prefix or file name; see model_files); all its files appear, or
    (error, Ctrl-C) none. Returns the paths written."""
    return save_models(net, {fmt or infer_format(net, target): target}, **options)


def save_models(net: Network, targets: dict[str, str | Path | list], **options) -> list[Path]:
    """Several formats of `net` written all-or-nothing: {format: target}. Each option goes to the formats
    that take it (calib to onnx-int8, opset to both ONNX formats, ...)."""
    unknown = set(options) - set().union(*(f.write_options for f in FORMATS.values()))
    if unknown:
        raise DncompressError(f"no format takes the option {', '.join(sorted(unknown))}")
    files: dict[Path, Chunks] = {}
    for name, target in targets.items():
        spec = FORMATS.get(name)
        if spec is None:
            raise DncompressError(f"unknown format '{name}'; use {', '.join(FORMATS)}")
        files.update(model_files(net, target, name, **{k: v for k, v in options.items() if k in spec.write_options}))
    atomic_write_many(files)
    return list(files)
