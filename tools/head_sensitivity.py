"""Print the head sensitivity of every consumer conv (what a unit of relative output error there costs at the
heads; prune/head_weights.py), as `prune --allocation heads` measures it.
Example: python tools/head_sensitivity.py yolov3-tiny --data /work/shared/data/voc765/fit565.txt --images 16"""
from __future__ import annotations

import argparse
import dataclasses

from dncompress.data import load_dataset
from dncompress.model_io import open_model
from dncompress.prune.groups import channel_groups, channel_maps
from dncompress.prune.head_weights import head_sensitivity, output_rms
from dncompress.prune.oneshot import calibrate, consumers_of, with_flips
from dncompress.prune.workflow import batch_of


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("cfg")
    parser.add_argument("weights", nargs="?")
    parser.add_argument("--data", required=True)
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--levels", type=float, nargs="+", default=[0.05])
    args = parser.parse_args()
    net = open_model(args.cfg, args.weights)
    dataset = load_dataset(args.data)
    x = batch_of(dataclasses.replace(dataset, items=dataset.items[:args.images]), net.info.width, net.info.height,
                 net.info.channels)
    maps = channel_maps(net)
    convs = {c.conv for g in channel_groups(net) if g.prunable for c in consumers_of(net, g, maps)}
    rms = output_rms(calibrate(net, with_flips(x), convs).targets)
    print("conv " + " ".join(f"{c:>7}" for c in sorted(convs)))
    for level in args.levels:
        weights = head_sensitivity(net, x, rms, level)
        print(f"{level:<4g} " + " ".join(f"{weights[c]:7.1f}" for c in sorted(convs)))


if __name__ == "__main__":
    main()
