"""onnxruntime latency of yolov3-tiny: the float ONNX export vs our QDQ int8 (W8A8) and int4-weight exports,
and, for reference, onnxruntime's own quantize_static (QDQ on conv outputs too, which its int8 kernels need).

    python tools/quant_bench.py --calib ../shared/data/coco128/images [--runs 30] [--threads 2]

Prints median ms per 416x416 forward pass and file sizes; all models timed in the same run.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import median_ms  # noqa: E402


def ort_static_int8(model, net, images):
    """onnxruntime.quantization.quantize_static (QDQ, per channel, uint8 activations) of the float export."""
    import tempfile

    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from dncompress.detect import load_image, preprocess

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"images": preprocess(load_image(p), net.info.width, net.info.height)}
                                 for p in images])

        def get_next(self):
            return next(self.batches, None)

    with tempfile.TemporaryDirectory() as tmp:
        onnx.save(model, f"{tmp}/fp32.onnx")
        quantize_static(f"{tmp}/fp32.onnx", f"{tmp}/int8.onnx", Reader(), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        return onnx.load(f"{tmp}/int8.onnx")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calib", required=True)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import numpy as np
    from dncompress.cli import expand_images, open_network
    from dncompress.export.onnx import build_onnx, onnx_forward
    from dncompress.export.qdq import build_qdq_onnx
    from dncompress.quant.apply import QuantConfig, quantize_model

    net = open_network(None, None)
    images = expand_images((args.calib,))[:8]
    models = {"fp32": build_onnx(net)}
    models["W8A8 int8 QDQ"] = build_qdq_onnx(quantize_model(net, QuantConfig(8, 8), images)[0])
    models["W4A8 int4 QDQ (opset 21)"] = build_qdq_onnx(quantize_model(net, QuantConfig(4, 8), images)[0], 21,
                                                       int4=True)
    models["onnxruntime quantize_static"] = ort_static_int8(models["fp32"], net, images)
    x = np.random.default_rng(0).random((1, *net.input_shape), dtype=np.float32)
    base = None
    for name, model in models.items():
        forward = onnx_forward(model, args.threads)
        ms = median_ms(lambda: forward(x), args.runs)
        base = base or ms
        print(f"{name:<26} {ms:7.1f} ms  ({ms / base:.2f}x fp32)  {len(model.SerializeToString()) / 1e6:6.2f} MB")


if __name__ == "__main__":
    main()
