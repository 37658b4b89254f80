"""Dense vs zero-skipping sparse convolution on this CPU: the numpy engine (BLAS im2col / Winograd) against
the group kernel of engine/sparse_conv.py on weight-pruned yolov3-tiny, per layer and for the whole network.

    python tools/bench_sparse.py [--ratios 0.5,0.7,0.9,0.95,0.98] [--patterns simd4,simd8,unstructured]
        [--runs 10] [--threads 1] [--cfg yolov3-tiny] [--weights W]

Every conv is pruned at each ratio (layer scope) so that each layer has that sparsity. Prints median
milliseconds at batch 1 and sparse/dense ratios (< 1: the sparse kernel is faster), and the sparsity at
which the whole network breaks even, if any.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ratios", default="0.5,0.7,0.9,0.95,0.98")
    parser.add_argument("--patterns", default="simd4,simd8,unstructured")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cfg", default="yolov3-tiny")
    parser.add_argument("--weights")
    args = parser.parse_args()
    # must be set before numpy loads OpenBLAS
    os.environ.setdefault("OPENBLAS_NUM_THREADS", str(args.threads))

    from bench import medians_ms
    from dncompress.detect import load_image, preprocess
    from dncompress.model_io import open_model
    from dncompress.sparse.engine import SparseEngine
    from dncompress.sparse.weights import SparsifyConfig, sparsify_network

    net = open_model(args.cfg, args.weights)
    x = preprocess(load_image(Path(__file__).resolve().parent.parent / "samples" / "dog.jpg"), net.info.width,
                   net.info.height, True)
    convs = [layer.index for layer in net.layers if layer.type == "convolutional"]
    sources = sorted({net.layers[i].inputs[0] for i in convs} - {-1})
    inputs = dict(zip(sources, net.forward(x, keep=set(sources))))
    print(f"{Path(net.file).stem} {net.info.width}x{net.info.height}, batch 1, OPENBLAS_NUM_THREADS="
          f"{os.environ['OPENBLAS_NUM_THREADS']}, median of {args.runs} runs")
    ratios = [float(r) for r in args.ratios.split(",")]
    for pattern in args.patterns.split(","):
        group = 1 if pattern == "unstructured" else int(pattern.removeprefix("simd"))
        per_layer, whole = {}, {}
        for ratio in ratios:
            sparse, _ = sparsify_network(net, SparsifyConfig("unstructured" if group == 1 else "simd", ratio, group))
            engine = SparseEngine(sparse, group)
            whole[ratio] = medians_ms({"dense": lambda: sparse.forward(x), "sparse": lambda: engine.forward(x)},
                                      args.runs)
            for index in convs:
                layer = sparse.layers[index]
                xs = [inputs[layer.inputs[0]] if layer.inputs[0] >= 0 else x]
                per_layer[index, ratio] = medians_ms({"dense": lambda: layer.forward(xs),
                                                      "sparse": lambda: engine.run(layer, xs)},
                                                     max(3, args.runs // 2), warmup=1, block=3)
        print(f"\n{pattern}: sparse / dense time per conv (dense ms at the left)")
        print(f"{'layer':>5} {'dense ms':>8} " + " ".join(f"{r:>6g}" for r in ratios))
        for index in convs:
            dense = per_layer[index, ratios[0]]["dense"]
            print(f"{index:>5} {dense:8.2f} " + " ".join(
                f"{per_layer[index, r]['sparse'] / per_layer[index, r]['dense']:6.2f}" for r in ratios))
        print(f"{'net':>5} {whole[ratios[0]]['dense']:8.1f} " + " ".join(
            f"{whole[r]['sparse'] / whole[r]['dense']:6.2f}" for r in ratios))
        print("whole network ms: " + ", ".join(f"{r:g}: {whole[r]['sparse']:.1f} sparse vs {whole[r]['dense']:.1f} "
                                               "dense" for r in ratios))
        even = [r for r in ratios if whole[r]["sparse"] <= whole[r]["dense"]]
        print(f"breaks even at sparsity {even[0]:g}" if even else "does not break even at these sparsities")


if __name__ == "__main__":
    main()
