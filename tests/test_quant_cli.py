"""`dncompress quantize` as a new user runs it: defaults that work, names that do not collide, a report with
sizes and fidelity, and one-line errors with nothing written for bad input."""
import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from dncompress.cli import main
from dncompress.network import Network
from dncompress.quant.packed import read_packed
from dncompress.quant.workflow import default_calibration, default_holdout

from helpers import CFGS, ROOT


def run(args, cwd):
    import os
    old = os.getcwd()
    os.chdir(cwd)
    try:
        return CliRunner().invoke(main, args)
    finally:
        os.chdir(old)


def test_default_images_are_packaged_and_disjoint():
    calib = {p.name for p in default_calibration().iterdir()}
    holdout = {p.name for p in default_holdout().glob("*.jpg")}
    assert len(calib) == 12 and len(holdout) == 7 and not calib & holdout


@pytest.mark.slow
def test_bits_4_out_of_the_box_then_another_format_and_opencv(tiny_weights, tmp_path):
    """No flags but --bits 4 (GPTQ + bias correction on the packaged images); a second run with another
    format writes beside the first; --opencv gives files OpenCV DNN loads and runs like the engine."""
    first = run(["quantize", "--bits", "4", "--calib-images", "6"], tmp_path)
    assert first.exit_code == 0, first.output
    assert "packaged sample images" in first.stdout and "fidelity to the float model" in first.stdout
    assert "35.43 MB -> 4.5" in first.stdout
    packed = tmp_path / "yolov3-tiny-w4a8-packed.dnq"
    assert packed.stat().st_size < 4.7e6
    second = run(["quantize", "--bits", "4", "--act-bits", "none", "--calib-images", "6", "--format", "darknet-q",
                  "--opencv", "--rounding", "nearest"], tmp_path)
    assert second.exit_code == 0, second.output
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(["yolov3-tiny-w4af-darknet-q.cfg", "yolov3-tiny-w4af-darknet-q.weights",
                            "yolov3-tiny-w4af-darknet.cfg", "yolov3-tiny-w4af-darknet.weights", packed.name])
    engine = Network.from_cfg(tmp_path / "yolov3-tiny-w4af-darknet-q.cfg", tmp_path / "yolov3-tiny-w4af-darknet-q.weights")
    cv_net = cv2.dnn.readNetFromDarknet(str(tmp_path / "yolov3-tiny-w4af-darknet.cfg"),
                                        str(tmp_path / "yolov3-tiny-w4af-darknet.weights"))
    cv_net.enableWinograd(False)
    x = cv2.dnn.blobFromImage(cv2.imread(str(ROOT / "samples" / "dog.jpg")), 1 / 255, (416, 416), swapRB=True)
    cv_net.setInput(x)
    for a, b in zip(engine.forward(x, keep={15, 22}), cv_net.forward(["conv_15", "conv_22"])):
        assert np.abs(a - b).max() <= 2e-4
    assert read_packed(packed).layers[2].bitw == 4


@pytest.mark.parametrize("args, message", [
    (["--bits", "9"], "--bits 9 must be 2..8"),
    (["--bits", "1"], "--bits 1 must be 2..8"),
    (["--act-bits", "12"], "must be 2..8 or none"),
    (["--calib", "EMPTY"], "no images"),
])
def test_bad_input_is_one_line_exit_2_nothing_written(tmp_path, args, message):
    (tmp_path / "empty").mkdir()
    args = [str(tmp_path / "empty") if a == "EMPTY" else a for a in args]
    result = run(["quantize", *args, "-o", str(tmp_path / "out")], tmp_path)
    assert result.exit_code == 2 and message in result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error:")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]


def test_requantizing_a_quantized_model_is_refused(tiny_weights, tmp_path):
    cfg = tmp_path / "q.cfg"
    cfg.write_text((CFGS / "yolov3-tiny.cfg").read_text().replace("[convolutional]", "[quantize_convolutional]", 1))
    result = run(["quantize", str(cfg), str(tiny_weights), "--calib-images", "1", "-o", str(tmp_path / "out")], tmp_path)
    assert result.exit_code == 2 and "already [quantize_convolutional]" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q.cfg"]


def test_calibration_images_without_detections_warn(tiny_weights, tmp_path):
    """Blank images: the run goes on (ranges still come from them) but says so."""
    folder = tmp_path / "blank"
    folder.mkdir()
    for i in range(2):
        cv2.imwrite(str(folder / f"{i}.png"), np.full((64, 64, 3), 127, np.uint8))
    result = run(["quantize", "--calib", str(folder), "--rounding", "nearest", "--no-bias-correction",
                  "-o", str(tmp_path / "out")], tmp_path)
    assert result.exit_code == 0, result.output
    assert "warning: the float model detects nothing" in result.stderr
