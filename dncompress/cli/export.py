"""`dncompress export`: ONNX, checked in onnxruntime before it is written."""
from __future__ import annotations

from pathlib import Path

import click

from .common import open_network
from .options import imgsz_option, model_arguments


@click.command("export")
@model_arguments
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="ONNX file (default: <cfg stem>.onnx).")
@click.option("--opset", default=13, show_default=True, type=click.IntRange(13, 21))
@click.option("--decode", is_flag=True, help="Add the YOLO decode: outputs boxes (cx, cy, w, h relative to "
              "the input) and scores (objectness * class).")
@click.option("--nms", is_flag=True, help="With --decode: add NonMaxSuppression (output selected_indices).")
@click.option("--dynamic-batch", is_flag=True, help="Make the batch dimension symbolic.")
@imgsz_option
@click.option("--force", is_flag=True, help="Overwrite an existing output file.")
def export_command(cfg, weights, output, opset, decode, nms, dynamic_batch, imgsz, force):
    """Write CFG as ONNX (BN folded into Conv), then check it with onnxruntime against the numpy engine.

    \b
    Examples:
      dncompress export yolov3-tiny -o yolov3-tiny.onnx
      dncompress export small.cfg small.weights --decode --nms --dynamic-batch
    """
    from ..fsutil import check_outputs
    from ..model_io import save_model
    net = open_network(cfg, weights, tuple(imgsz) if imgsz else None)
    output = Path(output or f"{Path(net.file).stem}.onnx")
    check_outputs([output], [net.file, net.weights_file], force)
    parity: dict = {}
    save_model(net, [output], "onnx", opset=opset, decode=decode, nms=nms, dynamic_batch=dynamic_batch,
               parity=parity)
    diff = parity["max_diff"]
    click.echo(f"wrote {output} ({output.stat().st_size / 1e6:.2f} MB, opset {opset}); onnxruntime vs numpy "
               f"engine max diff {diff:.2e} of the output scale")
