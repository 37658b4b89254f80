"""What test files share: paths, tiny cfgs and random-weight networks, gradient checks, OpenCV parity.
Imported as `from helpers import ...` (pytest puts tests/ on the path); fixtures stay in conftest.py."""
from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

if TYPE_CHECKING:  # dncompress is imported inside the helpers: conftest imports this module first
    from dncompress.data import Dataset
    from dncompress.network import Network

ROOT = Path(__file__).resolve().parent.parent
CFGS = ROOT / "darknet_cfgs"
SHARED = ROOT.parent / "shared" / "data"
IMAGES = sorted((ROOT / "samples").glob("*.jpg"))
COCO128 = SHARED / "coco128"
# the first 12 coco128 images and labels, shipped: fast tests run without ../shared
COCO_FEW = ROOT / "samples" / "coco12"

# a 96x96 four-conv detector with 80 classes for fast end-to-end runs; format it with lr=
SMALL_CFG = """[net]
width=96
height=96
channels=3
learning_rate={lr}
momentum=0.9
decay=0.0005
burn_in=0
hue=.1
saturation=1.5
exposure=1.5

[convolutional]
batch_normalize=1
filters=8
size=3
stride=1
pad=1
activation=leaky

[maxpool]
size=2
stride=2

[convolutional]
batch_normalize=1
filters=16
size=3
stride=2
pad=1
activation=leaky

[maxpool]
size=2
stride=2

[convolutional]
batch_normalize=1
filters=32
size=3
stride=2
pad=1
activation=leaky

[maxpool]
size=2
stride=1

[convolutional]
size=1
stride=1
pad=1
filters=255
activation=linear

[yolo]
mask=3,4,5
anchors=10,14, 23,27, 37,58, 81,82, 135,169, 344,319
classes=80
num=6
jitter=.2
ignore_thresh=.7

[route]
layers=-3

[upsample]
stride=2

[route]
layers=-1,3

[convolutional]
batch_normalize=1
filters=16
size=3
stride=1
pad=1
activation=leaky

[convolutional]
size=1
stride=1
pad=1
filters=255
activation=linear

[yolo]
mask=0,1,2
anchors=10,14, 23,27, 37,58, 81,82, 135,169, 344,319
classes=80
num=6
jitter=.2
ignore_thresh=.7
"""
DOG = ROOT / "samples" / "dog.jpg"


def small_network(seed: int = 0):
    """SMALL_CFG with seeded random weights, calibrated BN, and heads biased to predict almost nothing
    (evaluating random boxes by the thousand is slow)."""
    from dncompress.cfg import parse_cfg
    from dncompress.network import Network
    net = Network(parse_cfg(SMALL_CFG.format(lr=0.001)))
    net.init_random(seed)
    net.calibrate_batchnorm(np.random.default_rng(seed).random((2, *net.input_shape), dtype=np.float32))
    for head in net.heads:
        conv = net.layers[head.inputs[0]]
        conv.set_params(biases=np.full(conv.filters, -6, np.float32))
    return net


def random_network(name: str, seed: int = 0, width: int | None = None, height: int | None = None):
    """A packaged cfg with seeded random weights and BN statistics calibrated on a random batch."""
    from dncompress.network import Network
    net = Network.from_cfg(CFGS / f"{name}.cfg", width=width, height=height)
    net.init_random(seed)
    rng = np.random.default_rng(seed)
    net.calibrate_batchnorm(rng.random((2, *net.input_shape), dtype=np.float32))
    return net


# tiny float64 networks for gradient checks: build(body) -> a random network from cfg sections
EPS = 1e-6


def build(body: str, c: int = 3, h: int = 8, w: int = 8, seed: int = 0) -> Network:
    """A random float64 network from cfg sections `body` under a [net] of c x h x w."""
    from dncompress.cfg import parse_cfg
    from dncompress.network import Network
    net = Network(parse_cfg(f"[net]\nwidth={w}\nheight={h}\nchannels={c}\n{body}"))
    net.init_random(seed)
    for layer in net.layers:
        if layer.params:
            layer.set_params(**{k: v.astype(np.float64) for k, v in layer.params.items()})
    return net


def objective(net: Network, x: np.ndarray, probes: list[np.ndarray]) -> float:
    from dncompress.train.runner import TrainRun
    outs = TrainRun(net, np.float64).forward(x, update_stats=False, outputs=[len(net.layers) - 1])
    return float(sum((o * r).sum() for o, r in zip(outs, probes)))


def numeric(f, array: np.ndarray, index: tuple, eps: float = EPS) -> float:
    """Central difference of f() in array[index]."""
    keep = array[index]
    array[index] = keep + eps
    up = f()
    array[index] = keep - eps
    down = f()
    array[index] = keep
    return (up - down) / (2 * eps)


