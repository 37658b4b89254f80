"""The quantization results of docs/quantization.md: mAP@0.5 on a labelled dataset for fp32 and several
post-training settings (round-to-nearest vs GPTQ, with bias correction), the time each quantization took,
packed file sizes, and onnxruntime latency of the int8 export vs fp32.

    python tools/quant_table.py --data ../shared/data/voc765/eval200.txt \
        --calib ../shared/data/voc765/fit565.txt --calib-images 64 [--only W4A8]

To choose a setting, point --data at held-out calibration-set images (never the evaluation set) and add
--head-error N (relative squared error of the raw head outputs against the float model on its first N
images) and --bootstrap K (spread of each row's mAP@0.5 minus the float model's over K resamples of the
images: how far two rows can land apart by the choice of images alone).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import time

import numpy as np
import onnx


from dncompress.data import Dataset, calibration_batch
from dncompress.eval import evaluate, fidelity_dataset, predict
from dncompress.export.onnx import build_onnx, onnx_forward
from dncompress.quant.apply import QuantConfig, quantize_network
from dncompress.quant.packed import packed_size
from dncompress.quant.ort_int8 import engine_int8_onnx, onnxruntime_int8
from dncompress.quant.qdq import build_qdq_onnx
from experiment import add_arguments, load_experiment

def settings() -> list[tuple[str, QuantConfig]]:
    rows = []
    for name, bits, act in (("W8A8", 8, 8), ("W4A8", 4, 8), ("W4 weights only", 4, None), ("W3A8", 3, 8)):
        rows += [(f"{name}, nearest", QuantConfig(bits, act)),
                 (f"{name}, nearest + bias correction", QuantConfig(bits, act, bias_correction=True)),
                 (f"{name}, GPTQ + bias correction", QuantConfig(bits, act, bias_correction=True, rounding="gptq"))]
    rows += [("W8A8, percentile ranges, GPTQ + bias correction", QuantConfig(8, 8, method="percentile",
                                                                            bias_correction=True, rounding="gptq")),
             ("W8A8, mse ranges, GPTQ + bias correction", QuantConfig(8, 8, method="mse", bias_correction=True,
                                                                    rounding="gptq")),
             ("W4A8, mse ranges (output error), nearest", QuantConfig(4, 8, method="mse")),
             ("W4A8, mse ranges, GPTQ + bias correction", QuantConfig(4, 8, method="mse", bias_correction=True,
                                                                    rounding="gptq"))]
    for strength in (0.25, 0.5, 0.75, 1.0):
        rows += [(f"W8A8, equalized {strength:g}, nearest", QuantConfig(8, 8, equalize=strength)),
                 (f"W8A8, equalized {strength:g}, GPTQ + bias correction",
                  QuantConfig(8, 8, bias_correction=True, rounding="gptq", equalize=strength))]
    for name, config in list(rows):
        if config.bits == 8 and config.act_bits == 8 and config.method == "minmax":
            rows.append((f"{name}, int8 outputs (onnx-int8)", dataclasses.replace(config, out_bits=8)))
    return rows


def head_error(forward, images: np.ndarray, reference: list[np.ndarray], batch: int = 8) -> float:
    """sum ||y - y_float||^2 / sum ||y_float||^2 over the raw head outputs of `images`."""
    outputs = [np.concatenate(o) for o in zip(*(forward(images[s:s + batch]) for s in range(0, len(images), batch)))]
    return float(sum(np.square(o - r).sum() for o, r in zip(outputs, reference))
                 / sum(np.square(r).sum() for r in reference))


class Bootstrap:
    """mAP@0.5 of a row minus the float model's over `resamples` draws of the dataset's images with
    replacement, the same draws for every row (seeded); the float model's figures are computed once."""

    def __init__(self, base, dataset: Dataset, classes: int, resamples: int):
        rng = np.random.default_rng(0)
        self.samples = []
        for _ in range(resamples):
            pick = rng.integers(len(dataset), size=len(dataset))
            self.samples.append((pick, Dataset([dataset.items[i] for i in pick], dataset.names, dataset.source,
                                               dataset.classes)))
        self.classes = classes
        self.base = [self.map50(base, pick, sample) for pick, sample in self.samples]

    def map50(self, preds, pick, sample) -> float:
        return evaluate([preds[i] for i in pick], sample, self.classes).map50

    def gap(self, preds) -> tuple[float, float]:
        """(mean, standard deviation) of the row's mAP@0.5 minus the float model's."""
        gaps = [self.map50(preds, pick, sample) - b for (pick, sample), b in zip(self.samples, self.base)]
        return float(np.mean(gaps)), float(np.std(gaps))


