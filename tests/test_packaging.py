"""What `pip install .` ships: every subpackage of dncompress must be listed in pyproject.toml, or the
installed command fails on import while the tests (which import from the source tree) still pass."""
from __future__ import annotations

import pytest

from helpers import ROOT

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11


def test_every_subpackage_is_installed():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"]) - set(config.get("package-dir", {}))
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "dncompress").rglob("__init__.py")}
    assert found == listed
