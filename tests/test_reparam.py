"""Structural reparameterization: every fold is exact in the engine and in OpenCV DNN, references are
renumbered, and blocks that cannot be folded exactly stay as they are."""
import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from dncompress.cfg import parse_cfg, read_cfg, write_cfg
from dncompress.cli import main
from dncompress.network import Network
from dncompress.reparam import head_difference, reparameterize

from helpers import CFGS, ROOT, random_network

NET = "[net]\nwidth=16\nheight=16\nchannels=3\n"


def conv(filters=8, size=3, stride=1, pad=1, activation="linear", bn=1, groups=1, padding=None) -> str:
    text = f"\n[convolutional]\nbatch_normalize={bn}\nfilters={filters}\nsize={size}\nstride={stride}\npad={pad}\n"
    text += f"groups={groups}\n" if groups != 1 else ""
    text += f"padding={padding}\n" if padding is not None else ""
    return text + f"activation={activation}\n"


def route(layers) -> str:
    return f"\n[route]\nlayers={layers}\n"


def shortcut(source, activation="leaky") -> str:
    return f"\n[shortcut]\nfrom={source}\nactivation={activation}\n"


STEM = NET + conv(activation="leaky")
YOLO = "\n[yolo]\nmask=0,1,2\nanchors=10,14,23,27,37,58\nclasses=1\nnum=3\n"


def build(text: str, seed: int = 0) -> tuple[Network, np.ndarray]:
    """A random-weight network from cfg text, BN calibrated on the batch it returns."""
    net = Network(parse_cfg(text))
    net.init_random(seed)
    x = np.random.default_rng(seed).random((2, *net.input_shape), dtype=np.float32)
    net.calibrate_batchnorm(x)
    return net, x


FOLDABLE = {
    "3x3 + 1x1": conv() + route(-2) + conv(size=1) + shortcut(-3),
    "1x1 + 3x3": conv(size=1) + route(-2) + conv() + shortcut(-3),
    "3x3 + identity": conv() + shortcut(-2),
    "3x3 + 1x1 + identity": conv() + route(-2) + conv(size=1) + shortcut(-3, "linear") + shortcut(-5),
    "identity by absolute index": conv() + route(-2) + conv(size=1) + shortcut(-3, "linear") + shortcut(0),
    "strided 3x3 + 1x1": conv(stride=2) + route(-2) + conv(size=1, stride=2) + shortcut(-3),
    "5x5 + 3x3 + 1x1": conv(size=5) + route(-2) + conv() + shortcut(-3, "linear") + route(-5) + conv(size=1)
    + shortcut(-3, "mish"),
    "grouped 3x3 + 1x1 + identity": conv(groups=2) + route(-2) + conv(size=1, groups=2) + shortcut(-3, "linear")
    + shortcut(-5),
    "grouped 3x3 + dense 3x3": conv(groups=2) + route(-2) + conv() + shortcut(-3),
    "3x3 -> 1x1": conv(filters=8) + conv(size=1, activation="leaky"),
    "1x1 -> 1x1": conv(filters=16, size=1) + conv(size=1, activation="leaky"),
    "1x1 -> unpadded 3x3": conv(filters=16, size=1) + conv(pad=0, activation="leaky"),
}


@pytest.mark.parametrize("name", FOLDABLE)
def test_fold_is_exact_and_leaves_one_conv(name):
    net, x = build(STEM + FOLDABLE[name])
    folded, bn_folded, folds = reparameterize(net)
    assert [layer.type for layer in folded.layers] == ["convolutional"] * 2, write_cfg(folded.sections)
    assert not any(layer.batch_normalize for layer in folded.layers)
    assert len(folds) == 1 and folds[0].layers == list(range(1, len(net.layers)))
    assert head_difference(net, folded, x) <= 1e-5
    assert folded.param_count() < net.param_count()


