"""Training throughput: images/s of one forward + loss + backward pass of yolov3-tiny (real weights).

    python tools/bench_train.py [--imgsz 416 320] [--batch 8] [--runs 3] [--threads 2]

Median over `runs` passes after one warm-up, on random images with one box each.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--imgsz", type=int, nargs="+", default=[416, 320])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cfg", default="yolov3-tiny")
    args = parser.parse_args()
    # must be set before numpy loads OpenBLAS
    os.environ.setdefault("OPENBLAS_NUM_THREADS", str(args.threads))

    import numpy as np

    from dncompress.network import Network
    from dncompress.train.loop import batch_loss
    from dncompress.train.runner import TrainRun
    from dncompress.zoo import find_weights, resolve_cfg

    cfg = resolve_cfg(args.cfg)
    for size in args.imgsz:
        net = Network.from_cfg(cfg, find_weights(cfg), size, size)
        run = TrainRun(net)
        x = np.random.default_rng(0).random((args.batch, *net.input_shape), dtype=np.float32)
        labels = [np.array([[0, 0.5, 0.5, 0.2, 0.3]], np.float32)] * args.batch

        def step():
            outs = run.forward(x)
            run.backward(batch_loss(net, outs, labels, None, True)[1])
        step()
        times = []
        for _ in range(args.runs):
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
        median = statistics.median(times)
        print(f"{args.cfg} {size}x{size} batch {args.batch}: forward+backward {median:.2f} s, "
              f"{args.batch / median:.2f} images/s")


if __name__ == "__main__":
    main()
