"""The results table of docs/pruning.md: ratios x {no compensation, compensation, reconstruction} on a
labelled dataset — mAP@0.5 against the labels, fidelity (mAP@0.5 against the unpruned model's own
detections at conf 0.25), and params/BFLOPs/latency as fractions of the unpruned model (latency: engine
forward at batch 1, timed interleaved with the unpruned model).

    python tools/prune_table.py --data ../shared/data/coco128 --calib ../shared/data/images
        [--cfg yolov3-tiny] [--ratios 0.3,0.5,0.7] [--criterion bn] [--scope global] [--calib-images 16]

Calibration images (for reconstruction and --criterion activation) should not be the evaluation images.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from dncompress.eval import evaluate, predict
from dncompress.network import Network
from dncompress.prune.apply import prune_network
from dncompress.prune.criteria import CRITERIA
from dncompress.prune.groups import channel_groups
from dncompress.prune.plan import plan_pruning
from dncompress.prune.reconstruct import reconstruct
from dncompress.stats import summary
from experiment import add_arguments, load_experiment

METHODS = ("no compensation", "compensation", "reconstruction")


def latency_ratio(base: Network, pruned: Network, pairs: int = 7) -> float:
    """Median over interleaved pairs of batch-1 forward times, pruned / base, so that load from other
    processes hits both alike."""
    x = np.random.default_rng(0).random((1, *base.input_shape), dtype=np.float32)
    ratios = []
    for _ in range(pairs + 1):
        times = []
        for net in (base, pruned):
            start = time.perf_counter()
            net.forward(x)
            times.append(time.perf_counter() - start)
        ratios.append(times[1] / times[0])
    return statistics.median(ratios[1:])


def pruned_variant(net: Network, keep, method: str, calib: np.ndarray) -> Network:
    pruned = prune_network(net, keep, with_compensation=method != "no compensation")
    if method == "reconstruction":
        reconstruct(net, pruned, keep, calib, progress=False)
    return pruned


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser, calib_images=16)
    parser.add_argument("--ratios", default="0.3,0.5,0.7")
    parser.add_argument("--criterion", default="bn", choices=sorted(CRITERIA))
    parser.add_argument("--scope", default="global", choices=["global", "layer"])
    args = parser.parse_args()
    exp = load_experiment(args)
    net, size, dataset, calib, classes = exp.net, exp.size, exp.dataset, exp.calib, exp.classes
    base_preds, reference = exp.base_preds, exp.reference
    base, base_cost = evaluate(base_preds, dataset, classes), summary(net)
    print(f"{args.cfg}, {len(dataset)} images, criterion {args.criterion}, scope {args.scope}, "
          f"{len(calib)} calibration images")
    print("| ratio | method | mAP@0.5 | fidelity mAP@0.5 | params | BFLOPs | latency |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    print(f"| 0 | unpruned | {base.map50:.4f} | 1.0000 | {base_cost['params']:,} | {base_cost['bflops']:.3f} "
          "| 1 |", flush=True)
    scores = CRITERIA[args.criterion](net, calib=calib)
    groups = channel_groups(net)
    for ratio in [float(r) for r in args.ratios.split(",")]:
        keep = plan_pruning(groups, scores, ratio, args.scope)
        # the three methods give the same shapes, hence the same latency
        latency = latency_ratio(net, prune_network(net, keep))
        for method in METHODS:
            pruned = pruned_variant(net, keep, method, calib)
            preds = predict(pruned.forward, pruned.heads, dataset, *size, progress=False)
            cost = summary(pruned)
            print(f"| {ratio:g} | {method} | {evaluate(preds, dataset, classes).map50:.4f} | "
                  f"{evaluate(preds, reference, classes).map50:.4f} | {cost['params'] / base_cost['params']:.3f}x | "
                  f"{cost['bflops'] / base_cost['bflops']:.3f}x | {latency:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