def test_three_branches_are_reported_as_one_fold():
    net, _ = build(STEM + FOLDABLE["3x3 + 1x1 + identity"])
    [fold] = reparameterize(net)[2]
    assert fold.describe() == "parallel   layers 1, 2, 3, 4, 5: 3x3 conv + 1x1 conv + identity => one 3x3 conv (leaky)"


NOT_FOLDABLE = {
    "branch with another reader": conv() + route(-2) + conv(size=1) + shortcut(-3) + route("-1,-4"),
    "absolute reference to a branch": conv() + route(-2) + conv(size=1) + shortcut(-3) + route("-1,3"),
    "non-linear branch": conv(activation="leaky") + route(-2) + conv(size=1) + shortcut(-3),
    "identity on a strided conv": conv(stride=2) + conv(stride=1, activation="leaky") + shortcut(-2),
    "grouped 3x3 + dense 1x1 (a dense 3x3 costs more)": conv(groups=4) + route(-2) + conv(size=1) + shortcut(-3),
    "bottleneck 1x1 -> 1x1 (merging costs more)": conv(filters=2, size=1) + conv(size=1, activation="leaky"),
    "1x1 with bias -> padded 3x3": conv(filters=16, size=1, bn=0) + conv(activation="leaky"),
    "misaligned 3x3 padding=1 + 3x3 padding=2 (stride 3)": conv(stride=3, pad=0, padding=1) + route(-2)
    + conv(stride=3, pad=0, padding=2) + shortcut(-3),
    "strides differ": "\n[maxpool]\nsize=4\nstride=4\n" + conv(pad=0) + route(-2) + conv(size=1, stride=2)
    + shortcut(-3),
}


@pytest.mark.parametrize("name", NOT_FOLDABLE)
def test_unfoldable_block_stays(name):
    net, x = build(STEM + NOT_FOLDABLE[name])
    folded, bn_folded, folds = reparameterize(net)
    assert folds == [] and len(folded.layers) == len(net.layers)
    assert [s.type for s in folded.sections] == [s.type for s in net.sections]
    assert head_difference(net, folded, x) <= 1e-6


def test_references_after_the_block_are_renumbered():
    text = (STEM + conv() + route(-2) + conv(size=1) + shortcut(-3, "linear") + shortcut(0)  # layers 1-5
            + route("-1, 0") + conv(filters=12, size=1) + conv(filters=18, size=1) + YOLO  # 6-9
            + route(-5) + conv(filters=8, size=1, activation="leaky") + shortcut(-7) + route("5, 0")  # 10-13
            + route("-1, 12") + conv(filters=18, size=1, bn=0) + YOLO)  # 14-16
    net, x = build(text)
    folded, _, folds = reparameterize(net)
    assert [f.kind for f in folds] == ["parallel", "sequential"]
    sections = folded.sections[1:]
    references = [(s.type, s.options.get("layers", s.options.get("from"))) for s in sections
                  if s.type in ("route", "shortcut")]
    assert references == [("route", "-1,0"), ("route", "-4"), ("shortcut", "-6"), ("route", "1,0"),
                          ("route", "-1,7")]
    assert [s.options["mask"] for s in sections if s.type == "yolo"] == ["0,1,2", "0,1,2"]
    assert len(folded.layers) == len(net.layers) - 5
    assert head_difference(net, folded, x) <= 1e-5


def opencv_difference(net: Network, tmp_path, x: np.ndarray) -> float:
    """Largest |engine - OpenCV DNN| on the convs feeding the heads, relative to their scale."""
    net.save(tmp_path / "m.cfg", tmp_path / "m.weights")
    cv_net = cv2.dnn.readNetFromDarknet(str(tmp_path / "m.cfg"), str(tmp_path / "m.weights"))
    cv_net.enableWinograd(False)
    heads = [h.index - 1 for h in net.heads]
    cv_net.setInput(x)
    theirs = cv_net.forward([f"conv_{i}" for i in heads])
    ours = net.forward(x, keep=set(heads))
    return max(float(np.abs(a - b).max() / np.abs(a).max()) for a, b in zip(ours, theirs))


