"""The `quantize` command as a library workflow: default calibration images, output names, writing the
chosen format, and a report (sizes, fidelity to the float model on held-out images, mAP with a dataset).
Nothing here prints; progress goes through a callback."""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..data import calibration_batch, load_dataset
from ..errors import DncompressError
from ..eval import compare_models
from ..fsutil import check_outputs
from ..model_io import FORMATS as MODEL_FORMATS
from ..network import Network
from ..zoo import samples_folder
from .apply import QuantConfig, layer_bits, quantize_network
from .mixed import Sensitivity, allocate, sensitivity
from .packed import packed_size

# the formats quantize writes (model_io.FORMATS: files, writers)
FORMATS = {name: list(MODEL_FORMATS[name].suffixes) for name in ("packed", "darknet-q", "darknet", "onnx", "onnx-int8")}
# few calibration images: add their mirror images (more input positions for ranges and Hessians)
FLIP_BELOW = 32
SENSITIVITY_IMAGES = 8


def default_calibration() -> Path:
    """12 COCO images shipped with dncompress: calibration that works out of the box."""
    return samples_folder() / "coco12" / "images"


def default_holdout() -> Path:
    """Darknet's 7 sample images: never used to calibrate by default, so fidelity on them is held out."""
    return samples_folder()


def output_names(stem: str, config: QuantConfig, fmt: str, prefix: str | None, opencv: bool,
                 budget_bits: float | None = None) -> dict[str, list[str]]:
    """Files per format: <stem>-w<bits>a<act>-<format>.<suffix> unless `prefix` is given; the format is in
    the name so that runs with different --format never collide."""
    bits = f"{budget_bits:g}avg" if budget_bits else config.bits
    base = prefix or f"{stem}-w{bits}a{config.act_bits or 'f'}"
    names = {fmt: [f"{base}-{fmt}{suffix}" for suffix in FORMATS[fmt]]}
    if opencv and fmt != "darknet":
        names["darknet"] = [f"{base}-darknet{suffix}" for suffix in FORMATS["darknet"]]
    return names


@dataclasses.dataclass
class QuantizeReport:
    outputs: dict[str, list[str]]
    float_bytes: int                  # the float32 .weights size
    written_bytes: dict[str, int]     # per format, on disk
    packed_bytes: int                 # integers + scales + biases + cfg
    calib_source: str
    calib_images: int
    calib_default: bool
    fidelity_source: str
    comparison: dict                  # compare_models(): fidelity_map50, and map50/map50_95 with labels
    seconds: float
    layer_bits: dict[int, int]
    warnings: list[str]
    sensitivity: Sensitivity | None = None


def load_calibration(net: Network, calib: str | None, count: int) -> tuple[np.ndarray, str, bool]:
    """(images (N, 3, H, W), where they came from, whether they are the packaged default)."""
    source = Path(calib) if calib else default_calibration()
    batch = calibration_batch(source, count, net.info.width, net.info.height, channels=net.info.channels)
    if len(batch) < FLIP_BELOW:
        batch = np.concatenate([batch, batch[..., ::-1]])
    return batch, str(source), calib is None


def detects_nothing(net: Network, calib: np.ndarray, conf: float = 0.25) -> bool:
    from ..detect import decode_image
    for start in range(0, len(calib), 8):
        outputs = net.forward(calib[start:start + 8])
        for i in range(len(outputs[0])):
            scores = decode_image(net.heads, [o[i] for o in outputs])[1]
            if (scores >= conf).any():
                return False
    return True


