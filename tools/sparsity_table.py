"""The results tables of docs/sparsity.md: weight sparsity (SIMD groups, unstructured) and dynamic activation
masks on a labelled dataset — mAP against the labels, fidelity (mAP@0.5 against the unpruned model's own
detections at conf 0.25), zero weights, the MACs a zero-skipping engine would skip, and the .dns size.

    python tools/sparsity_table.py --data ../shared/data/coco128 --calib ../shared/data/coco128
        [--weight-runs simd4:0.3,simd8:0.5,unstructured:0.7] [--skip-first-last] [--scope layer]
        [--bias-correction] [--thresholds 0.05,0.1] [--winner-rates 0.7,0.5] [--stats-images 16]

--bias-correction uses the --calib images; activation statistics (zero outputs, skipped MACs) are measured
on the first --stats-images images of --data.
"""
from __future__ import annotations

import argparse

from dncompress.data import calibration_batch
from dncompress.eval import evaluate, predict
from dncompress.network import Network
from dncompress.sparse.activations import activation_stats, with_activation_masks
from dncompress.sparse.format import sparse_size
from dncompress.sparse.weights import SparsifyConfig, correct_bias, sparsify_network, weight_sparsity_report
from experiment import Experiment, add_arguments, load_experiment

WEIGHT_RUNS = ",".join(f"{p}:{r}" for p in ("simd4", "simd8", "unstructured") for r in ("0.3", "0.5", "0.7"))


def accuracy(exp: Experiment, model: Network) -> str:
    preds = exp.base_preds if model is exp.net else \
        predict(model.forward, model.heads, exp.dataset, *exp.size, progress=False)
    result = evaluate(preds, exp.dataset, exp.classes)
    return f"{result.map50:.4f} | {result.map50_95:.4f} | {evaluate(preds, exp.reference, exp.classes).map50:.4f}"


def skipped_share(stats) -> tuple[float, float]:
    """(zero share of the masked convs' outputs, share of in-image MACs with a zero activation input)."""
    real = sum(s.macs - s.padding_macs for s in stats.values())
    skipped = sum(s.macs - s.padding_macs - s.nonzero_input_macs for s in stats.values())
    zeros = sum(s.zeros for s in stats.values()) / sum(s.outputs for s in stats.values())
    return zeros, skipped / real


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser, calib_images=16)
    parser.add_argument("--weight-runs", default=WEIGHT_RUNS, help="pattern:ratio list; '' for none")
    parser.add_argument("--skip-first-last", action="store_true")
    parser.add_argument("--scope", default="layer", choices=["layer", "global"])
    parser.add_argument("--bias-correction", action="store_true")
    parser.add_argument("--stats-images", type=int, default=16)
    parser.add_argument("--thresholds", default="0.02,0.05,0.1,0.2")
    parser.add_argument("--winner-rates", default="0.8,0.6,0.5,0.3")
    args = parser.parse_args()
    exp = load_experiment(args)
    net = exp.net
    dense_mb = 4 * net.param_count() / 1e6
    images = calibration_batch(args.data, args.stats_images, *exp.size)
    print(f"{args.cfg}, {len(exp.dataset)} images; weights: scope {args.scope}, skip first/last "
          f"{args.skip_first_last}, bias correction {args.bias_correction} ({len(exp.calib)} calibration images); "
          f"activation statistics on {len(images)} images")
    print("| model | conv weights zero | MACs skipped | mAP@0.5 | mAP@0.5:0.95 | fidelity mAP@0.5 | .dns MB |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    print(f"| dense | 0 | 0 | {accuracy(exp, net)} | {dense_mb:.2f} (float32) |", flush=True)
    for run in filter(None, args.weight_runs.split(",")):
        pattern, ratio = run.split(":")
        group = 1 if pattern == "unstructured" else int(pattern.removeprefix("simd"))
        config = SparsifyConfig("unstructured" if group == 1 else "simd", float(ratio), max(group, 1),
                                scope=args.scope, skip_first_last=args.skip_first_last)
        sparse, _ = sparsify_network(net, config)
        if args.bias_correction:
            correct_bias(net, sparse, exp.calib)
        report = weight_sparsity_report(net, sparse)
        print(f"| {pattern} {ratio} | {1 - report['nonzero'][1] / report['weights']:.1%} | "
              f"{report['skipped_macs'] / report['macs']:.1%} | {accuracy(exp, sparse)} | "
              f"{sparse_size(sparse, group) / 1e6:.2f} |", flush=True)
    print("\n| mask | zero conv outputs | in-image MACs with a zero input | mAP@0.5 | mAP@0.5:0.95 | fidelity mAP@0.5 |")
    print("| --- | --- | --- | --- | --- | --- |")
    zeros, skipped = skipped_share(activation_stats(net, images))
    print(f"| none | {zeros:.1%} | {skipped:.1%} | {accuracy(exp, net)} |", flush=True)
    masks = [(float(t), 1.0) for t in filter(None, args.thresholds.split(","))] + \
        [(0.0, float(r)) for r in filter(None, args.winner_rates.split(","))]
    for threshold, rate in masks:
        masked = with_activation_masks(net, threshold, rate)
        zeros, skipped = skipped_share(activation_stats(masked, images))
        name = f"\\|a\\| < {threshold:g}" if threshold else f"winner rate {rate:g}"
        print(f"| {name} | {zeros:.1%} | {skipped:.1%} | {accuracy(exp, masked)} |", flush=True)


if __name__ == "__main__":
    main()
