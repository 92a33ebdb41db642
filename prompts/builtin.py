"""The built-in template library (``prompts/library/*.yaml``)."""

from __future__ import annotations

from pathlib import Path

from prompts.template import ChatTemplate, PromptTemplate, load_template

LIBRARY = Path(__file__).parent / "library"


def library_names() -> list[str]:
    """Names of the built-in templates."""
    return sorted(p.stem for p in LIBRARY.glob("*.yaml"))


def library_template(name: str) -> PromptTemplate | ChatTemplate:
    """A built-in template from ``prompts/library/NAME.yaml``."""
    path = LIBRARY / f"{name}.yaml"
    if not path.is_file():
        raise KeyError(f"no built-in template {name!r} (available: {', '.join(library_names())})")
    return load_template(path)
