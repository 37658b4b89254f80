"""Issue 18's target: `prune --ratio 0.5` and `quantize --bits 8` outputs of YOLOv4-tiny, YOLOv4, YOLOv4-csp,
YOLOv7-tiny and YOLOv3-spp (AlexeyAB's cfgs, random weights with calibrated BN at 128x128) load in OpenCV
DNN and match the engine (OpenCV without Winograd; past 1e-4 both against a float64 run, as
tests/test_darknet_cfgs.py). Prune uses --criterion bn (the default one-shot method refuses a random
network that detects nothing); quantize writes plain Darknet (--format darknet: on-grid weights, float
activations, what OpenCV can load)."""
from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from dncompress.cli import main
from dncompress.network import Network

from darknet_reference import engine_outputs, opencv_outputs, random_calibrated
from darknet_reference import ALEXEYAB, CFGS, same_maths

TARGETS = ["yolov4-tiny.cfg", "yolov4.cfg", "yolov4-csp.cfg", "yolov7-tiny.cfg", "yolov3-spp.cfg"]
COMMANDS = {
    "prune": ["prune", "--ratio", "0.5", "--criterion", "bn"],
    "quantize": ["quantize", "--bits", "8", "--act-bits", "none", "--format", "darknet", "--rounding", "nearest",
                 "--no-bias-correction"],
}
pytestmark = [pytest.mark.slow, pytest.mark.skipif(len(CFGS) != 93, reason="needs the 93 AlexeyAB cfgs")]


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("name", TARGETS)
def test_compressed_model_loads_in_opencv_and_matches(name, command, tmp_path):
    net = random_calibrated(ALEXEYAB / name, 128)
    net.save(tmp_path / "m.cfg", tmp_path / "m.weights")
    out = tmp_path / "out"
    result = CliRunner().invoke(main, [*COMMANDS[command][:1], str(tmp_path / "m.cfg"), str(tmp_path / "m.weights"),
                                       *COMMANDS[command][1:], "-o", str(out)])
    assert result.exit_code == 0, result.output
    cfg = next(tmp_path.glob("out*.cfg"))
    small = Network.from_cfg(cfg, cfg.with_suffix(".weights"))
    if command == "prune":
        assert small.param_count() < 0.9 * net.param_count()
    else:
        assert all(len(np.unique(layer.folded()[0][0])) <= 255 for layer in small.layers
                   if layer.type == "convolutional")          # on an 8-bit grid (per channel)
    x = np.random.default_rng(1).random((1, *small.input_shape), dtype=np.float32)
    keep, theirs = opencv_outputs(small, x, winograd=False)
    same_maths("OpenCV", theirs, engine_outputs(small, x, keep), lambda: engine_outputs(small, x, keep, np.float64))
