"""`dncompress quantize`: convolutions to BITS, written in one of four formats."""
from __future__ import annotations

from pathlib import Path

import click

from ..errors import DncompressError
from ..quant.calibrate import METHODS
from ..layers.conv import refuse_xnor
from .common import model_arguments, open_network, print_comparison


def parse_act_bits(text: str) -> int | None:
    if text.lower() == "none":
        return None
    if not text.isdigit() or not 2 <= int(text) <= 8:
        raise DncompressError(f"--act-bits {text} must be 2..8 or none")
    return int(text)

@click.command("quantize")
@model_arguments
@click.option("--bits", type=click.IntRange(2, 8), default=8, show_default=True, help="Weight bits.")
@click.option("--act-bits", default="8", show_default=True, help="Activation (conv input) bits 2..8, or none "
              "for weights-only quantization.")
@click.option("--per-channel/--per-tensor", default=True, show_default=True, help="Weight scale granularity.")
@click.option("--calib", type=click.Path(), help="Calibration images (folder or dataset); needed for "
              "activation ranges and --bias-correction.")
@click.option("--calib-images", default=32, show_default=True, type=click.IntRange(1, 100000))
@click.option("--method", type=click.Choice(METHODS), default="minmax", show_default=True,
              help="Range calibration for weights and activations.")
@click.option("--keep-first-last", default=8, show_default=True, help="Bits of the first conv and the convs "
              "feeding the detection heads (0: same as --bits).")
@click.option("--bias-correction", is_flag=True, help="Remove each layer's mean output shift on --calib.")
@click.option("--format", "fmt", type=click.Choice(["darknet-q", "darknet", "onnx", "packed"]), default="darknet-q",
              show_default=True, help="darknet-q: [quantize_convolutional] cfg + on-grid weights; darknet: plain "
              "[convolutional] (weights only) that Darknet/OpenCV load; onnx: QDQ ONNX; packed: integer .dnq file.")
@click.option("--opset", default=13, show_default=True, type=click.IntRange(13, 21),
              help="ONNX opset (21 stores <= 4-bit weights as INT4).")
@click.option("-o", "--output", "prefix", help="Output prefix (default <stem>-w<BITS>a<ACT>).")
@click.option("--data", "data_path", type=click.Path(), help="Dataset: report mAP fp32 vs quantized, fidelity.")
@click.option("--force", is_flag=True, help="Overwrite existing outputs.")
def quantize_command(cfg, weights, bits, act_bits, per_channel, calib, calib_images, method, keep_first_last,
                     bias_correction, fmt, opset, prefix, data_path, force):
    """Quantize convolutions to BITS (fake quantization the engine, eval and detect reproduce) and write
    them as [quantize_convolutional], plain Darknet, QDQ ONNX or a packed integer file.

    \b
    Examples:
      dncompress quantize yolov3-tiny --bits 8 --calib images/ --format onnx
      dncompress quantize yolov3-tiny --bits 4 --act-bits none --format darknet
      dncompress quantize yolov3-tiny --bits 4 --calib images/ --bias-correction --format packed
    """
    from ..data import calibration_batch, load_dataset
    from ..eval import compare_models
    from ..export.onnx import check_parity, save_onnx
    from ..fsutil import check_outputs
    from ..quant.apply import QuantConfig, plain_convolutional, quantize_network
    from ..quant.packed import packed_size, write_packed
    from ..quant.qdq import build_qdq_onnx
    act = parse_act_bits(act_bits)
    if fmt == "darknet" and act:
        raise DncompressError("--format darknet cannot carry activation quantization (Darknet/OpenCV run "
                              "float activations); add --act-bits none")
    if (act or bias_correction) and not calib:
        raise DncompressError("activation ranges and --bias-correction need calibration images (--calib DIR)")
    net = open_network(cfg, weights)
    refuse_xnor(net, "quantize")
    prefix = prefix or f"{Path(net.file).stem}-w{bits}a{act or 'f'}"
    suffixes = {"darknet-q": [".cfg", ".weights"], "darknet": [".cfg", ".weights"], "onnx": [".onnx"],
                "packed": [".dnq"]}[fmt]
    outputs = [f"{prefix}{s}" for s in suffixes]
    check_outputs(outputs, [net.file, weights], force)
    calib_batch = calibration_batch(calib, calib_images, net.info.width, net.info.height) if calib else None
    config = QuantConfig(bits, act, per_channel, method, keep_first_last, bias_correction)
    quantized = quantize_network(net, config, calib_batch)
    if fmt == "darknet-q":
        quantized.save(*outputs)
    elif fmt == "darknet":
        plain_convolutional(quantized).save(*outputs)
    elif fmt == "onnx":
        model = build_qdq_onnx(quantized, opset)
        check_parity(quantized, model, outputs[0])
        save_onnx(model, outputs[0])
    else:
        write_packed(quantized, outputs[0])
    fp32_mb = net.param_count() * 4 / 1e6
    click.echo(f"wrote {' and '.join(outputs)}: {sum(Path(o).stat().st_size for o in outputs) / 1e6:.2f} MB on disk "
               f"(float32 model {fp32_mb:.2f} MB; packed integers {packed_size(quantized) / 1e6:.2f} MB)")
    if data_path:
        print_comparison(compare_models(net, quantized, load_dataset(data_path)), "the float model")
