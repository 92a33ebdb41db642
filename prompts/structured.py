"""Structured output: a generation turned into a validated pydantic model.

The model is asked for JSON matching the schema; the first JSON object in the reply (bare or
in a code fence) is validated. On failure the conversation continues with the model's reply
and the exact validation error, so the next attempt can fix precisely what was wrong — up to
``retries`` times. After that :class:`StructuredOutputError` carries every raw reply, because
the caller debugging a failure needs to see what the model actually wrote.

This works with any generator, local or remote, at the cost of retries. With a local model
(ragkit's ``Generator``), ``constrained=True`` adds schema-guided decoding
(:mod:`prompts.constrained`): tokens that would break the JSON or its shape are masked while
generating, so even a weak model writes parseable JSON of the right shape; validation and
retries still run, for what the grammar does not check (patterns, numeric bounds, a document
cut short by ``max_new_tokens``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from prompts.calls import CallNode, CallRecorder
from prompts.config import need
from prompts.jsontext import first_json_object
from prompts.protocols import PromptValue, TextGenerator, as_messages

M = TypeVar("M", bound=BaseModel)


class StructuredOutputError(ValueError):
    """No attempt produced valid output; ``raw`` is the last reply, ``attempts`` all of them."""

    def __init__(self, message: str, raw: str, attempts: list[str], errors: list[str]) -> None:
        super().__init__(message)
        self.raw = raw
        self.attempts = attempts
        self.errors = errors


def schema_instruction(model: type[BaseModel]) -> str:
    """The request appended to the prompt: JSON only, with the model's JSON schema."""
    schema = json.dumps(model.model_json_schema(), ensure_ascii=False)
    return (
        "Reply with a single JSON object and nothing else. It must match this JSON schema:\n"
        f"{schema}"
    )


def _with_instruction(prompt: PromptValue, instruction: str) -> list[dict[str, str]]:
    messages = as_messages(prompt)
    for message in reversed(messages):
        if message["role"] == "user":
            message["content"] = f"{message['content'].rstrip()}\n\n{instruction}"
            return messages
    return [*messages, {"role": "user", "content": instruction}]


def validate_reply(model: type[M], text: str) -> M:
    """The first JSON object of ``text`` validated as ``model`` (ValueError if none)."""
    data = first_json_object(text)
    if data is None:
        raise ValueError("the reply contains no JSON object")
    return model.model_validate(data)


def _describe(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}" for e in exc.errors()
        )
    return str(exc)


class Parsed(BaseModel, Generic[M]):
    """A validated value with the replies it took to get it."""

    model_config = ConfigDict(extra="forbid")

    value: M
    attempts: list[str]
    errors: list[str] = Field(default_factory=list)
    calls: CallNode


def parse_with_attempts(
    model: type[M],
    generator: TextGenerator,
    prompt: PromptValue,
    retries: int = 2,
    instruct: bool = True,
    *,
    constrained: bool = False,
    **options: Any,
) -> Parsed[M]:
    """Like :func:`parse_as` but also returns the replies and errors of every attempt."""
    if retries < 0:
        raise ValueError(f"retries must be >= 0, got {retries}")
    if constrained:
        # imported here: it needs torch and transformers, which plain prompting does not
        from prompts.constrained import JsonSchemaConstraint

        constraint = JsonSchemaConstraint.for_generator(model, generator)
        options = {
            **options,
            "logits_processors": [*options.get("logits_processors", ()), constraint],
        }
    messages = (
        _with_instruction(prompt, schema_instruction(model)) if instruct else as_messages(prompt)
    )
    rec = CallRecorder(generator, options)
    rec.root.kind = f"parse_as({model.__name__})"
    attempts: list[str] = []
    errors: list[str] = []
    for attempt in range(retries + 1):
        reply = rec.generate([messages], kind="attempt", labels=[str(attempt)])[0]
        attempts.append(reply)
        try:
            value = validate_reply(model, reply)
        except (ValueError, ValidationError) as exc:
            error = _describe(exc)
            errors.append(error)
            messages = [
                *messages,
                {"role": "assistant", "content": reply},
                {
                    "role": "user",
                    "content": (
                        f"That reply was not valid: {error}\n"
                        "Reply again with only the corrected JSON object."
                    ),
                },
            ]
            continue
        return Parsed(value=value, attempts=attempts, errors=errors, calls=rec.root)
    raise StructuredOutputError(
        f"no valid {model.__name__} after {retries + 1} attempt(s); last error: {errors[-1]}",
        raw=attempts[-1],
        attempts=attempts,
        errors=errors,
    )


def parse_as(
    model: type[M],
    generator: TextGenerator,
    prompt: PromptValue,
    retries: int = 2,
    instruct: bool = True,
    *,
    constrained: bool = False,
    **options: Any,
) -> M:
    """Generate from ``prompt`` and return the reply validated as ``model``.

    ``instruct`` appends the JSON-only request with the schema; turn it off when the prompt
    already asks for the format. ``constrained`` turns on schema-guided decoding (a local
    generator with a tokenizer only; see :mod:`prompts.constrained`). ``options`` go to the
    generator on every attempt. Raises :class:`StructuredOutputError` (with ``.raw``) after
    ``retries`` failed re-prompts.
    """
    return parse_with_attempts(
        model, generator, prompt, retries, instruct, constrained=constrained, **options
    ).value


class StructuredResult(BaseModel):
    """Pipeline output of :class:`StructuredStep`: the validated data as a mapping."""

    model_config = ConfigDict(extra="forbid")

    data: dict[str, Any]
    raw: str
    attempts: int
    calls: CallNode


class StructuredStep:
    """Pipeline step: ``run(prompt)`` → the reply validated as ``model`` (dumped to ``data``)."""

    component_name = "structured"

    def __init__(
        self,
        model: type[BaseModel],
        generator: TextGenerator,
        retries: int = 2,
        options: Mapping[str, Any] | None = None,
        constrained: bool = False,
    ) -> None:
        self.model = model
        self.generator = generator
        self.retries = retries
        self.options = dict(options or {})
        self.constrained = constrained

    def run(self, prompt: PromptValue) -> StructuredResult:
        parsed = parse_with_attempts(
            self.model,
            self.generator,
            prompt,
            self.retries,
            constrained=self.constrained,
            **self.options,
        )
        return StructuredResult(
            data=parsed.value.model_dump(mode="json"),
            raw=parsed.attempts[-1],
            attempts=len(parsed.attempts),
            calls=parsed.calls,
        )

    def to_config(self) -> dict[str, Any]:
        """Pipeline config: the model by name; it is looked up in the ``schemas`` resource."""
        return {
            "model": self.model.__name__,
            "retries": self.retries,
            "options": dict(self.options),
            "constrained": self.constrained,
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any], context: Any = None) -> StructuredStep:
        params = dict(config)
        name = params.pop("model", None)
        schemas = need(context, "schemas", cls.component_name)
        model = schemas.get(name) if isinstance(schemas, Mapping) else None
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise ValueError(f"{cls.component_name}: no pydantic model {name!r} in 'schemas'")
        return cls(model, need(context, "generator", cls.component_name), **params)