def run_quantize(net: Network, inputs: list[str | None], config: QuantConfig, fmt: str, prefix: str | None,
                 calib: str | None, calib_images: int, data: str | None, opencv: bool = False, opset: int = 13,
                 force: bool = False, progress: Callable[[str], None] | None = None,
                 budget_bits: float | None = None) -> QuantizeReport:
    """Quantize `net`, write `fmt` (and plain Darknet files with `opencv`), measure against the float model.
    With `budget_bits`, per-conv widths come from a sensitivity measurement on the calibration images."""
    if fmt not in FORMATS:
        raise DncompressError(f"unknown format '{fmt}'; use {', '.join(FORMATS)}")
    if fmt == "darknet" and config.act_bits:
        raise DncompressError("--format darknet cannot carry activation quantization (Darknet/OpenCV run "
                              "float activations); add --act-bits none")
    layer_bits(net, config)                     # refuses unquantizable layers before any work
    if fmt == "onnx-int8":
        if config.act_bits != 8:
            raise DncompressError("--format onnx-int8 runs on onnxruntime's uint8 x int8 kernels: it needs "
                                  "--act-bits 8 (weights 2..8 bits are stored in int8)")
        # integer convs requantize their outputs: the engine's model quantizes them too, so it is the file
        config = dataclasses.replace(config, out_bits=8)
    outputs = output_names(Path(net.file or "model").stem, config, fmt, prefix, opencv, budget_bits)
    check_outputs([p for paths in outputs.values() for p in paths], inputs, force)
    start = time.perf_counter()
    warnings = []
    images, calib_source, calib_default = None, "", False
    if (config.act_bits or config.bias_correction or config.rounding == "gptq" or budget_bits or fmt == "onnx-int8"
            or config.equalize):
        images, calib_source, calib_default = load_calibration(net, calib, calib_images)
    elif calib:
        warnings.append("--calib is not used: weights-only round-to-nearest without bias correction needs none")
    if images is not None and detects_nothing(net, images):
        warnings.append(f"the float model detects nothing (confidence >= 0.25) on the calibration images in "
                        f"{calib_source}; ranges may not fit the images you run it on")
    sens = None
    if budget_bits:
        sens = sensitivity(net, images[:SENSITIVITY_IMAGES], progress=progress)
        config = dataclasses.replace(config, layer_bits=allocate(sens, budget_bits, fixed_widths(net, config)))
    quantized = quantize_network(net, config, images, progress)
    bits = layer_bits(net, config)
    written = write_formats(quantized, outputs, images, opset)
    holdout = data or str(default_holdout())
    dataset = load_dataset(holdout)
    held_out = calibration_batch(holdout, 8, net.info.width, net.info.height, channels=net.info.channels)
    if not data and detects_nothing(net, held_out):
        warnings.append(f"the float model detects nothing on the sample images in {holdout}, so the fidelity "
                        "below is meaningless; pass --data with images it detects objects on")
    comparison = compare_models(net, quantized, dataset, progress=False)
    if "onnx-int8" in outputs:
        # measured from the file too: the engine's model and onnxruntime differ where float sums round apart
        comparison["onnx_int8"] = compare_models(net, onnx_candidate(outputs["onnx-int8"][0], quantized), dataset,
                                                 progress=False)
    return QuantizeReport(outputs, net.param_count() * 4, written, packed_size(quantized), calib_source,
                          0 if images is None else len(images), calib_default, holdout, comparison,
                          time.perf_counter() - start, bits,
                          warnings, sens)


def fixed_widths(net: Network, config: QuantConfig) -> dict[int, int]:
    """The convs --keep-first-last holds at its width while the budget is spread over the others."""
    if not config.keep_first_last:
        return {}
    everything = layer_bits(net, dataclasses.replace(config, bits=0))
    return {i: b for i, b in everything.items() if b}


def onnx_candidate(path: str, quantized: Network):
    """An ONNX file in the shape compare_models wants: forward (onnxruntime) and the heads to decode."""
    from ..export.onnx import onnx_forward
    return Candidate(quantized.heads, quantized.info, onnx_forward(path))


@dataclasses.dataclass
class Candidate:
    heads: list
    info: object
    forward: Callable


def write_formats(quantized: Network, outputs: dict[str, list[str]], calib: np.ndarray, opset: int) -> dict[str, int]:
    """Write each format's files (model_io, all or none); returns bytes on disk per format."""
    from ..model_io import save_models
    save_models(quantized, outputs, calib=calib, opset=opset)
    return {fmt: sum(Path(p).stat().st_size for p in paths) for fmt, paths in outputs.items()}
