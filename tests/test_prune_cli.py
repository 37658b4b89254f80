"""`dncompress prune` as a group of modes: the default route (channels), each mode's own help, the old
one-command spellings routed with a note, and a model file named like a mode."""
import re

import pytest
from click.testing import CliRunner

from dncompress.cli import main
from dncompress.cli.prune import MODES, route
from dncompress.errors import DncompressError

from helpers import COCO_FEW, example_count, small_network


@pytest.mark.parametrize("args, routed", [
    (["yolov3-tiny.cfg", "--ratio", "0.7"], ["channels", "yolov3-tiny.cfg", "--ratio", "0.7"]),
    (["--ratio", "0.7"], ["channels", "--ratio", "0.7"]),
    ([], ["channels"]),
    (["--help"], ["channels", "--help"]),
    (["search", "m.cfg", "--target-bflops", "3"], ["search", "m.cfg", "--target-bflops", "3"]),
    (["m.cfg", "--search", "--data", "d"], ["search", "m.cfg", "--data", "d"]),
    (["m.cfg", "--sensitivity", "--data", "d"], ["sensitivity", "m.cfg", "--data", "d"]),
    (["m.cfg", "--criterion", "energy", "--ratio", "0.5"], ["energy", "m.cfg", "--ratio", "0.5"]),
    (["--criterion=energy", "--ratio", "0.5"], ["energy", "--ratio", "0.5"]),
    (["--criterion", "bn", "--ratio", "0.5"], ["channels", "--criterion", "bn", "--ratio", "0.5"]),
    (["--ratio", "0.5", "--", "--search"], ["channels", "--ratio", "0.5", "--", "--search"]),
    (["m.cfg", "search", "--ratio", "0.5"], ["channels", "m.cfg", "search", "--ratio", "0.5"]),  # weights named "search"
])
def test_route_puts_the_mode_first(args, routed):
    assert route(args) == routed


def test_route_refuses_two_old_mode_flags():
    with pytest.raises(DncompressError, match="prune search | prune sensitivity"):
        route(["--search", "--sensitivity"])


def test_default_route_is_the_channels_mode(tmp_path):
    small_network().save(tmp_path / "s.cfg", tmp_path / "s.weights")
    runner = CliRunner()
    model = [str(tmp_path / "s.cfg"), str(tmp_path / "s.weights"), "--ratio", "0.5", "--criterion", "l1"]
    default = runner.invoke(main, ["prune", *model, "-o", str(tmp_path / "a")])
    explicit = runner.invoke(main, ["prune", "channels", *model, "-o", str(tmp_path / "b")])
    assert default.exit_code == 0 and explicit.exit_code == 0, default.output + explicit.output
    assert "BFLOPs" in default.stdout and default.stderr == ""
    for suffix in (".cfg", ".weights"):
        assert (tmp_path / f"a{suffix}").read_bytes() == (tmp_path / f"b{suffix}").read_bytes()
    assert (tmp_path / "a.cfg").read_bytes() != (tmp_path / "s.cfg").read_bytes()


@pytest.mark.parametrize("old, message", [
    (["--search", "--data", str(COCO_FEW), "--target-bflops", "100"], "nothing to prune"),
    (["--sensitivity", "--data", str(COCO_FEW), "--ratios", "2"], "--ratios '2' must be numbers between 0 and 1"),
    (["--criterion", "energy", "--ratio", "0.5", "--calib", str(COCO_FEW), "--calib-images", "2"],
     "detects nothing"),
])
def test_old_spellings_run_their_mode_with_a_note(tmp_path, old, message):
    small_network().save(tmp_path / "s.cfg", tmp_path / "s.weights")
    result = CliRunner().invoke(main, ["prune", str(tmp_path / "s.cfg"), str(tmp_path / "s.weights"), *old,
                                       "-o", str(tmp_path / "o")])
    lines = result.stderr.splitlines()
    note, error = lines[0], lines[-1]
    mode = {"--search": "search", "--sensitivity": "sensitivity", "--criterion": "energy"}[old[0]]
    assert note.startswith("note: `prune ") and f"is now `dncompress prune {mode} ...`" in note
    assert result.exit_code == 2 and error.startswith("error: ") and message in error
    assert not list(tmp_path.glob("o*"))


def test_an_option_of_another_mode_is_refused():
    result = CliRunner().invoke(main, ["prune", "--search", "--max-drop", "0.1"])
    assert result.exit_code == 2 and "No such option '--max-drop'" in result.stderr


# an option each mode has and the others' options it must not show
OWN_OPTIONS = {"channels": ("--ratio", ["--max-drop", "--epochs", "--penalty", "--ratios", "--search"]),
               "energy": ("--max-drop", ["--epochs", "--finetune", "--imgsz", "--ratios", "--classes"]),
               "search": ("--penalty", ["--max-drop", "--finetune", "--ratio ", "--ratios", "--classes"]),
               "sensitivity": ("--ratios", ["--max-drop", "--finetune", "--epochs", "--target-bflops"])}


@pytest.mark.parametrize("mode", list(MODES))
def test_each_mode_help_has_examples_and_only_its_options(mode):
    result = CliRunner().invoke(main, ["prune", mode, "--help"])
    assert result.exit_code == 0
    first = "yolov3-tiny.cfg --ratio 0.7" if mode == "channels" else f"{mode} yolov3-tiny"
    assert re.search(rf"Examples:\n\s+dncompress prune {re.escape(first)}", result.output)
    assert 1 <= example_count(result.output) <= 3
    own, others = OWN_OPTIONS[mode]
    assert own in result.output and not [o for o in others if o in result.output]


def test_prune_help_is_the_default_mode_with_the_modes_listed():
    runner = CliRunner()
    bare = runner.invoke(main, ["prune", "--help"])
    assert bare.exit_code == 0 and bare.output == runner.invoke(main, ["prune", "channels", "--help"]).output
    assert "prune [channels] [OPTIONS] [CFG] [WEIGHTS]" in bare.output
    modes = bare.output.split("Modes (dncompress prune MODE --help):")[1]
    assert [line.split()[0] for line in modes.splitlines() if line.startswith("  ") and line[2] != " "] == list(MODES)


def test_a_model_file_named_like_a_mode(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    small_network().save(tmp_path / "search.cfg", tmp_path / "search.weights")
    runner = CliRunner()
    mode = runner.invoke(main, ["prune", "search", "--help"])
    assert mode.exit_code == 0 and "note: 'search' is read as the mode `prune search`" in mode.stderr
    assert "./search" in mode.stderr
    as_file = runner.invoke(main, ["prune", "./search.cfg", "--ratio", "0.5", "--criterion", "l1", "-o", "p"])
    named = runner.invoke(main, ["prune", "channels", "search", "--ratio", "0.5", "--criterion", "l1", "-o", "q"])
    assert as_file.exit_code == 0 and named.exit_code == 0, as_file.output + named.output
    assert (tmp_path / "p.weights").read_bytes() == (tmp_path / "q.weights").read_bytes()
