"""GenerationOptions: contradictions and typos fail when options are built, with a named field."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from ragkit.generation import GenerationOptions


def test_defaults_are_greedy() -> None:
    opts = GenerationOptions()
    assert opts.mode == "greedy"
    assert opts.max_new_tokens == 256
    assert opts.stop == ()


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"temprature": 0.5}, "temprature"),
        ({"temperature": 0.7}, "do_sample=True"),
        ({"top_p": 0.9}, "do_sample=True"),
        ({"top_k": 5}, "do_sample=True"),
        ({"do_sample": True, "temperature": 0.0}, "temperature"),
        ({"do_sample": True, "top_p": 1.5}, "top_p"),
        ({"length_penalty": 2.0}, "num_beams > 1"),
        ({"early_stopping": True}, "num_beams > 1"),
        ({"num_beams": 2, "do_sample": True}, "beam search with sampling"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"min_new_tokens": 9, "max_new_tokens": 8}, "min_new_tokens"),
        ({"stop": ["ok", ""]}, "non-empty"),
        ({"repetition_penalty": 0}, "repetition_penalty"),
        ({"num_beams": 0}, "num_beams"),
    ],
)
def test_invalid_options_are_rejected(kwargs: dict[str, object], fragment: str) -> None:
    with pytest.raises(ValidationError, match=fragment):
        GenerationOptions.model_validate(kwargs)


def test_modes() -> None:
    assert GenerationOptions(do_sample=True, temperature=0.7, top_k=5, top_p=0.9).mode == "sample"
    beam = GenerationOptions(num_beams=3, length_penalty=0.5, early_stopping="never")
    assert beam.mode == "beam"


def test_single_stop_string_becomes_a_tuple_without_duplicates() -> None:
    assert GenerationOptions(stop="\n\n").stop == ("\n\n",)  # type: ignore[arg-type]
    assert GenerationOptions(stop=["a", "b", "a"]).stop == ("a", "b")  # type: ignore[arg-type]


def test_merged_revalidates_and_keeps_unset_defaults() -> None:
    base = GenerationOptions(max_new_tokens=32)
    merged = base.merged({"do_sample": True}, temperature=0.5)
    assert (merged.max_new_tokens, merged.do_sample, merged.temperature) == (32, True, 0.5)
    with pytest.raises(ValidationError, match="do_sample=True"):
        base.merged(top_p=0.5)
    with pytest.raises(ValidationError, match="bogus"):
        base.merged(bogus=1)


def test_coerce_accepts_mappings_and_rejects_other_types() -> None:
    assert GenerationOptions.coerce({"max_new_tokens": 5}, {}).max_new_tokens == 5
    assert GenerationOptions.coerce(None, {"max_new_tokens": 7}).max_new_tokens == 7
    with pytest.raises(TypeError, match="GenerationOptions"):
        GenerationOptions.coerce(["max_new_tokens"], {})  # type: ignore[arg-type]


def test_options_are_immutable() -> None:
    with pytest.raises(ValidationError):
        GenerationOptions().max_new_tokens = 3  # type: ignore[misc]
