"""`dncompress quantize` end to end: every format, sizes, --force rules, user errors as one line."""
import pytest
from click.testing import CliRunner

from dncompress.cli import main
from dncompress.network import Network
from dncompress.quant.packed import read_packed

from conftest import CFGS, ROOT


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def calib(tmp_path_factory):
    folder = tmp_path_factory.mktemp("calib")
    for name in ("dog.jpg", "horses.jpg"):
        (folder / name).write_bytes((ROOT / "samples" / name).read_bytes())
    return folder


@pytest.mark.parametrize("fmt, suffixes", [("darknet-q", [".cfg", ".weights"]), ("darknet", [".cfg", ".weights"]),
                                           ("packed", [".dnq"]), ("onnx", [".onnx"])])
def test_quantize_every_format_then_force_rules(tmp_path, calib, tiny_weights, fmt, suffixes):
    prefix = tmp_path / "q"
    args = ("quantize", CFGS / "yolov3-tiny.cfg", tiny_weights, "--bits", "4", "--calib", calib, "-o", prefix,
            "--format", fmt)
    result = run(*args)
    assert result.exit_code == 0, result.output
    assert "quantized 13 convs (0:w8, 2:w4" in result.output and "22:w8)" in result.output
    for suffix in suffixes:
        assert (tmp_path / f"q{suffix}").stat().st_size > 1000
    again = run(*args)
    assert again.exit_code == 2 and "output exists; pass --force" in again.output
    assert run(*args, "--force").exit_code == 0


def test_quantized_cfg_runs_in_detect_and_packed_is_small(tmp_path, calib, tiny_weights):
    for fmt in ("darknet-q", "packed"):
        assert run("quantize", "--bits", "4", "--act-bits", "none", "-o", tmp_path / "q", "--format", fmt).exit_code == 0
    net = Network.from_cfg(tmp_path / "q.cfg", tmp_path / "q.weights")
    assert sum(layer.type == "quantize_convolutional" for layer in net.layers) == 13
    restored = read_packed(tmp_path / "q.dnq")
    for a, b in zip(net.weight_tensors(), restored.weight_tensors()):
        assert (a == b).all()
    assert (tmp_path / "q.dnq").stat().st_size < (tmp_path / "q.weights").stat().st_size / 7
    result = run("detect", ROOT / "samples" / "dog.jpg", "--cfg", tmp_path / "q.cfg", "--weights",
                 tmp_path / "q.weights", "--out", tmp_path / "det", "--thresh", "0.5")
    assert result.exit_code == 0 and "dog" in result.output


@pytest.mark.parametrize("extra, message", [
    (["--act-bits", "9"], "is not 2..8 or none"),
    (["--act-bits", "8"], "need calibration images (--calib DIR)"),
    (["--bits", "1"], "1 is not in the range 2<=x<=8"),
])
def test_user_errors(tmp_path, tiny_weights, extra, message):
    result = run("quantize", "-o", tmp_path / "q", *extra)
    assert result.exit_code == 2 and message in result.output
    assert not list(tmp_path.iterdir())


def test_refuses_to_write_over_its_input(tmp_path, tiny_weights):
    cfg = tmp_path / "m.cfg"
    cfg.write_text((CFGS / "yolov3-tiny.cfg").read_text())
    result = run("quantize", cfg, tiny_weights, "--act-bits", "none", "-o", tmp_path / "m", "--force")
    assert result.exit_code == 2 and "overwrite an input" in result.output