def latency_pair(a, b, x, rounds: int = 15) -> tuple[float, float]:
    """Medians of two forward callables timed in alternation, so machine load hits both alike."""
    for f in (a, b):
        f(x)
    times = ([], [])
    for _ in range(rounds):
        for f, t in zip((a, b), times):
            start = time.perf_counter()
            f(x)
            t.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times[0]), statistics.median(times[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser, calib_images=32)
    parser.add_argument("--only", help="run the settings whose name is in this ;-separated list")
    parser.add_argument("--quantize-static", action="store_true", help="also evaluate onnxruntime's quantize_static "
                        "on the weights of W8A8 rows")
    parser.add_argument("--no-latency", action="store_true")
    parser.add_argument("--head-error", type=int, default=0, metavar="N", help="also print the relative squared "
                        "head error against the float model on the first N images of --data")
    parser.add_argument("--bootstrap", type=int, default=0, metavar="K", help="also print the mean and spread of "
                        "each row's mAP@0.5 minus the float model's over K resamples of --data's images")
    args = parser.parse_args()
    exp = load_experiment(args)
    net, size, dataset, calib, classes = exp.net, exp.size, exp.dataset, exp.calib, exp.classes
    base, reference = exp.base_preds, exp.reference
    result = evaluate(base, dataset, classes)
    held = calibration_batch(args.data, args.head_error, *size) if args.head_error else None
    held_reference = [np.concatenate(o) for o in zip(*(net.forward(held[i:i + 8]) for i in range(0, len(held), 8)))] \
        if args.head_error else None
    bootstrap = Bootstrap(base, dataset, classes, args.bootstrap) if args.bootstrap else None

    def extra(forward, preds) -> str:
        """The optional columns of one row."""
        text = f" head error {head_error(forward, held, held_reference):.2e} |" if args.head_error else ""
        if args.bootstrap:
            text += " mAP@0.5 - fp32: {:+.4f} +- {:.4f} |".format(*bootstrap.gap(preds))
        return text
    print("| model | mAP@0.5 | mAP@0.5:0.95 | fidelity mAP@0.5 | packed size | quantization time |")
    print("| --- | --- | --- | --- | --- | --- |")
    print(f"| fp32 | {result.map50:.4f} | {result.map50_95:.4f} | 1.0000 | {net.param_count() * 4 / 1e6:.2f} MB | |")
    for name, config in settings():
        if args.only and name not in args.only.split(";"):
            continue
        start, cpu_start = time.perf_counter(), time.process_time()
        q = quantize_network(net, config, calib)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        preds = predict(q.forward, q.heads, dataset, *size, progress=False)
        r = evaluate(preds, dataset, classes)
        print(f"| {name} | {r.map50:.4f} | {r.map50_95:.4f} | {evaluate(preds, reference, classes).map50:.4f} "
              f"| {packed_size(q) / 1e6:.2f} MB | {seconds:.0f} s, {cpu:.0f} s CPU (load {os.getloadavg()[0]:.1f}) |"
              + extra(q.forward, preds), flush=True)
        if config.out_bits:
            # the onnx-int8 file: onnxruntime's integer kernels on the same quantized tensors and ranges
            forward = onnx_forward(engine_int8_onnx(q))
            preds_int8 = predict(forward, q.heads, dataset, *size, progress=False)
            r = evaluate(preds_int8, dataset, classes)
            agreement = evaluate(preds_int8, fidelity_dataset(preds, dataset), classes).map50
            print(f"| same, the onnx-int8 file in onnxruntime (fidelity to the engine's model {agreement:.4f}) "
                  f"| {r.map50:.4f} | {r.map50_95:.4f} | {evaluate(preds_int8, reference, classes).map50:.4f} | | |"
                  + extra(forward, preds_int8), flush=True)
        if args.quantize_static and config.bits == 8 and config.act_bits == 8 and not config.out_bits:
            forward = onnx_forward(onnx.load_from_string(onnxruntime_int8(q, calib)))
            preds_int8 = predict(forward, q.heads, dataset, *size, progress=False)
            r = evaluate(preds_int8, dataset, classes)
            print(f"| same, onnxruntime quantize_static (its own ranges, every tensor) | {r.map50:.4f} "
                  f"| {r.map50_95:.4f} | {evaluate(preds_int8, reference, classes).map50:.4f} | | |", flush=True)
    if args.no_latency:
        return
    x = calib[:1]
    fp32 = onnx_forward(build_onnx(net), threads=2)
    w8a8 = quantize_network(net, QuantConfig(8, 8), calib)
    int8 = quantize_network(net, QuantConfig(8, 8, out_bits=8), calib)
    for name, model in (("W8A8 QDQ on conv inputs only (--format onnx)", build_qdq_onnx(w8a8)),
                        ("W8A8 onnx-int8 (--format onnx-int8)", engine_int8_onnx(int8)),
                        ("W8A8 quantize_static", onnx.load_from_string(onnxruntime_int8(w8a8, calib)))):
        ms_q, ms_f = latency_pair(onnx_forward(model, threads=2), fp32, x)
        print(f"onnxruntime {name}: {ms_q:.1f} ms vs fp32 {ms_f:.1f} ms ({ms_f / ms_q:.2f}x faster; load "
              f"{os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
