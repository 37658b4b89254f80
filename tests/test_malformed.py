"""Malformed inputs through the real `dncompress` command. Every case must give exit code 2, exactly one
stderr line `error: FILE:WHERE: ...` naming the bad file (and its line/section), no traceback, and no
new file anywhere. Table-driven: a command is one COMMANDS line saying how to call it on a set of
valid inputs and which kinds of input it reads; every case of those kinds then runs against it."""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from dncompress.cli import main
from dncompress.network import Network

from helpers import ROOT, without_progress

CORPUS = Path(__file__).parent / "corpus"
VALID_CFG = CORPUS / "valid.cfg"
DOG = ROOT / "samples" / "dog.jpg"


@dataclasses.dataclass
class Inputs:
    """A valid set of everything a command may read, and an empty output folder."""

    cfg: Path
    weights: Path
    images: list[Path]
    names: Path | None
    data: Path  # a YOLO dataset folder: images/ and labels/
    out: Path   # an empty folder


@dataclasses.dataclass(frozen=True)
class Command:
    args: Callable[[Inputs], list]
    reads: frozenset[str]


def command(args: Callable[[Inputs], list], *reads: str) -> Command:
    return Command(args, frozenset(reads))


# One line per command: its arguments on `Inputs`, and the kinds of input it reads.
COMMANDS = {
    "detect": command(lambda i: ["detect", *i.images, "--cfg", i.cfg, "--weights", i.weights, "--out", i.out,
                                 *(["--names", i.names] if i.names else [])],
                      "cfg", "weights", "image", "names", "detector-cfg", "out"),
    "eval": command(lambda i: ["eval", i.cfg, i.weights, "--data", i.data], "cfg", "weights", "labels",
                    "data-image", "detector-cfg"),
    "export": command(lambda i: ["export", i.cfg, i.weights, "-o", i.out / "m.onnx"], "cfg", "weights", "out"),
    "stats": command(lambda i: ["stats", i.cfg, i.weights], "cfg", "weights"),
    "quantize": command(lambda i: ["quantize", i.cfg, i.weights, "--act-bits", "none", "--rounding", "nearest",
                                     "--no-bias-correction", "--format", "darknet-q", "-o", i.out / "q"], "cfg",
                        "weights", "out"),
    "train": command(lambda i: ["train", i.cfg, i.weights, "--data", i.data, "--epochs", "1", "-o", i.out / "t"],
                     "cfg", "weights", "labels", "data-image", "detector-cfg", "out"),
    "prune": command(lambda i: ["prune", i.cfg, i.weights, "--ratio", "0.5", "-o", i.out / "p"], "cfg", "weights",
                     "out"),
    "reparam": command(lambda i: ["reparam", i.cfg, i.weights, "-o", i.out / "r"], "cfg", "weights", "out"),
    "sparsify": command(lambda i: ["sparsify", i.cfg, i.weights, "--pattern", "simd", "--ratio", "0.5",
                                   "-o", i.out / "s"], "cfg", "weights", "out"),
}


@dataclasses.dataclass(frozen=True)
class Case:
    """`make(valid, tmp)` -> (inputs with one bad part, the bad file, WHERE ('' = file only), message).
    See check_refused for WHERE None and alternative messages."""

    kind: str
    name: str
    make: Callable[[Inputs, Path], tuple[Inputs, Path, str, str]]


def corpus_case(path: Path) -> Case:
    """A tests/corpus/cfg file; its line 2 reads `# expect: WHERE | MESSAGE`."""
    header = path.read_bytes().splitlines()[1].decode()
    where, message = (part.strip() for part in header.removeprefix("# expect:").split("|"))
    return Case("cfg", path.stem, lambda i, tmp: (dataclasses.replace(i, cfg=path), path, where, message))


def with_file(field: str, name: str, content: Callable[[Inputs], bytes | None], where: str,
              message: str) -> Callable[[Inputs, Path], tuple]:
    """A maker writing `content(valid)` to tmp/name (None: leave it missing) and using it as `field`."""
    def make(valid: Inputs, tmp: Path):
        path = tmp / name
        data = content(valid)
        if data is not None:
            path.write_bytes(data)
        value = [path] if field == "images" else path
        return dataclasses.replace(valid, **{field: value}), path, where, message
    return make


def weights_case(name: str, content: Callable[[bytes], bytes | None], where: str, message: str) -> Case:
    return Case("weights", name, with_file("weights", "bad.weights", lambda i: content(i.weights.read_bytes()),
                                           where, message))


