"""MAC convolution vs the Sum-and-Max (SAM) neuron on a small task: 10-class digit images (cv2.putText at
random fonts, positions, scales and intensities, plus noise), two nets of the same topology built from
cfg text, trained with the engine's backward and SGD, with and without L1 sparsity on the kernel weights.

    python tools/sam_experiment.py [--train 4000] [--test 1000] [--epochs 8] [--l1 1e-3] [--threads 1]

Prints per run: test accuracy, measured seconds per training epoch and per test forward, the fraction of
hidden-layer kernel entries with |w| < --eps, the fraction of removable entries (MAC: |w| < --eps, zeroed;
SAM: entries that never won a max / min on the training images, set to -inf / +inf so they never win),
the test accuracy once those are removed, and the ops of one image (dncompress.stats), dense and with the
removable entries skipped. Results and discussion: docs/sam.md.
"""
from __future__ import annotations

import argparse
import os
import time

SIZE = 16
# two hidden blocks of [kind] + maxpool, then a [convolutional] classifier over the whole 4x4 map
BLOCK = "[{kind}]\nbatch_normalize=1\nfilters={filters}\nsize=3\nstride=1\npad=1\nactivation=relu\n\n" \
        "[maxpool]\nsize=2\nstride=2\n\n"
HEAD = "[convolutional]\nfilters=10\nsize={size}\nstride=1\npad=0\nactivation=linear\n"


