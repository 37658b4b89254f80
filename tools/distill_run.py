"""Fine-tune a student against yolov3-tiny (or --teacher) with train.distill.finetune, one line per step.
Example (the recipe of docs/pruning.md):
  python tools/distill_run.py pruned.cfg pruned.weights --data /work/shared/data/voc765/fit565.txt \
      --epochs 2 --lr 2e-4 --imgsz 320 -o pruned-ft
then measure with `dncompress eval pruned-ft.cfg pruned-ft.weights --data .../eval200.txt`."""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time

from dncompress.data import load_dataset
from dncompress.model_io import open_model
from dncompress.train.distill import FinetuneConfig, finetune


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("cfg")
    parser.add_argument("weights")
    parser.add_argument("--teacher", nargs=2, default=("yolov3-tiny", None))
    parser.add_argument("--data", required=True)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--batch-bn", action="store_true", help="train BN on batch statistics")
    parser.add_argument("--no-labels", action="store_true")
    parser.add_argument("--hints", type=float, default=0.0, help="feature-imitation weight per trunk conv")
    parser.add_argument("--first", type=int, default=0, help="fine-tune on the first N images only")
    parser.add_argument("-o", "--output", required=True)
    args = parser.parse_args()
    student = open_model(args.cfg, args.weights or None)
    teacher = open_model(args.teacher[0], args.teacher[1])
    dataset = load_dataset(args.data)
    if args.first:
        dataset = dataclasses.replace(dataset, items=dataset.items[:args.first])
    config = FinetuneConfig(args.epochs, args.lr, args.imgsz, args.batch, frozen_bn=not args.batch_bn,
                            use_labels=not args.no_labels, hints=args.hints)
    start = time.time()

    def on_step(log):
        parts = " ".join(f"{k} {v:.3f}" for k, v in log.loss.items())
        print(f"epoch {log.epoch + 1} step {log.step + 1}/{log.steps} {parts} {log.images_per_s:.1f} img/s "
              f"lr {log.rate:.2g} t {time.time() - start:.0f}s", file=sys.stderr, flush=True)

    finetune(student, teacher, dataset, config, args.output, on_step=on_step,
             on_epoch=lambda e, r: print(f"epoch {e + 1} done {r['loss']} at {time.time() - start:.0f}s", flush=True))
    print(f"wrote {args.output}.cfg/.weights in {time.time() - start:.0f}s", flush=True)


if __name__ == "__main__":
    main()
