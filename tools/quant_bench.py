"""onnxruntime latency of yolov3-tiny: the float ONNX export vs QDQ int8 (W8A8) and int4-weight exports.

    python tools/quant_bench.py --calib ../shared/data/coco128/images [--runs 30] [--threads 2]

Prints median ms per 416x416 forward pass and file sizes; all models timed in the same run.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import median_ms  # noqa: E402


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
    x = np.random.default_rng(0).random((1, *net.input_shape), dtype=np.float32)
    base = None
    for name, model in models.items():
        forward = onnx_forward(model, args.threads)
        ms = median_ms(lambda: forward(x), args.runs)
        base = base or ms
        print(f"{name:<26} {ms:7.1f} ms  ({ms / base:.2f}x fp32)  {len(model.SerializeToString()) / 1e6:6.2f} MB")


if __name__ == "__main__":
    main()
