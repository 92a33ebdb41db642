"""The prompts steps' parameters as plain data, and back: what a saved pipeline records.

``prompts`` imports nothing from ragkit, so its steps implement ragkit's component contract
structurally: a ``component_name`` class attribute, ``to_config() -> dict`` (plain data only)
and a ``from_config(config, context)`` classmethod; :data:`prompts.COMPONENTS` lists them and
ragkit's pipeline registry registers them.

What cannot be written as data is re-attached from ``context`` when loading: any object with
``get(name)`` (ragkit's ``LoadContext``, or a plain dict). The names used here:

- ``generator``: the model the step calls (token counters saved as ``"generator"`` are that
  generator's, re-derived from it);
- ``embed``: the embedding callable of semantic/MMR example selectors;
- ``schemas``: name → pydantic model, for :class:`~prompts.structured.StructuredStep`.

A parameter that can be neither saved nor re-attached (a custom parser function, a custom
token counter or example selector) makes ``to_config`` raise ``ValueError`` naming it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pydantic import TypeAdapter

from prompts.builtin import library_names, library_template
from prompts.examples import Example
from prompts.parsers import AnswerParser
from prompts.protocols import text_token_counter, token_counter, whitespace_tokens
from prompts.selectors import FixedSelector, MMRSelector, RandomSelector, SemanticSelector
from prompts.template import ChatTemplate, PromptTemplate

Template = PromptTemplate | ChatTemplate


def need(context: Any, name: str, component: str) -> Any:
    """The shared resource ``name`` from a load context (or dict); a clear error without it."""
    require = getattr(context, "require", None)
    if callable(require):
        return require(name, component)
    value = context.get(name) if isinstance(context, Mapping) else None
    if value is None:
        raise ValueError(
            f"{component} needs the shared resource {name!r} to load; pass it in the context"
        )
    return value


# -- templates --------------------------------------------------------------------------------
def template_to_config(template: Template) -> str | dict[str, Any]:
    """A built-in template by its library name, any other one in full."""
    if template.name in library_names():
        builtin = library_template(template.name)
        if builtin.model_dump() == template.model_dump():
            return template.name
    return template.model_dump(mode="json")


def template_from_config(value: Any) -> Template:
    if isinstance(value, str):
        return library_template(value)
    if isinstance(value, Mapping):
        if value.get("kind") == "chat":
            return ChatTemplate.model_validate(dict(value))
        return PromptTemplate.model_validate(dict(value))
    raise ValueError(f"a template is a library name or a mapping, got {type(value).__name__}")


# -- answer parsers ---------------------------------------------------------------------------
_PARSER: TypeAdapter[Any] = TypeAdapter(AnswerParser)


def parser_to_config(parser: Any) -> dict[str, Any]:
    dumped: dict[str, Any] = _PARSER.dump_python(parser, mode="json")
    return dumped


def parser_from_config(value: Any) -> Any:
    return _PARSER.validate_python(value)


# -- example selectors ------------------------------------------------------------------------
def _examples(selector: Any) -> list[dict[str, Any]]:
    return [e.model_dump(mode="json", exclude_defaults=True) for e in selector.examples]


def selector_to_config(selector: Any) -> dict[str, Any]:
    """Fixed, random, semantic and MMR selectors (the embedding function is re-attached)."""
    kind = type(selector)
    if kind is FixedSelector:
        return {"kind": "fixed", "examples": _examples(selector), "k": selector.k}
    if kind is RandomSelector:
        return {
            "kind": "random",
            "examples": _examples(selector),
            "k": selector.k,
            "seed": selector.seed,
        }
    if kind is SemanticSelector:
        return {"kind": "semantic", "examples": _examples(selector), "k": selector.k}
    if kind is MMRSelector:
        return {
            "kind": "mmr",
            "examples": _examples(selector),
            "k": selector.k,
            "diversity": selector.diversity,
        }
    raise ValueError(f"the example selector {kind.__name__} cannot be saved")


def selector_from_config(value: Any, context: Any, component: str) -> Any:
    if not isinstance(value, Mapping):
        raise ValueError(f"{component}: a selector is a mapping with a 'kind'")
    params = dict(value)
    kind = params.pop("kind", None)
    examples = [Example.model_validate(e) for e in params.pop("examples", [])]
    if kind == "fixed":
        return FixedSelector(examples, **params)
    if kind == "random":
        return RandomSelector(examples, **params)
    if kind == "semantic":
        return SemanticSelector(examples, need(context, "embed", component), **params)
    if kind == "mmr":
        return MMRSelector(examples, need(context, "embed", component), **params)
    raise ValueError(f"{component}: unknown selector kind {kind!r}")


# -- token counters ---------------------------------------------------------------------------
def counter_to_config(count: Callable[..., int] | None) -> str | None:
    """``"whitespace"``, ``"generator"`` (a generator's ``count_tokens``), ``"generator_text"``
    (:func:`~prompts.protocols.text_token_counter` of a generator) or None."""
    if count is None:
        return None
    if count is whitespace_tokens:
        return "whitespace"
    if getattr(count, "__name__", None) == "count_tokens" and hasattr(count, "__self__"):
        return "generator"
    if getattr(count, "counts_for", None) is not None:
        return "generator_text"
    raise ValueError(
        f"the token counter {getattr(count, '__name__', repr(count))} cannot be saved (use "
        "whitespace_tokens or the generator's counter)"
    )


def counter_from_config(value: Any, context: Any, component: str) -> Any:
    if value is None:
        return None
    if value == "whitespace":
        return whitespace_tokens
    if value == "generator":
        return token_counter(need(context, "generator", component))
    if value == "generator_text":
        return text_token_counter(need(context, "generator", component))
    raise ValueError(f"{component}: unknown token counter {value!r}")
