"""Structured output: JSON extraction, the validation-error retry loop, the final error."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ConfigDict

from prompts import (
    StructuredOutputError,
    StructuredStep,
    first_json_object,
    json_objects,
    parse_as,
    parse_with_attempts,
)


class City(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    population: int


def test_json_extraction_bare_fenced_and_nested() -> None:
    assert first_json_object('Sure! {"a": {"b": 1}} done') == {"a": {"b": 1}}
    assert first_json_object('```json\n{"a": 2}\n``` and {"c": 3}') == {"a": 2}
    assert first_json_object("no json {here") is None
    assert [v for _, v in json_objects('[1] then {"x": [2]}')] == [[1], {"x": [2]}]


def test_parse_as_valid_on_first_try(scripted: type) -> None:
    gen = scripted(['Here you go:\n```json\n{"name": "Paris", "population": 2100000}\n```'])
    city = parse_as(City, gen, "Describe Paris.", max_new_tokens=40)
    assert city == City(name="Paris", population=2100000)
    sent = gen.calls[0][0][0]
    assert "JSON schema" in sent[-1]["content"] and '"population"' in sent[-1]["content"]
    assert gen.calls[0][1] == {"max_new_tokens": 40}


def test_parse_as_reprompts_with_the_validation_error(scripted: type) -> None:
    gen = scripted(
        [
            "Paris has about two million people.",
            '{"name": "Paris", "population": "many"}',
            '{"name": "Paris", "population": 2100000}',
        ]
    )
    parsed = parse_with_attempts(City, gen, [{"role": "user", "content": "Paris?"}], retries=2)
    assert parsed.value.population == 2100000
    assert len(parsed.attempts) == 3 and len(parsed.errors) == 2
    assert "no JSON object" in parsed.errors[0]
    assert "population" in parsed.errors[1]
    second = gen.calls[1][0][0]
    assert second[-2] == {"role": "assistant", "content": "Paris has about two million people."}
    assert "no JSON object" in second[-1]["content"]
    third = gen.calls[2][0][0]
    assert "population" in third[-1]["content"] and len(third) == 5


def test_parse_as_raises_with_the_raw_text_after_retries(scripted: type) -> None:
    gen = scripted(["nope", '{"name": 1}'])
    with pytest.raises(StructuredOutputError) as info:
        parse_as(City, gen, "Paris?", retries=1)
    assert info.value.raw == '{"name": 1}'
    assert info.value.attempts == ["nope", '{"name": 1}']
    assert len(gen.calls) == 2
    with pytest.raises(ValueError):
        parse_as(City, gen, "x", retries=-1)


def test_structured_step(scripted: type) -> None:
    step = StructuredStep(City, scripted(['{"name": "Lyon", "population": 500000}']))
    out = step.run(prompt="Lyon?")
    assert out.data == {"name": "Lyon", "population": 500000} and out.attempts == 1
