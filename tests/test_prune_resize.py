"""prune --imgsz (input size as a pruning dimension) through the CLI on the real yolov3-tiny weights: every
candidate printed, the best by held-out fidelity written with its input size in the cfg, and the result
loads in OpenCV DNN and runs in detect and eval (which letterbox to the cfg's size)."""
import re

import pytest

from dncompress.network import Network
from dncompress.stats import summary
from helpers import four_image_dataset, opencv_parity, run, small_input_cfg



@pytest.mark.slow
def test_cli_imgsz_candidates_written_at_the_chosen_size(tiny_weights, tmp_path):
    from helpers import ROOT
    cfg = small_input_cfg(tmp_path)          # 192x192: 1.19 BFLOPs; at 160: 0.82, at 128: 0.53
    out = tmp_path / "r"
    result = run(["prune", cfg, tiny_weights, "--target-bflops", "0.8", "--imgsz", "128,160", "--min-keep", "0.9",
                  "--calib", ROOT / "samples", "--calib-images", "3", "--min-fidelity", "0", "-o", out])
    assert result.exit_code == 0, result.output
    rows = re.findall(r"^  (\d+)x(\d+): BFLOPs ([\d.]+), fidelity ([\d.]+) \((\w+)", result.stdout, re.M)
    assert [(int(w), how) for w, _, _, _, how in rows] == [(128, "unpruned"), (160, "channels")]
    assert all(float(b) <= 0.8 * 1.01 for _, _, b, _, _ in rows)
    chosen = re.search(r"^  (\d+)x\d+: .*<- chosen", result.stdout, re.M)
    best = max(rows, key=lambda r: float(r[3]))
    assert chosen and int(chosen.group(1)) == int(best[0])
    method = "method: the input size alone" if best[4] == "unpruned" else "method: one-shot OBS selection"
    assert method in result.stdout and ("sampled rows" in result.stdout) == (best[4] != "unpruned")
    net = Network.from_cfg(f"{out}.cfg", f"{out}.weights")
    assert net.info.width == net.info.height == int(best[0])
    assert summary(net)["bflops"] <= 0.8 * 1.01
    assert opencv_parity(net, tmp_path) <= 2e-4
    detect = run(["detect", f"{out}.cfg", "--weights", f"{out}.weights", ROOT / "samples" / "dog.jpg", "--json",
                  "--out", tmp_path / "det"])
    assert detect.exit_code == 0, detect.output
    evaluated = run(["eval", f"{out}.cfg", f"{out}.weights", "--data", four_image_dataset(tmp_path)])
    assert evaluated.exit_code == 0 and "mAP@0.5" in evaluated.output, evaluated.output
