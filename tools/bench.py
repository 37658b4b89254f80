"""Benchmarks that compare dncompress against peers measured in the same run (medians and ratios).

    python tools/bench.py [--runs 30] [--imgsz 416] [--threads 2]

Prints the median latency of a yolov3-tiny forward pass for the numpy engine, onnxruntime (on the
ONNX export) and OpenCV DNN, each as a ratio to OpenCV DNN. Targets live in the README, not in tests.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path


def medians_ms(fns: dict, runs: int, warmup: int = 3, block: int = 10) -> dict:
    """Median ms per function. Backends take turns in blocks of `block` runs: machine load still hits all
    alike, while one backend's idle-spinning worker threads (OpenBLAS) do not slow the next one's
    single run, as strict run-by-run alternation does."""
    times = {name: [] for name in fns}
    while min(len(t) for t in times.values()) < runs:
        for name, fn in fns.items():
            for _ in range(warmup):
                fn()
            for _ in range(block):
                start = time.perf_counter()
                fn()
                times[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--imgsz", type=int, default=416)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cfg", default="yolov3-tiny")
    parser.add_argument("--weights")
    args = parser.parse_args()
    # must be set before numpy loads OpenBLAS
    os.environ.setdefault("OPENBLAS_NUM_THREADS", str(args.threads))

    import cv2
    import numpy as np

    from dncompress.export.onnx import build_onnx, onnx_forward
    from dncompress.network import Network
    from dncompress.zoo import find_weights, resolve_cfg

    cfg = resolve_cfg(args.cfg)
    weights = find_weights(cfg, args.weights)
    net = Network.from_cfg(cfg, weights, args.imgsz, args.imgsz)
    blob = np.random.default_rng(0).random((1, 3, args.imgsz, args.imgsz), dtype=np.float32)

    cv2.setNumThreads(args.threads)
    cvnet = cv2.dnn.readNetFromDarknet(str(cfg), str(weights))
    outs = cvnet.getUnconnectedOutLayersNames()

    def opencv():
        cvnet.setInput(blob)
        cvnet.forward(outs)

    ort_forward = onnx_forward(build_onnx(net), threads=args.threads)
    results = medians_ms({"numpy engine": lambda: net.forward(blob), "onnxruntime": lambda: ort_forward(blob),
                          "opencv dnn": opencv}, args.runs)
    print(f"{Path(cfg).stem} {args.imgsz}x{args.imgsz}, batch 1, {args.threads} threads, "
          f"median of {args.runs} runs")
    base = results["opencv dnn"]
    for name, ms in results.items():
        print(f"  {name:<14} {ms:8.1f} ms   {ms / base:5.2f}x opencv dnn")


if __name__ == "__main__":
    main()
