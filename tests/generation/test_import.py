"""Importing the package must stay cheap: torch and transformers load on first use only."""

from __future__ import annotations

import subprocess
import sys


def test_import_does_not_load_torch_or_transformers() -> None:
    code = (
        "import sys, ragkit.generation as g; "
        "g.Generator('some/model'); g.GenerationOptions(max_new_tokens=3); "
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_public_api() -> None:
    import ragkit.generation as g

    for name in g.__all__:
        assert hasattr(g, name), name