def check_network(net: Network, n: int = 2, seed: int = 1, samples: int = 6) -> None:
    """Analytic input and parameter gradients of sum(head * probe) match central differences."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, (n, *net.input_shape))
    from dncompress.train.runner import TrainRun
    run = TrainRun(net, np.float64, input_grad=True)
    outs = run.forward(x, update_stats=False, outputs=[len(net.layers) - 1])
    probes = [rng.normal(0, 1, o.shape) for o in outs]
    grads = run.backward(probes)
    f = lambda: objective(net, x, probes)  # noqa: E731
    checks = [(x, run.input_grad)]
    for index, layer_grads in grads.items():
        for name, g in layer_grads.items():
            checks.append((net.layers[index].params[name], g))
    assert len(checks) > 1 or not any(layer.params for layer in net.layers)
    for array, grad in checks:
        assert grad.shape == array.shape
        for _ in range(samples):
            index = tuple(int(rng.integers(s)) for s in array.shape)
            assert grad[index] == pytest.approx(numeric(f, array, index), rel=1e-5, abs=1e-7), index


CONV = "[convolutional]\nbatch_normalize={bn}\nfilters={f}\nsize={k}\nstride={s}\npad={p}\ngroups={g}\nactivation={a}\n"
HEAD = ("[convolutional]\nfilters=21\nsize=1\nstride=1\nactivation=linear\n"
        "[yolo]\nmask=0,1,2\nanchors=2,3, 5,4, 8,9, 12,10, 20,30, 40,30\nclasses=2\nnum=6\nignore_thresh=0.3\n")


def blob(width=416, height=416):
    """dog.jpg as OpenCV's blobFromImage makes it (1, 3, height, width), RGB in [0, 1]."""
    import cv2
    return cv2.dnn.blobFromImage(cv2.imread(str(DOG)), 1 / 255.0, (width, height), swapRB=True)


def opencv_parity(net: Network, tmp_path) -> float:
    """Max |ours - OpenCV DNN| on the head convs of `net` written to tmp_path (reading it back is exact)."""
    import cv2

    from dncompress.network import Network
    net.save(tmp_path / "p.cfg", tmp_path / "p.weights")
    loaded = Network.from_cfg(tmp_path / "p.cfg", tmp_path / "p.weights")
    cv_net = cv2.dnn.readNetFromDarknet(str(tmp_path / "p.cfg"), str(tmp_path / "p.weights"))
    cv_net.enableWinograd(False)
    x = blob(net.info.width, net.info.height)
    heads = [h.index - 1 for h in loaded.heads]
    cv_net.setInput(x)
    theirs = cv_net.forward([f"conv_{i}" for i in heads])
    ours = loaded.forward(x, keep=set(heads))
    for a, b in zip(net.forward(x, keep=set(heads)), ours):
        np.testing.assert_array_equal(a, b)
    return max(float(np.abs(a - b).max()) for a, b in zip(ours, theirs))


def coco_subset(count: int) -> Dataset:
    """The first `count` shipped coco12 images with their labels."""
    from dncompress.data import Dataset, Sample, parse_labels
    images = sorted((COCO_FEW / "images").glob("*.jpg"))[:count]
    return Dataset([Sample(p, parse_labels(COCO_FEW / "labels" / f"{p.stem}.txt")) for p in images])


def coco128_folder(folder, n, labels=True):
    """The first n coco128 images (and their labels) copied into folder/images, folder/labels."""
    (folder / "images").mkdir(parents=True)
    (folder / "labels").mkdir()
    for image in sorted((COCO_FEW / "images").glob("*.jpg"))[:n]:
        (folder / "images" / image.name).write_bytes(image.read_bytes())
        if labels:
            text = (COCO_FEW / "labels" / f"{image.stem}.txt").read_bytes()
            (folder / "labels" / f"{image.stem}.txt").write_bytes(text)
    return folder


# a counted progress line of the CLI in a log (`detect 2/7`): stderr also carries these before an error
PROGRESS_LINE = re.compile(r"[a-z][\w -]* \d+/\d+")


def without_progress(stderr: str) -> list[str]:
    """The lines of `stderr` that are not counted progress lines."""
    return [line for line in stderr.splitlines() if not PROGRESS_LINE.fullmatch(line)]


def small_input_cfg(tmp_path, side=192):
    """yolov3-tiny at side x side (the real weights still detect the samples' dog, bicycle, horses)."""
    text = (CFGS / "yolov3-tiny.cfg").read_text()
    text = text.replace("width=416", f"width={side}").replace("height=416", f"height={side}")
    cfg = tmp_path / "tiny192.cfg"
    cfg.write_text(text)
    return cfg


def run(args):
    from click.testing import CliRunner
    from dncompress.cli import main
    return CliRunner().invoke(main, [str(a) for a in args])


def four_image_dataset(tmp_path):
    """4 labelled coco12 images (a tiny --data)."""
    from helpers import COCO_FEW
    root = tmp_path / "coco4"
    for sub in ("images", "labels"):
        (root / sub).mkdir(parents=True)
    for image in sorted((COCO_FEW / "images").glob("*.jpg"))[:4]:
        shutil.copy(image, root / "images" / image.name)
        shutil.copy(COCO_FEW / "labels" / f"{image.stem}.txt", root / "labels" / f"{image.stem}.txt")
    return root


def brute_conv(x, w, b, stride, pad, groups):
    n, c, h, wd = x.shape
    o, ci, k, _ = w.shape
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    ho, wo = (h + 2 * pad - k) // stride + 1, (wd + 2 * pad - k) // stride + 1
    y = np.zeros((n, o, ho, wo))
    co = o // groups
    for oc in range(o):
        g = oc // co
        for i in range(ho):
            for j in range(wo):
                patch = xp[:, g * ci:(g + 1) * ci, i * stride:i * stride + k, j * stride:j * stride + k]
                y[:, oc, i, j] = (patch * w[oc]).sum(axis=(1, 2, 3)) + b[oc]
    return y


def example_count(help_text: str) -> int:
    """Command lines in the Examples block of a --help text."""
    block = help_text.split("Examples:\n")[1].split("\n\n")[0]
    return sum(line.strip().startswith("dncompress ") for line in block.splitlines())
