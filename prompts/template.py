"""Prompt templates rendered with sandboxed Jinja2.

Templates may come from files users did not write, so rendering happens in Jinja2's sandbox
with undefined variables as errors. Variables are declared: rendering with a missing or an
unknown variable raises :class:`TemplateVariableError` naming it, instead of silently
producing a prompt with a hole in it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import yaml
from jinja2 import StrictUndefined, meta
from jinja2.exceptions import SecurityError, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from pydantic import BaseModel, ConfigDict, Field, model_validator

from prompts.atomic import atomic_write_text
from prompts.budget import Fitted, fit_ranked

_ENV = ImmutableSandboxedEnvironment(
    undefined=StrictUndefined, keep_trailing_newline=True, autoescape=False
)


class TemplateVariableError(ValueError):
    """A template was rendered with a missing or undeclared variable."""


class TemplateSyntaxError(ValueError):
    """A template's source is not valid Jinja2."""


class TemplateSecurityError(ValueError):
    """A template tried something the sandbox forbids (Python internals, mutating data)."""


# Names Jinja gives a meaning of its own (the template itself, loop/macro helpers, globals such
# as ``range``): ``{{ self }}`` renders the template object, never a value passed as ``self``.
RESERVED_NAMES: frozenset[str] = frozenset(
    {"self", "loop", "super", "caller", "varargs", "kwargs", *_ENV.globals}
)


def _reserved_error(template: str, name: str) -> TemplateVariableError:
    return TemplateVariableError(
        f"template {template!r}: {name!r} is a name Jinja reserves for itself and cannot be a "
        "variable; rename it"
    )


def _variables_of(source: str) -> set[str]:
    try:
        return set(meta.find_undeclared_variables(_ENV.parse(source)))
    except TemplateError as exc:
        raise TemplateSyntaxError(f"invalid template: {exc}") from None


class ChatMessageTemplate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: str


class _Declared(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = "template"
    variables: list[str] = Field(default_factory=list)
    description: str = ""

    def _check(self, values: Mapping[str, Any]) -> None:
        missing = [v for v in self.variables if v not in values]
        if missing:
            raise TemplateVariableError(f"template {self.name!r}: missing variable {missing[0]!r}")
        unknown = [k for k in values if k not in self.variables]
        if unknown and unknown[0] in RESERVED_NAMES:
            raise _reserved_error(self.name, unknown[0])
        if unknown:
            raise TemplateVariableError(
                f"template {self.name!r}: unknown variable {unknown[0]!r} (declared: {', '.join(self.variables) or 'none'})"
            )

    def _sources(self) -> list[str]:
        raise NotImplementedError

    @model_validator(mode="after")
    def _declared_match_used(self) -> _Declared:
        used: set[str] = set()
        for source in self._sources():
            used |= _variables_of(source)
        reserved = sorted(set(self.variables) & RESERVED_NAMES)
        if reserved:
            raise _reserved_error(self.name, reserved[0])
        if not self.variables:
            self.variables = sorted(used)
        undeclared = used - set(self.variables)
        if undeclared:
            raise TemplateVariableError(
                f"template {self.name!r} uses undeclared variable {sorted(undeclared)[0]!r}"
            )
        return self

    def save(self, path: str | Path) -> None:
        """Write the template as YAML, atomically (a crash leaves the old file or the new)."""
        atomic_write_text(
            path, yaml.safe_dump(self.model_dump(), sort_keys=False, allow_unicode=True)
        )

    def render(self, **values: Any) -> Any:
        raise NotImplementedError

    def render_within(
        self,
        budget: int,
        count_tokens: Callable[[Any], int],
        fit: str,
        **values: Any,
    ) -> Fitted[Any]:
        """Render so the prompt fits ``budget`` tokens, dropping items of ``fit`` from the end.

        ``values[fit]`` must be a list ranked best first (retrieved passages, few-shot
        examples); ``count_tokens`` measures a rendered prompt (e.g. ``Generator.count_tokens``,
        which includes the chat template). The result's ``report`` lists the dropped ranks.
        """
        if fit not in self.variables:
            raise TemplateVariableError(f"template {self.name!r}: cannot fit undeclared {fit!r}")
        items = values.get(fit)
        if not isinstance(items, list | tuple):
            raise TypeError(f"variable {fit!r} to fit must be a list, got {type(items).__name__}")

        def render(kept: list[Any]) -> Any:
            return self.render(**{**values, fit: kept})

        return fit_ranked(items, render, count_tokens, budget, variable=fit)


def _render(source: str, values: Mapping[str, Any], name: str) -> str:
    try:
        return _ENV.from_string(source).render(**values)
    except SecurityError as exc:
        raise TemplateSecurityError(f"template {name!r}: {exc}") from None
    except TemplateError as exc:
        raise TemplateVariableError(f"template {name!r}: {exc}") from None


class PromptTemplate(_Declared):
    """A single prompt string."""

    kind: Literal["prompt"] = "prompt"
    template: str

    def _sources(self) -> list[str]:
        return [self.template]

    def render(self, **values: Any) -> str:
        self._check(values)
        return _render(self.template, values, self.name)

    @classmethod
    def load(cls, path: str | Path) -> PromptTemplate:
        return cls.model_validate(yaml.safe_load(Path(path).read_text(encoding="utf-8")))


class ChatTemplate(_Declared):
    """A list of role messages; renders to ``[{"role": ..., "content": ...}, ...]``."""

    kind: Literal["chat"] = "chat"
    messages: list[ChatMessageTemplate]

    def _sources(self) -> list[str]:
        return [m.content for m in self.messages]

    def render(self, **values: Any) -> list[dict[str, str]]:
        self._check(values)
        return [
            {"role": m.role, "content": _render(m.content, values, self.name)}
            for m in self.messages
        ]

    @cached_property
    def roles(self) -> list[str]:
        return [m.role for m in self.messages]

    @classmethod
    def load(cls, path: str | Path) -> ChatTemplate:
        return cls.model_validate(yaml.safe_load(Path(path).read_text(encoding="utf-8")))


def load_template(path: str | Path) -> PromptTemplate | ChatTemplate:
    """Load either kind of template from YAML (``kind: prompt`` or ``kind: chat``)."""
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise TemplateSyntaxError(f"{path}: a template file must hold a mapping")
    if data.get("kind", "prompt") == "chat":
        return ChatTemplate.model_validate(data)
    return PromptTemplate.model_validate(data)