def with_nan(data: bytes, index: int, value: float = np.nan) -> bytes:
    floats = np.frombuffer(data[20:], "<f4").copy()
    floats[index] = value
    return data[:20] + floats.tobytes()


def weights_dir(tmp: Path) -> None:
    (tmp / "bad.weights").mkdir()


WEIGHTS_CASES = [
    weights_case("truncated", lambda d: d[: len(d) // 2], "layer 2 [convolutional] weights", "weights ran out"),
    weights_case("too_long", lambda d: d + bytes(28), "", "7 floats and 0 bytes left over"),
    weights_case("stray_bytes", lambda d: d + b"\1\2", "", "0 floats and 2 bytes left over"),
    weights_case("wrong_header", lambda d: b"\xff" * 12 + d[12:], "header", "implausible header version"),
    weights_case("empty", lambda d: b"", "header", "file is 0 bytes"),
    weights_case("short_header", lambda d: d[:18], "header", "shorter than the 20-byte header"),
    weights_case("cfg_as_weights", lambda d: VALID_CFG.read_bytes(), "header", "implausible header version"),
    weights_case("nan", lambda d: with_nan(d, 10), "layer 0 [convolutional] scales", "non-finite values"),
    # layer 0: 8 biases, 8 scales, 8 means, then the variances (float 26 = channel 2)
    weights_case("negative_variance", lambda d: with_nan(d, 26, -1.0), "layer 0 [convolutional] rolling_variance",
                 "batchnorm variance -1 < 0 in channel 2"),
    # gamma 1e36 over sqrt(0 + 1e-6): 1e39 > float32's largest
    weights_case("fold_overflows", lambda d: with_nan(with_nan(d, 10, 1e36), 26, 0.0), "layer 0 [convolutional] scales",
                 "overflows float32"),
    weights_case("missing", lambda d: None, "", "weights file not found"),
    Case("weights", "directory", lambda i, tmp: (weights_dir(tmp), dataclasses.replace(i, weights=tmp / "bad.weights"),
                                                  tmp / "bad.weights", "", "weights file not found")[1:]),
]


def good_and_bad_images(valid: Inputs, tmp: Path):
    """A folder where the middle of three images is corrupt: nothing may be written for the other two."""
    folder = tmp / "images"
    folder.mkdir()
    for name in ("1.jpg", "3.jpg"):
        (folder / name).write_bytes(DOG.read_bytes())
    bad = folder / "2_bad.jpg"
    bad.write_bytes(DOG.read_bytes()[:200])
    return dataclasses.replace(valid, images=[folder]), bad, "", "cannot decode image"


def image_dir(valid: Inputs, tmp: Path):
    (tmp / "folder.jpg").mkdir()
    (tmp / "folder.jpg" / "x.txt").write_text("not an image")
    return dataclasses.replace(valid, images=[DOG, tmp / "folder.jpg" / "x.txt"]), tmp / "folder.jpg" / "x.txt", \
        "", "cannot decode image"


# a PNG signature and an IHDR chunk declaring a 0 x 0 image
ZERO_SIZE_PNG = bytes.fromhex("89504e470d0a1a0a0000000d49484452000000000000000008020000000000000000")
# a PNG header declaring 30000 x 30000 (27 GB decoded as float32; the outside corpus had a 0.87 MB file)
HUGE_PNG = bytes.fromhex("89504e470d0a1a0a0000000d49484452") + (30000).to_bytes(4, "big") * 2 + bytes(13)


def huge_jpeg(valid: Inputs) -> bytes:
    """dog.jpg with its frame header (SOF0) claiming 40000 x 40000 pixels."""
    data = bytearray(DOG.read_bytes())
    at = data.index(b"\xff\xc0")
    data[at + 5:at + 9] = (40000).to_bytes(2, "big") * 2
    return bytes(data)


IMAGE_CASES = [
    Case("image", "huge_png", with_file("images", "huge.png", lambda i: HUGE_PNG, "",
                                        "image is 30000x30000 (900 megapixels), over the 64 megapixel limit")),
    Case("image", "huge_jpeg", with_file("images", "huge.jpg", huge_jpeg, "", "image is 40000x40000")),
    Case("image", "empty", with_file("images", "bad.jpg", lambda i: b"", "", "cannot decode image")),
    Case("image", "garbage", with_file("images", "bad.jpg", lambda i: b"GIF89a nonsense", "",
                                       "cannot decode image")),
    Case("image", "zero_size_png", with_file("images", "bad.png", lambda i: ZERO_SIZE_PNG, "",
                                             "cannot decode image")),
    Case("image", "missing", with_file("images", "bad.jpg", lambda i: None, "", "image not found")),
    Case("image", "not_an_image_among_good", image_dir),
    Case("image", "bad_among_good", good_and_bad_images),
]
NAMES_CASES = [
    Case("names", "too_few", with_file("names", "bad.names", lambda i: b"person\nbicycle\n", "",
                                       "has 2 names but the network has 80 classes")),
    Case("names", "non_utf8", with_file("names", "bad.names", lambda i: b"caf\xe9\n" * 80, "",
                                        "cannot read names file")),
    Case("names", "missing", with_file("names", "bad.names", lambda i: None, "", "cannot read names file")),
]
def label_case(name: str, text: bytes, where: str, message: str) -> Case:
    """The dataset's one label file replaced by `text`."""
    def make(valid: Inputs, tmp: Path):
        path = valid.data / "labels" / "dog.txt"
        path.write_bytes(text)
        return valid, path, where, message
    return Case("labels", name, make)


def write_bytes(path: Path, data: bytes) -> tuple[Path]:
    path.write_bytes(data)
    return (path,)


def bad_dataset_image(valid: Inputs, tmp: Path):
    bad = valid.data / "images" / "bad.jpg"
    bad.write_bytes(DOG.read_bytes()[:300])
    return valid, bad, "", "cannot decode image"


def label_folder(valid: Inputs, tmp: Path):
    """The label path of the dataset's image is a folder (was read as 'no objects')."""
    path = valid.data / "labels" / "dog.txt"
    path.unlink()
    path.mkdir()
    return valid, path, "", "label path is a folder"


def no_labels_folder(valid: Inputs, tmp: Path):
    """No labels/ at all: train learned that everything is background, without a word."""
    (valid.data / "labels" / "dog.txt").unlink()
    (valid.data / "labels").rmdir()
    return valid, valid.data, "", "no image has a labelled object"


LABEL_CASES = [
    Case("labels", "label_path_is_a_folder", label_folder),
    Case("labels", "no_labels_folder", no_labels_folder),
    label_case("too_few_fields", b"16 0.5 0.5 0.2\n", "line 1", "malformed label '16 0.5 0.5 0.2'"),
    label_case("not_a_number", b"16 0.5 0.5 0.2 0.2\n1 0.5 x 0.2 0.2\n", "line 2", "malformed label"),
    label_case("negative_class", b"-1 0.5 0.5 0.2 0.2\n", "line 1", "malformed label"),
    label_case("nan_size", b"3 0.5 0.5 nan 0.2\n", "line 1", "malformed label"),
    label_case("float32_overflow", b"3 0.5 0.5 1e39 0.2\n", "line 1", "malformed label"),  # found by fuzzing
    label_case("class_out_of_range", b"95 0.5 0.5 0.2 0.2\n", "line 1", "class 95 but the network has 80 classes"),
    label_case("non_utf8", b"16 0.5 0.5 0.2 0.2 \xff\n", "", "cannot read label file"),
    Case("data-image", "corrupt_image_in_dataset", bad_dataset_image),
    Case("data-image", "huge_image_in_dataset", lambda valid, tmp: (
        valid, *write_bytes(valid.data / "images" / "big.png", HUGE_PNG), "", "over the 64 megapixel limit")),
]
def out_under_a_file(valid: Inputs, tmp: Path):
    """The output folder given is inside a regular file."""
    blocker = tmp / "blocker.txt"
    blocker.write_text("a file, not a folder")
    return dataclasses.replace(valid, out=blocker / "sub"), blocker, None, ("cannot write: Not a directory",
                                                                          "does not exist")


OUTPUT_CASES = [Case("out", "under_a_file", out_under_a_file)]
VALID_TEXT = VALID_CFG.read_text()
# a second head on the first conv's output, 1 class where the first has 80 (line 45 is its classes=)
TWO_HEADS_TEXT = VALID_TEXT + "[route]\nlayers=-4\n" + VALID_TEXT.split("[maxpool]")[1].replace(
    "size=2\nstride=2\n", "").replace("255", "18").replace("classes=80", "classes=1")


def detector_case(name: str, text: str, where: str, message: str) -> Case:
    """A cfg every layer of which builds, with matching random weights, that still cannot detect."""
    def make(valid: Inputs, tmp: Path):
        cfg = tmp / f"{name}.cfg"
        cfg.write_text(text)
        net = Network.from_cfg(cfg)
        net.init_random(0)
        net.save(cfg, tmp / f"{name}.weights")
        return dataclasses.replace(valid, cfg=cfg, weights=tmp / f"{name}.weights"), cfg, where, message
    return Case("detector-cfg", name, make)


DETECTOR_CASES = [
    detector_case("no_head", VALID_TEXT.split("[yolo]")[0], "", "has no [yolo] or [region] layer"),
    detector_case("heads_disagree", TWO_HEADS_TEXT, "line 45 [yolo] classes",
                  "detection heads disagree on classes= (1, 80)"),
]
CASES = [corpus_case(p) for p in sorted((CORPUS / "cfg").glob("*.cfg"))] + WEIGHTS_CASES + IMAGE_CASES \
    + NAMES_CASES + LABEL_CASES + DETECTOR_CASES + OUTPUT_CASES
PAIRS = [pytest.param(name, case, id=f"{name}-{case.kind}-{case.name}")
         for name, cmd in COMMANDS.items() for case in CASES if case.kind in cmd.reads]
# run through a real `python -m dncompress` process, not just CliRunner
SUBPROCESS_IDS = {"detect-cfg-filters_huge", "detect-cfg-non_utf8", "detect-weights-truncated",
                  "detect-image-bad_among_good"}


@pytest.fixture(scope="session")
def valid_weights(tmp_path_factory) -> Path:
    net = Network.from_cfg(VALID_CFG)
    net.init_random(0)
    path = tmp_path_factory.mktemp("valid") / "valid.weights"
    net.save(path.with_suffix(".cfg"), path)
    return path


@pytest.fixture
def valid(valid_weights, tmp_path, monkeypatch) -> Inputs:
    monkeypatch.chdir(tmp_path)  # default output folders (runs/...) would appear here
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "labels").mkdir()
    (data / "images" / "dog.jpg").write_bytes(DOG.read_bytes())
    (data / "labels" / "dog.txt").write_text("16 0.29 0.66 0.26 0.54\n")
    (tmp_path / "out").mkdir()
    return Inputs(VALID_CFG, valid_weights, [DOG], None, data, tmp_path / "out")


def tree(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def check_refused(code: int, stderr: str, bad: Path, where: str | None, message: str | tuple[str, ...]) -> None:
    """`where` None: the error names `bad` or a path inside it; `message` may list alternatives."""
    assert "Traceback" not in stderr
    assert code == 2, stderr
    # the error is the one line besides the progress of work done before the bad input was reached
    # (`detect 1/3`: logs show progress one line per step)
    lines = without_progress(stderr)
    assert len(lines) == 1 and stderr.splitlines()[-1] == lines[0], stderr
    place = f"{bad}/" if where is None else f"{bad}:{where + ':' if where else ''}"
    assert lines[0].startswith(f"error: {place}"), lines[0]
    assert any(m in lines[0] for m in ((message,) if isinstance(message, str) else message)), lines[0]


def test_every_corpus_file_has_an_expectation_and_the_valid_inputs_work(valid):
    assert len(list((CORPUS / "cfg").glob("*.cfg"))) >= 25
    for name, cmd in COMMANDS.items():
        result = CliRunner().invoke(main, [str(a) for a in cmd.args(valid)])
        assert result.exit_code == 0, (name, result.output, result.exception)


@pytest.mark.parametrize("name, case", PAIRS)
def test_malformed_input_is_one_line_exit_2_and_writes_nothing(name, case, valid, tmp_path):
    inputs, bad, where, message = case.make(valid, tmp_path)
    before = tree(tmp_path)
    result = CliRunner().invoke(main, [str(a) for a in COMMANDS[name].args(inputs)])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    check_refused(result.exit_code, result.stderr, bad, where, message)
    assert tree(tmp_path) == before


@pytest.mark.parametrize("name, case", [p for p in PAIRS if p.id in SUBPROCESS_IDS])
def test_malformed_input_through_the_console_command(name, case, valid, tmp_path):
    inputs, bad, where, message = case.make(valid, tmp_path)
    before = tree(tmp_path)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "dncompress", *map(str, COMMANDS[name].args(inputs))],
                          capture_output=True, text=True, cwd=tmp_path, env=env)
    check_refused(done.returncode, done.stderr, bad, where, message)
    assert tree(tmp_path) == before
