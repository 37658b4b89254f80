"""The `dncompress` command end to end: detect, errors as one line with exit 2, no overwrites."""
import json
import re
import subprocess
import sys

import pytest
from click.testing import CliRunner

from dncompress.cli import main

from helpers import CFGS, ROOT, example_count

DOG = str(ROOT / "samples" / "dog.jpg")


def run(*args, cwd=None):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_detect_default_model_json(tmp_path, tiny_weights):
    result = run("detect", DOG, "--thresh", "0.5", "--out", tmp_path / "out", "--json")
    assert result.exit_code == 0, result.output
    [entry] = json.loads(result.stdout)
    assert [d["class"] for d in entry["detections"]] == ["car", "bicycle", "dog", "truck", "car"]
    assert (tmp_path / "out" / "dog.jpg").stat().st_size > 10_000


def test_detect_text_lines_and_folder_input(tmp_path, tiny_weights):
    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / "a.jpg").write_bytes((ROOT / "samples" / "dog.jpg").read_bytes())
    (folder / "b.jpg").write_bytes((ROOT / "samples" / "dog.jpg").read_bytes())
    result = run("detect", folder, "--cfg", CFGS / "yolov3-tiny.cfg", "--weights", tiny_weights,
                 "--out", tmp_path / "o", "--resize")
    assert result.exit_code == 0, result.output
    assert result.stdout.count("objects ->") == 2 and "dog" in result.stdout


def test_detect_refuses_to_overwrite_without_force(tmp_path, tiny_weights):
    out = tmp_path / "o"
    assert run("detect", DOG, "--out", out).exit_code == 0
    again = run("detect", DOG, "--out", out)
    assert again.exit_code == 2 and "--force" in again.stderr
    assert run("detect", DOG, "--out", out, "--force").exit_code == 0


@pytest.mark.parametrize("make, message", [
    (lambda p: p.write_bytes(b""), "cannot decode image"),
    (lambda p: p.write_bytes(b"GIF89a nonsense"), "cannot decode image"),
    (lambda p: None, "image not found"),
])
def test_unreadable_image_is_one_line_exit_2(tmp_path, tiny_weights, make, message):
    image = tmp_path / "bad.jpg"
    make(image)
    result = run("detect", image, "--out", tmp_path / "o")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert not (tmp_path / "o").exists()


def test_bad_cfg_through_console_script(tmp_path):
    cfg = tmp_path / "bad.cfg"
    cfg.write_text("[net]\nwidth=416\nheight=416\n[convolutional]\nfilters=16\nsize=3\nactivation=gelu\n")
    done = subprocess.run([sys.executable, "-m", "dncompress", "detect", DOG, "--cfg", cfg, "--weights", cfg],
                          capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr == f"error: {cfg}:line 7 [convolutional] activation: layer 0: unknown activation 'gelu'; " \
                          "supported: hard_mish, leaky, linear, logistic, mish, ramp, relu, relu6, swish, tanh\n"


def test_detect_takes_cfg_and_weights_as_leading_arguments(tmp_path, tiny_weights):
    by_option = run("detect", DOG, "--cfg", CFGS / "yolov3-tiny.cfg", "--weights", tiny_weights,
                    "--out", tmp_path / "a", "--json")
    positional = run("detect", CFGS / "yolov3-tiny.cfg", tiny_weights, DOG, "--out", tmp_path / "b", "--json")
    assert by_option.exit_code == positional.exit_code == 0, positional.output
    strip = (lambda out: [e["detections"] for e in json.loads(out)])
    assert strip(positional.stdout) == strip(by_option.stdout) and strip(positional.stdout)[0]


@pytest.mark.parametrize("args, message", [
    (["{cfg}"], "no image given"),
    (["{cfg}", "{dog}", "--cfg", "{cfg}"], "two cfgs given"),
])
def test_detect_positional_cfg_mistakes_are_one_line(tmp_path, args, message):
    args = [a.format(cfg=CFGS / "yolov3-tiny.cfg", dog=DOG) for a in args]
    result = CliRunner().invoke(main, ["detect", *args, "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and message in result.stderr and result.stderr.count("\n") == 1


def test_every_command_help_has_examples():
    from dncompress.cli import COMMANDS
    for name in COMMANDS:
        result = CliRunner().invoke(main, [name, "--help"])
        assert result.exit_code == 0 and re.search(rf"Examples:\n\s+dncompress {name}\b", result.output), name
        assert 1 <= example_count(result.output) <= 3, name


@pytest.mark.parametrize("args, unwanted", [
    (["--help"], ("numpy", "cv2", "onnx", "onnxruntime", "pycocotools")),     # the list of commands loads none of them
    (["prune", "--help"], ("cv2", "onnx", "onnxruntime", "pycocotools")),
    (["prune", "search", "--help"], ("cv2", "onnx", "onnxruntime", "pycocotools")),
    (["stats", "missing.cfg"], ("cv2", "onnx", "onnxruntime", "pycocotools")),
    (["detect", "nonexistent.jpg"], ("cv2", "onnx", "onnxruntime", "pycocotools")),
])
def test_help_and_errors_load_no_heavy_modules(args, unwanted):
    """`--help` and the error paths import only what they need (the command layer imports lazily; the CPU
    time is measured by tools/bench_cli.py, not here)."""
    code = ("import sys; from dncompress.cli import main\n"
            f"try: main({args!r})\n"
            "except SystemExit: pass\n"
            f"print(sorted(m for m in {unwanted!r} if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout + done.stderr
