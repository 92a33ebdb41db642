"""Prompt templates and prompting strategies; imports nothing from ragkit at import time."""

from pathlib import Path

from prompts.template import (
    ChatTemplate,
    PromptTemplate,
    TemplateSyntaxError,
    TemplateVariableError,
    load_template,
)

LIBRARY = Path(__file__).parent / "library"


def library_template(name: str) -> PromptTemplate | ChatTemplate:
    """A built-in template from ``prompts/library/NAME.yaml``."""
    path = LIBRARY / f"{name}.yaml"
    if not path.is_file():
        available = ", ".join(sorted(p.stem for p in LIBRARY.glob("*.yaml")))
        raise KeyError(f"no built-in template {name!r} (available: {available})")
    return load_template(path)


__all__ = [
    "LIBRARY",
    "ChatTemplate",
    "PromptTemplate",
    "TemplateSyntaxError",
    "TemplateVariableError",
    "library_template",
    "load_template",
]
