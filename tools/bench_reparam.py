"""The latency effect of structural reparameterization, every model and backend measured in the same run.

    python tools/bench_reparam.py [--runs 30] [--imgsz 416] [--threads 2] [--block 10] [--seed 0]

Times a forward pass of yolov3-tiny-rep (RepVGG-style 3x3 + 1x1 branches, seeded random weights) and of
its `reparameterize` output, and of yolov3-tiny (official weights) and its BN-folded copy, in the numpy
engine, onnxruntime (on the ONNX export) and OpenCV DNN (on the written cfg + weights); prints medians and
the folded/original ratio per backend. Backends and models take turns in blocks (tools/bench.py), each
original next to its folded twin; on a loaded machine `--threads 1 --block 2` keeps the pairs closest in time
(one thread: no OpenBLAS workers spinning into the next block).
"""
from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from bench import medians_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--imgsz", type=int, default=416)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--block", type=int, default=10, help="runs per turn")
    parser.add_argument("--seed", type=int, default=0, help="random weights of yolov3-tiny-rep")
    args = parser.parse_args()
    # must be set before numpy loads OpenBLAS
    os.environ.setdefault("OPENBLAS_NUM_THREADS", str(args.threads))

    import cv2
    import numpy as np

    from dncompress.export.onnx import build_onnx, onnx_forward
    from dncompress.model_io import open_model
    from dncompress.reparam import head_difference, reparameterize

    size = args.imgsz
    rng = np.random.default_rng(args.seed)
    rep = open_model("yolov3-tiny-rep", imgsz=(size, size), load_weights=False)
    rep.init_random(args.seed)
    rep.calibrate_batchnorm(rng.random((2, *rep.input_shape), dtype=np.float32))
    tiny = open_model("yolov3-tiny", imgsz=(size, size))
    blob = rng.random((1, 3, size, size), dtype=np.float32)
    pairs = {"yolov3-tiny-rep -> reparam": (rep, reparameterize(rep)[0]),
             "yolov3-tiny -> BN folded": (tiny, reparameterize(tiny)[0])}

    cv2.setNumThreads(args.threads)
    backends = ("numpy engine", "onnxruntime", "opencv dnn")
    fns = {}  # each original next to its folded twin, so a change in machine load hits both alike
    with tempfile.TemporaryDirectory(prefix="bench_reparam.") as folder:
        for label, nets in pairs.items():
            print(f"{label}: layers {len(nets[0].layers)} -> {len(nets[1].layers)}, heads max abs diff "
                  f"{head_difference(*nets, blob):.1e} of the output scale")
            runners = {}
            for role, net in zip(("original", "folded"), nets):
                stem = Path(folder) / f"{label.split()[0]}-{role}"
                net.save(f"{stem}.cfg", f"{stem}.weights")
                cvnet = cv2.dnn.readNetFromDarknet(f"{stem}.cfg", f"{stem}.weights")
                ort_forward = onnx_forward(build_onnx(net), threads=args.threads)
                runners[role] = {"numpy engine": lambda net=net: net.forward(blob),
                                 "onnxruntime": lambda f=ort_forward: f(blob),
                                 "opencv dnn": lambda cvnet=cvnet: (cvnet.setInput(blob),
                                                                    cvnet.forward(cvnet.getUnconnectedOutLayersNames()))}
            for backend in backends:
                for role in ("original", "folded"):
                    fns[label, backend, role] = runners[role][backend]
    results = medians_ms(fns, args.runs, warmup=min(3, args.block), block=args.block)
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"{size}x{size}, batch 1, {args.threads} threads, median ms of {args.runs} runs (folded/original); "
          f"load average {load}")
    print(f"  {'':<28}" + "".join(f"{b:>22}" for b in backends))
    for label in pairs:
        cells = [f"{results[label, b, 'original']:7.1f} -> {results[label, b, 'folded']:6.1f} "
                 f"({results[label, b, 'folded'] / results[label, b, 'original']:4.2f})" for b in backends]
        print(f"  {label:<28}" + "".join(f"{c:>22}" for c in cells))


if __name__ == "__main__":
    main()
