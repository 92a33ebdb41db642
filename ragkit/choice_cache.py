"""Machine-specific choices measured once and remembered: which backend or quantisation passed its
quality guard here.

A guard (int8 weights, the llama.cpp generator) answers probe prompts with both candidates, which
costs seconds to minutes; its verdict depends only on the model, the CPU and the library
versions, so it is cached as JSON under ragkit's cache directory, keyed by a hash of exactly
those facts. A cache that cannot be read means measuring again; one that cannot be written only
costs measuring next time.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from ragkit.atomic import atomic_write_text

Verdict = TypeVar("Verdict", bound=BaseModel)


def choice_key(parts: Mapping[str, Any]) -> str:
    """A short stable hash of the facts a verdict depends on."""
    return hashlib.sha256(json.dumps(dict(parts), sort_keys=True).encode()).hexdigest()[:16]


def choice_path(kind: str, key: str) -> Path:
    from ragkit.generation.checkpoints import cache_dir

    return cache_dir() / kind / f"{key}.json"


def load_choice(kind: str, key: str, model: type[Verdict]) -> Verdict | None:
    """The cached verdict, or None when there is none or it does not validate."""
    try:
        return model.model_validate_json(choice_path(kind, key).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def save_choice(kind: str, key: str, verdict: BaseModel) -> None:
    with contextlib.suppress(OSError):
        atomic_write_text(choice_path(kind, key), verdict.model_dump_json(indent=1) + "\n")


def cpu_flags() -> str:
    """The CPU features that change which kernels run (Linux; empty elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return ""
    for line in text.splitlines():
        if line.startswith("flags"):
            wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")
            return ",".join(f for f in wanted if f in line.split())
    return ""


def package_version(name: str) -> str | None:
    """An installed distribution's version, read from its metadata (nothing is imported)."""
    try:
        return version(name)
    except PackageNotFoundError:
        return None
