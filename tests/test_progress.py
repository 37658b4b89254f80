"""Progress: the library reports through dncompress.progress, only cli/ renders (and imports click)."""
from __future__ import annotations

import ast
import sys
from pathlib import Path

from click.testing import CliRunner

from dncompress.cli import main
from dncompress.cli.common import ProgressLines
from dncompress.progress import counted, sink, silent

from helpers import COCO_FEW, ROOT, small_network

PACKAGE = ROOT / "dncompress"


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


def test_no_module_below_cli_imports_click():
    below = [p for p in PACKAGE.rglob("*.py") if "cli" not in p.relative_to(PACKAGE).parts]
    assert len(below) > 50
    offenders = [str(p.relative_to(ROOT)) for p in below if "click" in imported_modules(p)]
    assert offenders == []


def test_no_test_file_imports_another():
    """Shared test code lives in helpers.py (and darknet_reference.py), not in test files others import."""
    tests = sorted((ROOT / "tests").glob("test_*.py"))
    assert len(tests) > 50
    offenders = [p.name for p in tests if any(m.startswith("test_") for m in imported_modules(p))]
    assert offenders == []


def test_counted_reports_each_item_after_it_is_handled():
    seen, handled = [], []
    for item in counted("abc", "letters", lambda *args: seen.append((args, list(handled)))):
        handled.append(item)
    assert seen == [(("letters", 1, 3), ["a"]), (("letters", 2, 3), ["a", "b"]), (("letters", 3, 3), ["a", "b", "c"])]
    assert sink(None) is silent and sink(False) is silent and sink(print) is print


def test_progress_lines_one_line_per_step_outside_a_terminal(capsys):
    lines = ProgressLines()
    lines("calibration statistics")
    for done in (1, 2):
        lines("predict", done, 2)
    assert capsys.readouterr().err == "calibration statistics\npredict 1/2\npredict 2/2\n"


def test_progress_lines_in_place_on_a_terminal(capsys, monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    lines = ProgressLines()
    lines("predict", 1, 3)
    lines("predict", 2, 3)
    lines.end()                      # interrupted before the last step: the line is still finished
    lines("predict", 3, 3)
    assert capsys.readouterr().err == "\r\x1b[Kpredict 1/3\r\x1b[Kpredict 2/3\n\r\x1b[Kpredict 3/3\n"


def test_eval_reports_progress_lines_when_stderr_is_not_a_terminal(tmp_path):
    small_network(0).save(tmp_path / "s.cfg", tmp_path / "s.weights")
    result = CliRunner().invoke(main, ["eval", str(tmp_path / "s.cfg"), str(tmp_path / "s.weights"),
                                       "--data", str(COCO_FEW), "--batch", "4"])
    assert result.exit_code == 0, result.output
    assert [line for line in result.stderr.splitlines() if line.startswith("predict")] == \
        ["predict 4/12", "predict 8/12", "predict 12/12"]
