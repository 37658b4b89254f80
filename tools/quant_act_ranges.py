"""Where W8A8 loses accuracy: activation ranges of every conv input by several calibrators, compared by the
error they cause on *held-out* calibration-set images (never on the evaluation set).

    python tools/quant_act_ranges.py --calib ../shared/data/voc765/fit565.txt --calib-images 64 --held-out 128

Calibration: the first --calib-images images of --calib; held out: the next --held-out images of the same
list. Weights stay float, so only the 8-bit activation grid is measured. Prints, per conv, the relative
squared head error with only that conv's input quantized (min-max), then for each calibrator (ours and
onnxruntime's MinMax / Entropy / Percentile, the latter two being TensorRT's and the common clipping idea)
the head error and the fidelity mAP@0.5 (to the float model's detections) with every conv input quantized.
"""
from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np

from dncompress.data import Dataset, calibration_batch, load_dataset
from dncompress.engine.quantize import affine_params, fake_quantize_float32, unsigned_range
from dncompress.eval import evaluate, fidelity_dataset, predict
from dncompress.export.onnx import build_onnx
from dncompress.model_io import open_model
from dncompress.network import Network
from dncompress.quant.equalize import equalize_activations


def conv_inputs(net: Network, images: np.ndarray, batch: int = 8) -> dict[int, tuple[float, float]]:
    """Min and max of every conv's input over `images` (float network)."""
    ranges: dict[int, tuple[float, float]] = {}

    def run(layer, xs):
        if layer.type == "convolutional":
            lo, hi = ranges.get(layer.index, (np.inf, -np.inf))
            ranges[layer.index] = (min(lo, float(xs[0].min())), max(hi, float(xs[0].max())))
        return layer.forward(xs)
    for start in range(0, len(images), batch):
        net.forward(images[start:start + batch], keep=set(), run=run)
    return ranges


def quantized_forward(net: Network, ranges: dict[int, tuple[float, float]], bits: int = 8):
    """Forward with each conv input in `ranges` fake-quantized (uint8 over the range widened to hold 0)."""
    def run(layer, xs):
        if layer.index in ranges:
            scale, zero = affine_params(*ranges[layer.index], bits)
            xs = [fake_quantize_float32(xs[0], scale, zero, *unsigned_range(bits))] + xs[1:]
        return layer.forward(xs)
    return lambda x: net.forward(x, run=run)


def head_error(forward, images: np.ndarray, reference: list[np.ndarray], batch: int = 8) -> float:
    outputs = [forward(images[s:s + batch]) for s in range(0, len(images), batch)]
    outputs = [np.concatenate(o) for o in zip(*outputs)]
    return float(sum(np.square(o - r).sum() for o, r in zip(outputs, reference))
                 / sum(np.square(r).sum() for r in reference))


def ort_ranges(net: Network, calib: np.ndarray, method: str) -> dict[int, tuple[float, float]]:
    """onnxruntime's calibrator `method` on the float ONNX export: the range of each conv's input tensor."""
    import onnx
    from onnxruntime.quantization.calibrate import CalibrationDataReader, CalibrationMethod, create_calibrator
    model = onnx.shape_inference.infer_shapes(build_onnx(net, dynamic_batch=True))
    tensor_of = {int(n.name[4:].split("_")[0]): n.input[0] for n in model.graph.node if n.op_type == "Conv"}
    images = iter(calib[i:i + 1] for i in range(len(calib)))

    class Reader(CalibrationDataReader):
        def get_next(self):
            x = next(images, None)
            return None if x is None else {"images": x}

    options = {"MinMax": {}, "Entropy": {"num_bins": 2048, "num_quantized_bins": 128},
               "Percentile": {"num_bins": 2048, "percentile": 99.999, "symmetric": False}}[method]
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder, "float.onnx")
        onnx.save(model, source)
        calibrator = create_calibrator(source, ["Conv"], str(Path(folder, "augmented.onnx")),
                                       getattr(CalibrationMethod, method), extra_options=options)
        calibrator.collect_data(Reader())
        data = calibrator.compute_data()
    return {i: tuple(float(np.asarray(v).reshape(-1)[0]) for v in data[t].range_value) for i, t in tensor_of.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cfg", default="yolov3-tiny")
    parser.add_argument("--calib", required=True)
    parser.add_argument("--calib-images", type=int, default=64)
    parser.add_argument("--held-out", type=int, default=128)
    parser.add_argument("--methods", default="MinMax,Entropy,Percentile")
    parser.add_argument("--no-per-layer", action="store_true")
    parser.add_argument("--equalize", default="0.5,1", help="strengths of activation equalization to try "
                        "(quant/equalize.py), each with min-max ranges and with onnxruntime's Entropy")
    args = parser.parse_args()
    net = open_model(args.cfg)
    size = (net.info.width, net.info.height)
    full = load_dataset(args.calib)
    calib = calibration_batch(args.calib, args.calib_images, *size)
    held = Dataset(full.items[args.calib_images:args.calib_images + args.held_out], full.names, full.source)
    held_images = np.concatenate([calibration_batch(args.calib, args.calib_images + 64, *size)[args.calib_images:]])
    reference = net.forward(held_images)
    base = predict(net.forward, net.heads, held, *size, progress=False)
    fid_set = fidelity_dataset(base, held)
    classes = net.heads[0].classes

    def fidelity(forward) -> float:
        return evaluate(predict(forward, net.heads, held, *size, progress=False), fid_set, classes).map50

    ours = conv_inputs(net, calib)
    print(f"calibration: {args.calib} images 0..{args.calib_images - 1}; held out: the next {len(held)} "
          f"(head error on the first {len(held_images)}); load {os.getloadavg()[0]:.1f}", flush=True)
    if not args.no_per_layer:
        print("| conv | input range (min-max) | head error, only this input at 8 bits |")
        print("| --- | --- | --- |")
        for index, (lo, hi) in ours.items():
            e = head_error(quantized_forward(net, {index: (lo, hi)}), held_images, reference)
            print(f"| {index} | [{lo:.3g}, {hi:.3g}] | {e:.2e} |", flush=True)
    candidates = {"ours: min-max (engine)": (net, ours)}
    for method in filter(None, args.methods.split(",")):
        candidates[f"onnxruntime {method}"] = (net, ort_ranges(net, calib, method))
    for strength in filter(None, args.equalize.split(",")):
        equalized = equalize_activations(net, calib, float(strength))
        candidates[f"equalized {strength}, min-max"] = (equalized, conv_inputs(equalized, calib))
        candidates[f"equalized {strength}, onnxruntime Entropy"] = (equalized, ort_ranges(equalized, calib, "Entropy"))
    print("| calibrator | head error | fidelity mAP@0.5 | ranges (conv: low..high) |")
    print("| --- | --- | --- | --- |")
    for name, (model, ranges) in candidates.items():
        forward = quantized_forward(model, ranges)
        text = " ".join(f"{i}:{lo:.2g}..{hi:.3g}" for i, (lo, hi) in ranges.items())
        print(f"| {name} | {head_error(forward, held_images, reference):.2e} | {fidelity(forward):.4f} | {text} |",
              flush=True)


if __name__ == "__main__":
    main()
