"""The default prune method (obs) followed by --finetune, through the CLI on a tiny budget: real yolov3-tiny
weights at 192x192, 3 calibration images, one epoch at 64x64 on the 7 sample photos, a 4-image --data."""
import re

import numpy as np
import pytest

from dncompress.network import Network
from helpers import four_image_dataset, opencv_parity, run, small_input_cfg



@pytest.mark.slow
def test_cli_obs_then_finetune_writes_the_recovered_model(tiny_weights, tmp_path):
    from helpers import ROOT
    out = tmp_path / "ft"
    result = run(["prune", small_input_cfg(tmp_path), tiny_weights, "--target-bflops", "1.05", "--min-keep", "0.8",
                  "--calib", ROOT / "samples", "--calib-images", "3", "--finetune", "1", "--finetune-imgsz", "64",
                  "--batch", "4", "--data", four_image_dataset(tmp_path), "-o", out])
    assert result.exit_code == 0, result.output
    assert "method: one-shot OBS selection" in result.stdout
    assert re.search(r"fine-tune epoch 1/1 step \d+/\d+", result.stderr)
    assert "pruned -> " in result.stdout and "fine-tuned" in result.stdout and "mAP@0.5: original" in result.stdout
    assert "fidelity floor (--min-fidelity) is not applied" in result.stderr
    tuned = Network.from_cfg(f"{out}.cfg", f"{out}.weights")
    original = Network.from_cfg(small_input_cfg(tmp_path), tiny_weights)
    assert tuned.info.width == 192 and tuned.param_count() < original.param_count()
    assert all(np.isfinite(t).all() for t in tuned.weight_tensors())
    assert opencv_parity(tuned, tmp_path) <= 2e-4
