"""The benchmark-only llama.cpp build (issue 21), and an environment whose children import it.

No wheel of llama-cpp-python exists for this platform, so benchmarks/README.md ("Generation
latency against llama.cpp") builds it into ``benchmarks/.work/llamacpp-site``; every benchmark
that starts ragkit processes puts that folder on their ``PYTHONPATH`` the same way.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

LLAMACPP_SITE = Path(__file__).resolve().parent / ".work" / "llamacpp-site"


def environment_with_llamacpp(first: Sequence[str] = ()) -> dict[str, str]:
    """This environment with ``PYTHONPATH`` = ``first``, the existing path, then the build."""
    paths = [*first, os.environ.get("PYTHONPATH"), str(LLAMACPP_SITE)]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
