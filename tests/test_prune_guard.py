"""The guard of the default prune method (cli/prune_oneshot.py: run_oneshot): the default fidelity floor refuses a
dead model, --min-fidelity 0 forces the write, a stricter --min-fidelity refuses, and the comparison with
the unpruned model at a smaller input size. The pruning itself is replaced by a stub reporting a chosen
fidelity, so these tests are fast; test_prune_resize.py runs the real thing."""
import numpy as np
import pytest

from dncompress.network import Network
from dncompress.prune.report import pruning_report
from helpers import opencv_parity, run, small_input_cfg



@pytest.fixture
def stub_prune(monkeypatch):
    """Replace the one-shot workflow by one returning the network unchanged with `fidelity` (and baseline)."""
    import dncompress.prune.workflow as workflow
    settings = {"fidelity": 0.0, "baseline": None}

    def fake(net, calib, calib_images, kind, target, *args, **kwargs):
        report = pruning_report(net, net)
        report.update(method="stub", calibration="stub", user_calibration=True, seconds=0.0, calibration_rows=0,
                      holdout_fidelity=settings["fidelity"], input_size=[net.info.width, net.info.height],
                      resize_baseline=settings["baseline"], sparsity=None, steps=[])
        return net, report
    monkeypatch.setattr(workflow, "oneshot_prune", fake)
    return settings


def prune_args(tiny_weights, tmp_path, *extra):
    from helpers import ROOT
    return ["prune", small_input_cfg(tmp_path), tiny_weights, "--target-bflops", "0.8", "--calib", ROOT / "samples",
            *extra, "-o", tmp_path / "out"]


def test_default_floor_refuses_a_dead_model_with_one_line(stub_prune, tiny_weights, tmp_path):
    stub_prune["fidelity"] = 0.05
    result = run(prune_args(tiny_weights, tmp_path))
    assert result.exit_code == 2, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "below the floor 0.1" in errors[0] and "--min-fidelity 0" in errors[0]
    assert "--imgsz auto" in errors[0] and "--finetune" in errors[0]
    assert not list(tmp_path.glob("out*"))


def test_min_fidelity_0_writes_a_dead_model_with_the_warning(stub_prune, tiny_weights, tmp_path):
    stub_prune["fidelity"] = 0.05
    result = run(prune_args(tiny_weights, tmp_path, "--min-fidelity", "0"))
    assert result.exit_code == 0, result.output
    assert "WARNING: fidelity 0.050" in result.stderr
    assert (tmp_path / "out.cfg").exists() and (tmp_path / "out.weights").exists()


def test_stricter_min_fidelity_refuses_what_the_floor_lets_through(stub_prune, tiny_weights, tmp_path):
    stub_prune["fidelity"] = 0.3
    assert run(prune_args(tiny_weights, tmp_path)).exit_code == 0
    for f in tmp_path.glob("out*"):
        f.unlink()
    result = run(prune_args(tiny_weights, tmp_path, "--min-fidelity", "0.5"))
    assert result.exit_code == 2 and "below --min-fidelity 0.5; nothing written" in result.stderr
    assert not list(tmp_path.glob("out*"))


def test_a_better_smaller_input_is_named(stub_prune, tiny_weights, tmp_path):
    stub_prune["fidelity"] = 0.3
    stub_prune["baseline"] = {"size": [160, 160], "bflops": 0.79, "fidelity": 0.9}
    result = run(prune_args(tiny_weights, tmp_path))
    assert result.exit_code == 0, result.output
    assert "unpruned model simply run at 160x160 costs 0.790 BFLOPs" in result.stderr
    assert "--imgsz auto" in result.stderr
    stub_prune["baseline"] = {"size": [160, 160], "bflops": 0.79, "fidelity": 0.2}
    result = run(prune_args(tiny_weights, tmp_path, "--force"))
    assert result.exit_code == 0 and "simply run at" not in result.stderr


def test_resize_needs_a_bflops_target(tiny_weights, tmp_path):
    from helpers import ROOT
    result = run(["prune", small_input_cfg(tmp_path), tiny_weights, "--ratio", "0.5", "--imgsz", "auto", "--calib",
                  ROOT / "samples", "-o", tmp_path / "out"])
    assert result.exit_code == 2 and "--imgsz needs --target-bflops" in result.stderr
    assert not list(tmp_path.glob("out*"))


def test_resize_candidates_and_sizes():
    from helpers import CFGS
    from dncompress.prune.workflow import bflops_at, resize_baseline, resize_candidates, resized
    from dncompress.errors import DncompressError
    from dncompress.stats import summary
    net = Network.from_cfg(CFGS / "yolov3-tiny.cfg")
    net.init_random(0)
    # 320 is the largest size at which the unpruned model costs <= 3.339 BFLOPs (-40%)
    assert bflops_at(net, 320, 320) <= 3.339 < bflops_at(net, 352, 352)
    assert resize_candidates(net, "auto", "bflops", 3.339) == [(320, 320), (352, 352), (384, 384)]
    assert resize_candidates(net, "384,320", "bflops", 3.339) == [(320, 320), (384, 384)]
    assert resize_baseline(net, 3.339) == (320, 320)
    assert resize_baseline(net, 0.01) is None
    for bad in ("300", "448", "x"):
        with pytest.raises(DncompressError):
            resize_candidates(net, bad, "bflops", 3.0)
    small = resized(net, 320, 320)
    assert small.info.width == 320 and net.info.width == 416
    assert summary(small)["bflops"] == pytest.approx(summary(Network.from_cfg(CFGS / "yolov3-tiny.cfg",
                                                                             width=320, height=320))["bflops"])
    assert np.array_equal(small.layers[0].params["weights"], net.layers[0].params["weights"])


@pytest.mark.slow
def test_cli_imgsz_writes_the_candidate_with_the_best_fidelity(monkeypatch, tiny_weights, tmp_path):
    """The --imgsz loop with the OBS pruning stubbed (returns its input): candidates printed, the one with
    the highest held-out fidelity written with its size in the cfg, loading in OpenCV DNN."""
    import re

    import dncompress.prune.workflow as workflow
    from dncompress.prune.oneshot import OneShotResult
    seen = []

    def stub(model, images, target, kind, *args, **kwargs):
        seen.append((model.info.width, images.shape[-1]))
        return OneShotResult(model.copy(), {}, [], False, 0.0, 0)
    monkeypatch.setattr(workflow, "prune_oneshot", stub)
    from helpers import ROOT
    out = tmp_path / "r"
    result = run(["prune", small_input_cfg(tmp_path), tiny_weights, "--target-bflops", "0.8", "--imgsz", "128,160",
                  "--calib", ROOT / "samples", "--calib-images", "3", "--min-fidelity", "0", "-o", out])
    assert result.exit_code == 0, result.output
    assert seen == [(160, 160)]         # 128 meets the target unpruned; 160 is pruned, calibrated at 160
    rows = re.findall(r"^  (\d+)x\d+: BFLOPs ([\d.]+), fidelity ([\d.]+) \((\w+)", result.stdout, re.M)
    assert [(int(w), how) for w, _, _, how in rows] == [(128, "unpruned"), (160, "channels")]
    best = max(rows, key=lambda r: float(r[2]))
    assert re.search(rf"^  {best[0]}x{best[0]}: .*<- chosen", result.stdout, re.M)
    net = Network.from_cfg(f"{out}.cfg", f"{out}.weights")
    assert net.info.width == net.info.height == int(best[0])
    assert opencv_parity(net, tmp_path) <= 2e-4
