"""`dncompress quantize`: convolutions to BITS, written in one of five formats, with a size and fidelity report."""
from __future__ import annotations

import click

from ..errors import DncompressError
from ..layers.conv import refuse_xnor
from ..quant.calibrate import METHODS
from .common import echo_err, open_network, print_comparison
from .options import force_option, model_arguments

FORMAT_NAMES = ["packed", "darknet-q", "darknet", "onnx", "onnx-int8"]


def parse_act_bits(text: str) -> int | None:
    if text.lower() == "none":
        return None
    if not text.isdigit() or not 2 <= int(text) <= 8:
        raise DncompressError(f"--act-bits {text} must be 2..8 or none")
    return int(text)


@click.command("quantize")
@model_arguments
@click.option("--bits", default=8, show_default=True, type=int, help="Weight bits, 2..8.")
@click.option("--act-bits", default="8", show_default=True, help="Activation (conv input) bits 2..8, or none "
              "for weights-only quantization.")
@click.option("--per-channel/--per-tensor", default=True, show_default=True, help="Weight scale granularity.")
@click.option("--calib", type=click.Path(), help="Calibration images (folder or dataset). Default: the 12 sample "
              "images shipped with dncompress; your own images (those the model will see) do better.")
@click.option("--calib-images", default=64, show_default=True, type=click.IntRange(1, 100000),
              help="Calibration images to use (fewer than 32: their mirror images are added).")
@click.option("--rounding", type=click.Choice(["gptq", "nearest"]), default="gptq", show_default=True,
              help="gptq: round each conv's weights to minimize its output error on the calibration inputs "
              "(Hessian error feedback); nearest: round to nearest.")
@click.option("--bias-correction/--no-bias-correction", default=True, show_default=True,
              help="Remove each conv's mean output shift against the float model on the calibration images.")
@click.option("--method", type=click.Choice(METHODS), default="minmax", show_default=True,
              help="Ranges: minmax, percentile, or mse (the range minimizing each conv's output error).")
@click.option("--equalize", type=click.FloatRange(0, 1, min_open=True), help="Activation equalization strength "
              "(0..1]: rescale each conv's output channels (undone in the next convs' weights) so the per-tensor "
              "activation grid fits all channels; 1 equalizes fully, 0.5 shares the spread with the weights.")
@click.option("--keep-first-last", default=8, show_default=True, help="Bits of the first conv and the convs "
              "feeding the detection heads (0: same as --bits).")
@click.option("--budget-bits", type=click.FloatRange(2, 8), help="Mixed precision: average weight bits (weighted "
              "by weight count); each conv's width is chosen from its measured sensitivity (printed). "
              "--keep-first-last convs stay at their width; --bits is ignored.")
@click.option("--format", "fmt", type=click.Choice(FORMAT_NAMES), default="packed", show_default=True,
              help="packed: integer .dnq file (the real size; detect/eval/export read it); darknet-q: "
              "[quantize_convolutional] cfg + on-grid float weights; darknet: plain [convolutional] that "
              "Darknet/OpenCV load (weights only); onnx: QDQ ONNX that reproduces the engine; onnx-int8: QDQ ONNX "
              "that onnxruntime runs on integer kernels (fast; needs --act-bits 8): conv outputs are quantized "
              "too, in the engine's model as in the file.")
@click.option("--opencv", is_flag=True, help="Also write plain Darknet cfg/weights (on-grid weights, float "
              "activations) that OpenCV DNN and Darknet load.")
@click.option("--opset", default=13, show_default=True, type=click.IntRange(13, 21),
              help="ONNX opset (21 stores <= 4-bit weights as INT4 in --format onnx).")
@click.option("-o", "--output", "prefix", help="Output prefix (default <stem>-w<BITS>a<ACT>); the format is "
              "appended: PREFIX-packed.dnq, PREFIX-darknet-q.cfg, ...")