def topology(kind: str) -> str:
    """The cfg text of the net with [kind] hidden layers."""
    return (f"[net]\nwidth={SIZE}\nheight={SIZE}\nchannels=1\n\n" + BLOCK.format(kind=kind, filters=16)
            + BLOCK.format(kind=kind, filters=32) + HEAD.format(size=SIZE // 4))


HIDDEN = (0, 2)  # the layers whose kind differs between the two nets


def digits(count: int, rng):
    """(count, 1, SIZE, SIZE) float32 images of random digits and their (count,) labels: rendered at 2x
    with a random Hershey font, scale, thickness, offset and intensity, downsampled, plus Gaussian noise."""
    import cv2
    import numpy as np
    fonts = [cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_PLAIN, cv2.FONT_HERSHEY_DUPLEX,
             cv2.FONT_HERSHEY_COMPLEX, cv2.FONT_HERSHEY_TRIPLEX, cv2.FONT_HERSHEY_SCRIPT_SIMPLEX]
    labels = rng.integers(0, 10, count)
    images = np.empty((count, 1, SIZE, SIZE), np.float32)
    big = 2 * SIZE
    for i, label in enumerate(labels):
        canvas = np.zeros((big, big), np.float32)
        font = fonts[rng.integers(len(fonts))]
        thickness = int(rng.integers(1, 4))
        (w, h), _ = cv2.getTextSize(str(label), font, 1.0, thickness)
        scale = rng.uniform(0.55, 0.95) * big / max(w, h)
        (w, h), _ = cv2.getTextSize(str(label), font, scale, thickness)
        x = int(rng.integers(0, max(1, big - w)))
        y = int(rng.integers(h, max(h + 1, big)))
        cv2.putText(canvas, str(label), (x, y), font, scale, float(rng.uniform(0.5, 1.0)), thickness, cv2.LINE_AA)
        images[i, 0] = cv2.resize(canvas, (SIZE, SIZE), interpolation=cv2.INTER_AREA)
    images += rng.normal(0, 0.15, images.shape).astype(np.float32)
    return images, labels


def build(kind: str, seed: int, sam_std: float):
    """The net with [kind] hidden layers; SAM weights start as N(0, sam_std), convs He-scaled."""
    import numpy as np
    from dncompress.cfg import parse_cfg
    from dncompress.network import Network
    net = Network(parse_cfg(topology(kind)), f"{kind}.cfg")
    net.init_random(seed)
    rng = np.random.default_rng(seed + 1)
    for layer in net.layers:
        if layer.param_shapes():
            params = {"biases": np.zeros(layer.filters, np.float32)}
            if layer.batch_normalize:
                params.update(scales=np.ones(layer.filters, np.float32),
                              rolling_mean=np.zeros(layer.filters, np.float32),
                              rolling_variance=np.ones(layer.filters, np.float32))
            for name in layer.weight_names:
                if name != "weights":
                    params[name] = rng.normal(0, sam_std, layer.param_shapes()[name]).astype(np.float32)
            layer.set_params(**params)
    return net


def kernel_weights(net):
    """(layer index, name, array) of every hidden layer's kernel tensor."""
    return [(i, name, net.layers[i].params[name]) for i in HIDDEN for name in net.layers[i].weight_names]


def train(net, x, y, epochs: int, batch: int, lr: float, l1: float, seed: int) -> list[float]:
    """SGD with momentum .9 and decay 5e-4 on softmax cross entropy, plus l1 * sign(w) per image on the
    hidden kernel weights; returns the seconds of each epoch."""
    import numpy as np
    from dncompress.train.loss import softmax_cross_entropy
    from dncompress.train.optim import SGD, Schedule
    from dncompress.train.runner import TrainRun
    rng = np.random.default_rng(seed)
    run = TrainRun(net)
    sgd = SGD(net, Schedule(learning_rate=lr, momentum=0.9, decay=0.0005))
    head = len(net.layers) - 1
    times, step = [], 0
    for epoch in range(epochs):
        start, total = time.perf_counter(), 0.0
        order = rng.permutation(len(x))
        for first in range(0, len(x) - batch + 1, batch):
            pick = order[first:first + batch]
            (logits,) = run.forward(x[pick], outputs=[head])
            loss, grad = softmax_cross_entropy(logits, y[pick])
            grads = run.backward([grad])
            for i, name, w in kernel_weights(net):
                grads[i][name] = grads[i][name] + batch * l1 * np.sign(w)
            sgd.step(grads, step, batch)
            step, total = step + 1, total + loss
        times.append(time.perf_counter() - start)
        print(f"  epoch {epoch + 1}: loss/image {total / (len(x) // batch * batch):.3f} ({times[-1]:.1f} s)",
              flush=True)
    return times


def accuracy(net, x, y) -> float:
    (logits,) = net.forward(x, keep={len(net.layers) - 1})
    return float((logits.reshape(len(x), -1).argmax(axis=1) == y).mean())


def never_won(net, x, batch: int = 250):
    """Per SAM kernel tensor, a mask of the entries that won no max (W+) or min (W-) on images x."""
    import numpy as np
    from dncompress.engine.summax import summax2d
    sources = sorted({net.layers[i].inputs[0] for i in HIDDEN})
    won = {(i, name): np.zeros(net.layers[i].params[name].shape, bool) for i in HIDDEN
           for name in ("weights_max", "weights_min")}
    for first in range(0, len(x), batch):
        part = x[first:first + batch]
        outputs = dict(zip([s for s in sources if s >= 0], net.forward(part, keep={s for s in sources if s >= 0})))
        outputs[-1] = part
        for i in HIDDEN:
            layer = net.layers[i]
            p = layer.params
            _, arg_max, arg_min = summax2d(outputs[layer.inputs[0]], p["weights_max"], p["weights_min"],
                                           layer.stride, layer.pad, layer.groups, with_index=True)
            for name, index in (("weights_max", arg_max), ("weights_min", arg_min)):
                taps = p[name][0].size
                flat = won[(i, name)].reshape(-1)
                flat[np.unique(np.arange(layer.filters)[None, :, None] * taps
                               + index.reshape(len(part), layer.filters, -1))] = True
    return {key: ~mask for key, mask in won.items()}


def remove(net, masks) -> None:
    """Remove kernel entries in place: zero for a conv; W+ = -inf, W- = +inf (never wins) for SAM."""
    import numpy as np
    for (i, name), mask in masks.items():
        neutral = {"weights": 0.0, "weights_max": -np.inf, "weights_min": np.inf}[name]
        net.layers[i].set_params(**{name: np.where(mask, neutral, net.layers[i].params[name]).astype(np.float32)})


def ops_after_removal(net, masks) -> tuple[int, int, int]:
    """(MACs, adds, compares) of one image when the masked kernel entries are skipped: a conv output costs a
    MAC per kept weight; a SAM output an add per kept W+ and W- entry (+1 for max + min) and, per half,
    one compare fewer than its kept entries."""
    from dncompress.stats import layer_costs
    costs = layer_costs(net)
    macs, adds, compares = (sum(getattr(c, key) for c in costs) for key in ("macs", "adds", "compares"))
    for i in HIDDEN:
        layer, cost = net.layers[i], costs[i]
        positions = layer.out_shape[1] * layer.out_shape[2]
        kept = sum(int((~masks[(i, name)]).sum()) for name in layer.weight_names)
        if layer.type == "convolutional":
            macs += positions * kept - cost.macs
        else:
            adds += positions * (kept + layer.filters) - cost.adds
            compares += positions * (kept - 2 * layer.filters) - cost.compares
    return macs, adds, compares


def experiment(kind: str, l1: float, data, args) -> dict:
    """Train one net and measure it; "removable" kernel entries are |w| < eps for a conv (then zeroed) and,
    for SAM, entries that never won on the training images (then set to never win)."""
    import numpy as np
    from dncompress.stats import layer_costs
    (x_train, y_train), (x_test, y_test) = data
    print(f"{kind} l1={l1:g}", flush=True)
    net = build(kind, args.seed, args.sam_std)
    lr = args.lr_conv if kind == "convolutional" else args.lr_sam
    times = train(net, x_train, y_train, args.epochs, args.batch, lr, l1, args.seed)
    # Darknet's .99 running averages still remember their initial values after a few hundred steps
    net.calibrate_batchnorm(x_train[:1000])
    start = time.perf_counter()
    acc = accuracy(net, x_test, y_test)
    forward_s = time.perf_counter() - start
    weights = kernel_weights(net)
    total = sum(w.size for _, _, w in weights)
    small = {(i, name): np.abs(w) < args.eps for i, name, w in weights}
    removable = small if kind == "convolutional" else never_won(net, x_train)
    costs = layer_costs(net)
    row = {"kind": kind, "l1": l1, "accuracy": acc, "epoch_s": float(np.median(times)), "epochs_s": times,
           "test_forward_s": forward_s, "small": sum(int(m.sum()) for m in small.values()) / total,
           "removable": sum(int(m.sum()) for m in removable.values()) / total,
           "macs": sum(c.macs for c in costs), "adds": sum(c.adds for c in costs),
           "compares": sum(c.compares for c in costs), "params": sum(c.params for c in costs)}
    row["kept_macs"], row["kept_adds"], row["kept_compares"] = ops_after_removal(net, removable)
    remove(net, removable)
    row["accuracy_removed"] = accuracy(net, x_test, y_test)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=int, default=4000)
    parser.add_argument("--test", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr-conv", type=float, default=0.05, help="learning rate of the MAC net")
    parser.add_argument("--lr-sam", type=float, default=0.02, help="learning rate of the SAM net (0.05 diverges)")
    parser.add_argument("--sam-std", type=float, default=1.0, help="standard deviation of the initial W+, W-")
    parser.add_argument("--l1", type=float, default=1e-3, help="L1 strength of the sparsity runs")
    parser.add_argument("--eps", type=float, default=1e-3, help="|w| below this counts as zero")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args()
    # must be set before numpy loads OpenBLAS
    os.environ.setdefault("OPENBLAS_NUM_THREADS", str(args.threads))

    import json

    import numpy as np
    rng = np.random.default_rng(args.seed)
    data = digits(args.train, rng), digits(args.test, rng)
    rows = [experiment(kind, l1, data, args) for kind in ("convolutional", "summax_convolutional")
            for l1 in (0.0, args.l1)]
    print(f"{'layers':<22} {'L1':>7} {'acc':>6} {'s/epoch':>8} {'test fwd s':>10} {'|w|<eps':>8} "
          f"{'removable':>9} {'acc removed':>11} {'MACs':>9} {'adds+cmp':>10} {'kept MACs':>9} {'kept add+cmp':>12}")
    for r in rows:
        print(f"{r['kind']:<22} {r['l1']:7.1e} {r['accuracy']:6.3f} {r['epoch_s']:8.1f} {r['test_forward_s']:10.2f} "
              f"{r['small']:8.1%} {r['removable']:9.1%} {r['accuracy_removed']:11.3f} {r['macs']:9,} "
              f"{r['adds'] + r['compares']:10,} {r['kept_macs']:9,} {r['kept_adds'] + r['kept_compares']:12,}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
