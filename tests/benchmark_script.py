"""Load a benchmark or example script as a module, for the tests that check a script's logic.

Scripts are not a package; they import each other by file name from their own folder. One
loader so that each test does not repeat the importlib steps (and their ``sys.modules`` entry,
which dataclasses look their module up in).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"


def load_script(
    monkeypatch: pytest.MonkeyPatch, path: Path, name: str, *, on_path: bool = True
) -> Any:
    """The module of ``path`` under ``name`` (``sys.modules`` restored after the test);
    ``on_path``: its folder goes on ``sys.path`` for its imports of sibling scripts."""
    if on_path:
        monkeypatch.syspath_prepend(str(path.parent))
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)
    spec.loader.exec_module(module)
    return module