@click.option("--data", "data_path", type=click.Path(), help="Labelled dataset: mAP fp32 vs quantized and "
              "fidelity on it (default: fidelity on the 7 packaged sample images, not used to calibrate).")
@force_option
def quantize_command(cfg, weights, bits, act_bits, per_channel, calib, calib_images, rounding, bias_correction,
                     method, equalize, keep_first_last, budget_bits, fmt, opencv, opset, prefix, data_path, force):
    """Quantize convolutions to BITS (fake quantization the engine, eval and detect reproduce): each conv in
    turn on the quantized network's own inputs, GPTQ rounding and bias correction by default. Prints the
    size before/after and the fidelity to the float model on held-out images.

    \b
    Examples:
      dncompress quantize --bits 4                     # yolov3-tiny, packaged calibration images, .dnq
      dncompress quantize yolov3-tiny --bits 4 --calib my_images/ --data val.txt
      dncompress quantize yolov3-tiny --bits 8 --calib my_images/ --format onnx-int8
    """
    from ..quant.apply import QuantConfig
    from ..quant.workflow import run_quantize
    if not 2 <= bits <= 8:
        raise DncompressError(f"--bits {bits} must be 2..8")
    act = parse_act_bits(act_bits)
    if fmt == "darknet" and act:
        raise DncompressError("--format darknet cannot carry activation quantization (Darknet/OpenCV run "
                              "float activations); add --act-bits none, or use --opencv beside another format")
    net = open_network(cfg, weights)
    refuse_xnor(net, "quantize")
    config = QuantConfig(bits, act, per_channel, method, keep_first_last, bias_correction, rounding,
                         equalize=equalize)
    report = run_quantize(net, [net.file, weights], config, fmt, prefix, calib, calib_images, data_path, opencv,
                          opset, force, progress=echo_err, budget_bits=budget_bits)
    print_quantize_report(report)


def print_quantize_report(report) -> None:
    if report.calib_default:
        click.echo(f"calibrated on the packaged sample images ({report.calib_images} with mirror images); "
                   "calibrating on your own images (--calib DIR) fits the ranges to what the model will see")
    for warning in report.warnings:
        echo_err(f"warning: {warning}")
    if report.sensitivity:
        print_sensitivity(report.sensitivity, report.layer_bits)
    for fmt, paths in report.outputs.items():
        click.echo(f"wrote {' and '.join(paths)} ({fmt}): {report.written_bytes[fmt] / 1e6:.2f} MB")
    widths = sorted(set(report.layer_bits.values()))
    click.echo(f"size: float32 {report.float_bytes / 1e6:.2f} MB -> {report.packed_bytes / 1e6:.2f} MB packed "
               f"({report.float_bytes / report.packed_bytes:.1f}x smaller; weight bits "
               f"{'/'.join(map(str, widths))}); quantized in {report.seconds:.0f} s")
    click.echo(f"measured on {report.fidelity_source}:")
    print_comparison(report.comparison, "the float model")
    if "onnx_int8" in report.comparison:
        click.echo("the onnx-int8 file in onnxruntime:")
        print_comparison(report.comparison["onnx_int8"], "the float model")


def print_sensitivity(sens, chosen: dict[int, int]) -> None:
    """Per conv: weights, relative head error with only that conv at each width, the chosen width."""
    widths = sorted(next(iter(sens.errors.values())))
    click.echo(f"{'layer':>5} {'weights':>9} " + " ".join(f"{f'{b}-bit':>8}" for b in widths) + "  chosen")
    for index, errors in sens.errors.items():
        click.echo(f"{index:>5} {sens.weights[index]:>9,} " + " ".join(f"{errors[b]:8.1e}" for b in widths)
                   + f"  {chosen[index]:>6}")
    total = sum(sens.weights.values())
    click.echo(f"head error (relative, squared) when only that conv is rounded; average "
               f"{sum(chosen[i] * n for i, n in sens.weights.items()) / total:.2f} bits per weight")
