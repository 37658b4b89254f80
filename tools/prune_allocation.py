"""Held-out vs in-sample error curves for the one-shot allocation (docs/pruning.md, issue #13): prune
yolov3-tiny to a BFLOPs target with each, calibrated on the first N images of voc765/fit565, and measure
fidelity and mAP@0.5 on fit565's last 100 images (never fitted on; eval200 stays for the final figures).

    python tools/prune_allocation.py 3.339 heldout,insample 32
"""
import dataclasses
import os
import sys
import time

from dncompress.data import load_dataset
from dncompress.eval import evaluate, fidelity_dataset, predict
from dncompress.model_io import open_model
from dncompress.prune.oneshot import prune_oneshot
from dncompress.prune.workflow import batch_of
from dncompress.stats import summary

FIT565 = "../shared/data/voc765/fit565.txt"


def main() -> None:
    target, modes = float(sys.argv[1]), sys.argv[2].split(",")
    nfit = int(sys.argv[3]) if len(sys.argv) > 3 else 32
    net = open_model("yolov3-tiny")
    fit565 = load_dataset(os.environ.get("FIT565", FIT565))
    fit = dataclasses.replace(fit565, items=fit565.items[:nfit])
    hold = dataclasses.replace(fit565, items=fit565.items[465:565])
    base_preds = predict(net.forward, net.heads, hold, 416, 416, progress=False)
    reference = fidelity_dataset(base_preds, hold)
    print(f"unpruned mAP@0.5 on fit565[465:565]: {evaluate(base_preds, hold, 80).map50:.4f}", flush=True)
    images = batch_of(fit, 416, 416)
    for mode in modes:
        start = time.perf_counter()
        result = prune_oneshot(net, images, target, "bflops", heldout=mode == "heldout")
        seconds = time.perf_counter() - start
        pruned = result.network
        preds = predict(pruned.forward, pruned.heads, hold, 416, 416, progress=False)
        print(f"{mode}: bflops {summary(pruned)['bflops']:.3f} fidelity {evaluate(preds, reference, 80).map50:.4f} "
              f"mAP {evaluate(preds, hold, 80).map50:.4f} time {seconds:.0f}s load {os.getloadavg()[0]:.1f}", flush=True)
        print("  kept:", {k[0]: v for k, v in result.keep_counts.items()}, flush=True)
        print("  predicted:", [round(s.predicted_error, 3) for s in result.steps],
              "refit:", [round(s.refit_error, 3) for s in result.steps], flush=True)


if __name__ == "__main__":
    main()
