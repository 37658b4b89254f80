"""The pruning results table of docs/pruning.md: ratios x {no compensation, compensation, reconstruction}
on a labelled dataset (mAP@0.5 vs labels, fidelity vs the unpruned model, params/BFLOPs/latency ratios).

    python tools/prune_table.py --data ../shared/data/coco128 [--calib ../shared/data/coco128/images]
        [--ratios 0.3,0.5,0.7] [--criterion bn] [--scope global]
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from dncompress.data import calibration_batch, load_dataset
from dncompress.eval import evaluate, fidelity_dataset, predict
from dncompress.network import Network
from dncompress.prune.apply import prune_network
from dncompress.prune.criteria import CRITERIA
from dncompress.prune.groups import channel_groups
from dncompress.prune.plan import plan_pruning
from dncompress.prune.reconstruct import reconstruct
from dncompress.stats import summary
from dncompress.zoo import find_weights, resolve_cfg


def latency_ms(net: Network, runs: int = 10) -> float:
    x = np.random.default_rng(0).random((1, *net.input_shape), dtype=np.float32)
    net.forward(x)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        net.forward(x)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cfg", default="yolov3-tiny")
    parser.add_argument("--weights")
    parser.add_argument("--data", required=True)
    parser.add_argument("--calib")
    parser.add_argument("--calib-images", type=int, default=16)
    parser.add_argument("--ratios", default="0.3,0.5,0.7")
    parser.add_argument("--criterion", default="bn")
    parser.add_argument("--scope", default="global")
    args = parser.parse_args()
    cfg = resolve_cfg(args.cfg)
    net = Network.from_cfg(cfg, find_weights(cfg, args.weights))
    size = (net.info.width, net.info.height)
    dataset = load_dataset(args.data)
    calib = calibration_batch(args.calib or args.data, args.calib_images, *size)
    classes = net.heads[0].classes
    base_preds = predict(net.forward, net.heads, dataset, *size, progress=False)
    reference = fidelity_dataset(base_preds, dataset)
    base, base_cost, base_ms = evaluate(base_preds, dataset, classes), summary(net), latency_ms(net)
    print(f"| ratio | method | mAP@0.5 | fidelity mAP@0.5 | params | BFLOPs | latency |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    print(f"| 0 | unpruned | {base.map50:.4f} | 1.0000 | {base_cost['params']:,} | {base_cost['bflops']:.3f} "
          f"| {base_ms:.1f} ms |")
    scores = CRITERIA[args.criterion](net, calib=calib)
    for ratio in [float(r) for r in args.ratios.split(",")]:
        keep = plan_pruning(channel_groups(net), scores, ratio, args.scope)
        for method in ("no compensation", "compensation", "reconstruction"):
            pruned = prune_network(net, keep, method != "no compensation")
            if method == "reconstruction":
                reconstruct(net, pruned, keep, calib, progress=False)
            preds = predict(pruned.forward, pruned.heads, dataset, *size, progress=False)
            cost = summary(pruned)
            print(f"| {ratio:g} | {method} | {evaluate(preds, dataset, classes).map50:.4f} | "
                  f"{evaluate(preds, reference, classes).map50:.4f} | {cost['params'] / base_cost['params']:.3f}x | "
                  f"{cost['bflops'] / base_cost['bflops']:.3f}x | {latency_ms(pruned) / base_ms:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
