"""Ctrl-C in the middle of a long command: exit 130, one `interrupted` line, no traceback, and no
output or temp file left behind. One INTERRUPTIBLE line per long-running command."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from dncompress import fsutil
from dncompress.cli import main

from helpers import CFGS, ROOT, without_progress

DOG = ROOT / "samples" / "dog.jpg"

# name -> (arguments given the work folder, the weights and the output folder; stdout text that
# shows the work has started, so the signal lands mid-way rather than during start-up)
INTERRUPTIBLE = {
    "detect": (lambda work, weights, out: ["detect", work / "images", "--cfg", CFGS / "yolov3-tiny.cfg",
                                           "--weights", weights, "--out", out], "objects ->"),
}


def many_images(folder: Path, count: int) -> None:
    folder.mkdir(parents=True)
    for i in range(count):
        (folder / f"{i:03d}.jpg").write_bytes(DOG.read_bytes())


@pytest.mark.parametrize("name", sorted(INTERRUPTIBLE))
def test_ctrl_c_mid_run_leaves_nothing(name, tmp_path, tiny_weights):
    many_images(tmp_path / "images", 40)
    args, started = INTERRUPTIBLE[name]
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    # a shell's `cmd &` starts jobs with SIGINT ignored, and the child would inherit that: give it the default
    process = subprocess.Popen([sys.executable, "-m", "dncompress", *map(str, args(tmp_path, tiny_weights, out))],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=env,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        seen = 0
        while seen < 2:
            line = process.stdout.readline()
            assert line, "exited before the work started"
            seen += started in line
        time.sleep(0.05)
        assert process.poll() is None, "finished before it could be interrupted"
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert without_progress(stderr) == ["interrupted; no partial output was written"]
    left = {p.relative_to(tmp_path) for p in tmp_path.rglob("*")} - {Path("images")} \
        - {p.relative_to(tmp_path) for p in (tmp_path / "images").iterdir()}
    assert left == set(), left


def test_ctrl_c_during_the_renames_completes_the_set_first(tmp_path, monkeypatch):
    real_replace = os.replace

    def replace_then_ctrl_c(src, dst):
        real_replace(src, dst)
        signal.raise_signal(signal.SIGINT)
    monkeypatch.setattr(fsutil.os, "replace", replace_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        fsutil.atomic_write_many({tmp_path / "m.cfg": b"cfg", tmp_path / "m.weights": b"weights"})
    assert (tmp_path / "m.cfg").read_bytes() == b"cfg" and (tmp_path / "m.weights").read_bytes() == b"weights"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.cfg", "m.weights"]


# name -> (arguments given the weights, a one-image dataset and the output folder; which temp file the
# Ctrl-C precedes)
TINY = CFGS / "yolov3-tiny.cfg"
INTERRUPTED_WRITERS = {
    "prune": (lambda weights, data, out: ["prune", TINY, weights, "--ratio", "0.5", "--criterion", "bn", "-o",
                                          out / "p"], 2),
    "quantize": (lambda weights, data, out: ["quantize", TINY, weights, "--act-bits", "none", "--rounding", "nearest",
                                             "--no-bias-correction", "--format", "darknet-q", "-o", out / "q"], 2),
    "reparam": (lambda weights, data, out: ["reparam", TINY, weights, "-o", out / "r"], 2),
    "export": (lambda weights, data, out: ["export", TINY, weights, "-o", out / "m.onnx"], 1),
    "train": (lambda weights, data, out: ["train", TINY, weights, "--data", data, "--epochs", "1", "--imgsz", "64",
                                          "-o", out / "t"], 3),
}


@pytest.mark.parametrize("name", sorted(INTERRUPTED_WRITERS))
def test_ctrl_c_while_writing_outputs_leaves_none(name, tmp_path, tiny_weights, monkeypatch):
    args, at_call = INTERRUPTED_WRITERS[name]
    real_mkstemp, calls = fsutil.tempfile.mkstemp, []

    def ctrl_c_before_a_temp(*a, **k):
        calls.append(a)
        if len(calls) == at_call:
            raise KeyboardInterrupt
        return real_mkstemp(*a, **k)
    monkeypatch.setattr(fsutil.tempfile, "mkstemp", ctrl_c_before_a_temp)
    many_images(tmp_path / "data" / "images", 1)
    (tmp_path / "data" / "labels").mkdir()
    (tmp_path / "data" / "labels" / "000.txt").write_text("16 0.29 0.66 0.26 0.54\n")
    out = tmp_path / "out"
    out.mkdir()
    result = CliRunner().invoke(main, [str(a) for a in args(tiny_weights, tmp_path / "data", out)])
    assert result.exit_code == 130, result.output
    # progress lines (quantize prints one per conv) may come first
    assert result.stderr.endswith("interrupted; no partial output was written\n") and "Traceback" not in result.stderr
    assert len(calls) == at_call
    assert list(out.iterdir()) == []


def test_sigterm_mid_run_leaves_nothing(tmp_path, tiny_weights):
    """SIGTERM (what `kill`, systemd and CI send) used to kill the process with its hidden temp files still
    there; now it cleans up like Ctrl-C and exits 143."""
    many_images(tmp_path / "images", 40)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    args = INTERRUPTIBLE["detect"][0](tmp_path, tiny_weights, out)
    process = subprocess.Popen([sys.executable, "-m", "dncompress", *map(str, args)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=env)
    try:
        seen = 0
        while seen < 2:
            line = process.stdout.readline()
            assert line, "exited before the work started"
            seen += "objects ->" in line
        assert process.poll() is None, "finished before it could be terminated"
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 143, stderr
    assert without_progress(stderr) == ["terminated; no partial output was written"]
    left = {p.relative_to(tmp_path) for p in tmp_path.rglob("*")} - {Path("images")} \
        - {p.relative_to(tmp_path) for p in (tmp_path / "images").iterdir()}
    assert left == set(), left


def test_sigterm_while_writing_removes_the_temp_files(tmp_path, monkeypatch):
    """A SIGTERM arriving while a temp file is being written: the temps are removed (Terminated is
    raised like KeyboardInterrupt by the CLI's handler)."""
    from dncompress.cli import catch_signals
    previous = catch_signals()
    try:
        def chunks():
            yield b"first part"
            signal.raise_signal(signal.SIGTERM)
            yield b"never written"
        with pytest.raises(fsutil.Terminated):
            fsutil.atomic_write_many({tmp_path / "m.cfg": b"cfg", tmp_path / "m.weights": chunks()})
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_during_start_up_is_one_line(tmp_path):
    """Ctrl-C while the modules load (numpy, click, ...) printed a KeyboardInterrupt traceback."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    code = ("import os, signal, time\n"
            "from dncompress.__main__ import quiet_start_up\n"
            "quiet_start_up()\n"
            "os.kill(os.getpid(), signal.SIGINT)\n"
            "time.sleep(10)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL), timeout=60)
    assert done.returncode == 130 and done.stderr == "interrupted; no partial output was written\n"
