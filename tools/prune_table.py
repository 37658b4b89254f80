"""The results table of docs/pruning.md: ratios x {no compensation, compensation, reconstruction} on a
labelled dataset — mAP@0.5 against the labels, fidelity (mAP@0.5 against the unpruned model's own
detections at conf 0.25), and params/BFLOPs/latency as fractions of the unpruned model (latency: engine
forward at batch 1, timed interleaved with the unpruned model).

    python tools/prune_table.py --data ../shared/data/coco128 --calib ../shared/data/images
        [--cfg yolov3-tiny] [--ratios 0.3,0.5,0.7] [--criterion bn] [--scope global] [--calib-images 16]

Calibration images (for reconstruction and --criterion activation) should not be the evaluation images.

With --oneshot, the table of the default method (one-shot OBS selection + least-squares refit) at BFLOPs
targets and --ratio 0.7, beside the unpruned model at smaller input sizes (the same-BFLOPs baseline):

    python tools/prune_table.py --oneshot --data ../shared/data/voc765/eval200.txt
        --calib ../shared/data/voc765/fit565.txt --calib-images 64 --targets 3.339,2.782,1.669 --ratio 0.7

With --resize-table, every candidate `prune --resize auto` considers at each BFLOPs target (the original
input size pruned to the target first, then the sizes of `resize_candidates`), each with its mAP on --data,
its fidelity to the original (at the original's size) on --data and on the held-out calibration images the
CLI chooses by (the --holdout images of --calib after the first --calib-images), and the pruning time:

    python tools/prune_table.py --resize-table --data ../shared/data/voc765/eval200.txt
        --calib ../shared/data/voc765/fit565.txt --calib-images 32 --targets 3.339
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
    parser.add_argument("--oneshot", action="store_true", help="the one-shot method's table (see above)")
    parser.add_argument("--targets", default="3.339,2.782,1.669", help="--oneshot: BFLOPs targets")
    parser.add_argument("--ratio", type=float, default=0.7, help="--oneshot: also this --ratio (0: none)")
    parser.add_argument("--sizes", default="320,256", help="--oneshot: unpruned baselines at these input sizes")
    parser.add_argument("--resize-table", action="store_true", help="the --resize candidates' table (see above)")
    parser.add_argument("--holdout", type=int, default=32, help="--resize-table: held-out calibration images")
    parser.add_argument("--skip-full", action="store_true", help="--resize-table: not the original size pruned")
    parser.add_argument("--jobs", help="--resize-table: run exactly these TARGET:WIDTH pairs in this order "
                        "(e.g. 3.339:320,3.339:416), instead of every candidate of every target")
    args = parser.parse_args()
    if args.resize_table:
        resize_table(args)
        return
    if args.oneshot:
        oneshot_table(args)
        return
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


def oneshot_table(args) -> None:
    """Unpruned at 416 and smaller sizes, then one-shot pruning at each target (fit on the first
    --calib-images of --calib), mAP@0.5 / fidelity on --data, wall time of the pruning itself."""
    import os

    from dncompress.data import load_dataset
    from dncompress.eval import fidelity_dataset
    from dncompress.prune.oneshot import prune_oneshot
    from dncompress.prune.workflow import batch_of, channel_target
    from dncompress.model_io import open_model
    net = open_model(args.cfg, args.weights)
    size = (net.info.width, net.info.height)
    dataset = load_dataset(args.data)
    classes = net.heads[0].classes
    base_preds = predict(net.forward, net.heads, dataset, *size, progress=False)
    base = evaluate(base_preds, dataset, classes).map50
    reference = fidelity_dataset(base_preds, dataset)
    base_cost = summary(net)
    fit = load_dataset(args.calib)
    fit.items = fit.items[:args.calib_images]
    images = batch_of(fit, *size)
    print(f"{args.cfg}: mAP@0.5 on {args.data} ({len(dataset)} images); fit on the first {len(images)} images of "
          f"{args.calib} (+ mirrors); load {os.getloadavg()[0]:.1f}")
    print("| model | BFLOPs | params | mAP@0.5 | kept | fidelity | prune time |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    print(f"| unpruned {size[0]} | {base_cost['bflops']:.3f} | {base_cost['params']:,} | {base:.4f} | 100% | 1 | - |",
          flush=True)
    for side in [int(s) for s in args.sizes.split(",") if s]:
        small = open_model(args.cfg, args.weights, (side, side))
        preds = predict(small.forward, small.heads, dataset, side, side, progress=False)
        value = evaluate(preds, dataset, classes).map50
        print(f"| unpruned {side} | {summary(small)['bflops']:.3f} | {base_cost['params']:,} | {value:.4f} | "
              f"{value / base:.0%} | - | - |", flush=True)
    runs = [("bflops", float(t), f"--target-bflops {t}") for t in args.targets.split(",") if t]
    if args.ratio:
        runs.append(("channels", channel_target(net, args.ratio), f"--ratio {args.ratio:g}"))
    for kind, target, label in runs:
        start = time.perf_counter()
        pruned = prune_oneshot(net, images, target, kind).network
        seconds = time.perf_counter() - start
        preds = predict(pruned.forward, pruned.heads, dataset, *size, progress=False)
        value = evaluate(preds, dataset, classes).map50
        cost = summary(pruned)
        print(f"| one-shot {label} | {cost['bflops']:.3f} ({1 - cost['bflops'] / base_cost['bflops']:.0%} less) | "
              f"{cost['params']:,} | {value:.4f} | {value / base:.0%} | "
              f"{evaluate(preds, reference, classes).map50:.4f} | {seconds:.0f} s (load {os.getloadavg()[0]:.1f}) |",
              flush=True)


def resize_table(args) -> None:
    """Per target: the original size pruned to it, then each --resize auto candidate (unpruned at the size
    that alone meets the target, pruned at the larger ones); mAP@0.5 and fidelity on --data, held-out
    fidelity on --calib images after the fit, pruning wall time and load."""
    import dataclasses
    import os

    from dncompress.data import load_dataset
    from dncompress.eval import fidelity_dataset
    from dncompress.prune.oneshot import prune_oneshot
    from dncompress.model_io import open_model
    from dncompress.prune.workflow import batch_of, resize_candidates, resized
    net = open_model(args.cfg, args.weights)
    size = (net.info.width, net.info.height)
    classes = net.heads[0].classes
    dataset = load_dataset(args.data)
    calib = load_dataset(args.calib)
    fit = dataclasses.replace(calib, items=calib.items[:args.calib_images])
    hold = dataclasses.replace(calib, items=calib.items[args.calib_images:args.calib_images + args.holdout])

    def run(model):
        preds = predict(model.forward, model.heads, dataset, model.info.width, model.info.height, progress=False)
        held = predict(model.forward, model.heads, hold, model.info.width, model.info.height, progress=False)
        return (evaluate(preds, dataset, classes).map50, evaluate(preds, reference, classes).map50,
                evaluate(held, hold_reference, classes).map50)
    base_preds = predict(net.forward, net.heads, dataset, *size, progress=False)
    reference = fidelity_dataset(base_preds, dataset)
    hold_reference = fidelity_dataset(predict(net.forward, net.heads, hold, *size, progress=False), hold)
    base = evaluate(base_preds, dataset, classes).map50
    print(f"{args.cfg}: mAP@0.5 on {args.data} ({len(dataset)} images) {base:.4f}; fit on the first {len(fit)} images "
          f"of {args.calib} (+ mirrors), held-out fidelity on the {len(hold)} after them; load "
          f"{os.getloadavg()[0]:.1f}")
    print("| target | input | how | BFLOPs | mAP@0.5 | kept | fidelity (data) | fidelity (held-out calib) | time |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |", flush=True)
    jobs = []
    for target in [float(t) for t in args.targets.split(",") if t]:
        sizes = ([] if args.skip_full else [size]) + resize_candidates(net, "auto", "bflops", target)
        jobs += [(target, w, h) for w, h in sizes]
    if args.jobs:
        pairs = [job.split(":") for job in args.jobs.split(",")]
        jobs = [(float(t), int(w), round(size[1] * int(w) / size[0] / 32) * 32) for t, w in pairs]
    for target, w, h in jobs:
        model = resized(net, w, h) if (w, h) != size else net
        start = time.perf_counter()
        how = "unpruned"
        if summary(model)["bflops"] > target:
            model = prune_oneshot(model, batch_of(fit, w, h), target, "bflops").network
            how = "pruned"
        seconds = time.perf_counter() - start
        value, fidelity, held = run(model)
        print(f"| {target:g} | {w}x{h} | {how} | {summary(model)['bflops']:.3f} | {value:.4f} | {value / base:.0%} | "
              f"{fidelity:.4f} | {held:.4f} | {seconds:.0f} s (load {os.getloadavg()[0]:.1f}) |", flush=True)


if __name__ == "__main__":
    main()