def test_yolov3_tiny_rep_folds_into_yolov3_tiny_and_opencv_agrees(tmp_path):
    net = random_network("yolov3-tiny-rep", seed=3, width=128, height=128)
    folded, bn_folded, folds = reparameterize(net)
    assert len(folds) == 8 and len(net.layers) == 48 and len(folded.layers) == 24
    tiny = read_cfg(CFGS / "yolov3-tiny.cfg")[1:]
    for a, b in zip(tiny, folded.sections[1:], strict=True):
        assert a.type == b.type
        assert {k: v for k, v in a.options.items() if k != "batch_normalize"} == \
            {k: v for k, v in b.options.items() if k != "batch_normalize"}
    x = np.random.default_rng(0).random((1, 3, 128, 128), dtype=np.float32)
    assert head_difference(net, folded, x) <= 1e-5
    assert opencv_difference(net, tmp_path, x) <= 1e-4  # the multi-branch cfg loads in OpenCV too
    assert opencv_difference(folded, tmp_path, x) <= 1e-4


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_cli_folds_real_yolov3_tiny_bn_exactly(tiny_net, tiny_weights, tmp_path):
    prefix = tmp_path / "tiny"
    result = run("reparam", CFGS / "yolov3-tiny.cfg", tiny_weights, "-o", prefix)
    assert result.exit_code == 0, result.output
    assert "batchnorm folded into 11 convs" in result.stdout
    assert "layers 24 -> 24; params 8,858,734 -> 8,849,182" in result.stdout
    folded = Network.from_cfg(f"{prefix}.cfg", f"{prefix}.weights")
    assert "batch_normalize=1" not in (tmp_path / "tiny.cfg").read_text()
    x = cv2.dnn.blobFromImage(cv2.imread(str(ROOT / "samples" / "dog.jpg")), 1 / 255, (416, 416), swapRB=True)
    for a, b in zip(tiny_net.forward(x), folded.forward(x)):
        np.testing.assert_array_equal(a, b)  # the engine runs these very folded weights
    assert opencv_difference(folded, tmp_path, x) <= 1e-4


def test_cli_refuses_to_overwrite(tmp_path):
    net, _ = build(STEM + FOLDABLE["3x3 + 1x1"])
    cfg, weights = tmp_path / "m.cfg", tmp_path / "m.weights"
    net.save(cfg, weights)
    again = run("reparam", cfg, weights, "-o", tmp_path / "m", "--force")
    assert again.exit_code == 2 and "overwrite an input" in again.stderr
    (tmp_path / "out.weights").write_bytes(b"keep")
    refused = run("reparam", cfg, weights, "-o", tmp_path / "out")
    assert refused.exit_code == 2 and "--force" in refused.stderr and "Traceback" not in refused.stderr
    assert (tmp_path / "out.weights").read_bytes() == b"keep" and not (tmp_path / "out.cfg").exists()
    result = run("reparam", cfg, weights, "-o", tmp_path / "out", "--force")
    assert result.exit_code == 0 and "layers 5 -> 2" in result.stdout
    assert len(Network.from_cfg(tmp_path / "out.cfg", tmp_path / "out.weights").layers) == 2


def test_cli_on_a_network_without_anything_to_fold(tmp_path):
    net, _ = build(NET + conv(bn=0, activation="leaky") + conv(size=1, bn=0))
    net.save(tmp_path / "m.cfg", tmp_path / "m.weights")
    result = run("reparam", tmp_path / "m.cfg", tmp_path / "m.weights", "-o", tmp_path / "out")
    assert result.exit_code == 0 and "nothing to fold" in result.stdout
    assert (tmp_path / "out.cfg").read_text() == (tmp_path / "m.cfg").read_text()
