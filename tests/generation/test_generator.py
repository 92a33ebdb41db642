"""Generator behaviour on the tiny random Llama: batching, finish reasons, stop strings, decoding."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from pydantic import ValidationError

from ragkit.errors import ModelNotFoundError
from ragkit.generation import (
    ChatMessage,
    ContextLengthError,
    GenerationOptions,
    GenerationResult,
    Generator,
    GeneratorConfig,
)


def one_by_one(gen: Generator, prompts: list[Any], **options: Any) -> list[GenerationResult]:
    return [gen.generate([p], **options)[0] for p in prompts]


def test_prompts_have_different_lengths(tiny_generator: Generator, prompts: list[str]) -> None:
    lengths = {tiny_generator.count_tokens(p) for p in prompts}
    assert len(lengths) == len(prompts)  # so every batch below is left-padded


@pytest.mark.parametrize("batch_size", [2, 3, 6])
def test_batched_greedy_equals_one_by_one(
    tiny_generator: Generator,
    prompts: list[str],
    batch_size: int,
    one_by_one_results: list[GenerationResult],
) -> None:
    batched = tiny_generator.generate(prompts, batch_size=batch_size)
    assert batched == one_by_one_results


def test_finish_reasons_and_token_counts(
    tiny_generator: Generator,
    prompts: list[str],
    max_new_tokens: int,
    greedy_results: list[GenerationResult],
) -> None:
    results = greedy_results
    reasons = {r.finish_reason for r in results}
    assert reasons == {"stop", "length"}  # the fixture makes some prompts emit EOS
    tok = tiny_generator.tokenizer
    for prompt, result in zip(prompts, results, strict=True):
        assert result.prompt_tokens == tiny_generator.count_tokens(prompt)
        assert result.prompt_text == tiny_generator.render(prompt)
        if result.finish_reason == "length":
            assert result.completion_tokens == max_new_tokens
        else:
            assert result.completion_tokens < max_new_tokens
        # the EOS token (== pad token) is never part of the text
        assert tok.eos_token not in result.text
        assert result.total_tokens == result.prompt_tokens + result.completion_tokens


def test_stop_reason_and_eos_count_match_a_plain_model_generate(
    tiny_generator: Generator, max_new_tokens: int, greedy_results: list[GenerationResult]
) -> None:
    """Independent check of the counting against transformers' own unbatched output."""
    tok, model = tiny_generator.tokenizer, tiny_generator.model
    for result in greedy_results:
        ids = tok(result.prompt_text, add_special_tokens=False, return_tensors="pt")
        out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False)
        new = out[0, ids["input_ids"].shape[1] :].tolist()
        assert result.completion_tokens == len(new)
        assert (new[-1] == tok.eos_token_id) == (result.finish_reason == "stop")
        assert result.text == tok.decode(new, skip_special_tokens=True)


def test_results_keep_the_callers_order(
    tiny_generator: Generator, prompts: list[str], greedy_results: list[GenerationResult]
) -> None:
    backward = tiny_generator.generate(prompts[::-1], batch_size=4)
    assert backward == greedy_results[::-1]


def test_stop_string_cuts_and_stops_early(
    tiny_generator: Generator, prompts: list[str], greedy_results: list[GenerationResult]
) -> None:
    prompt, full = next(
        (p, r) for p, r in zip(prompts, greedy_results, strict=True) if r.finish_reason == "length"
    )
    stop = full.text[8:11]
    assert stop.strip(), "pick a stop string with visible characters"
    cut = full.text.index(stop)
    result = tiny_generator.generate([prompt], stop=[stop, "never-there"])[0]
    assert result.text == full.text[:cut]
    assert result.finish_reason == "stop_string" and result.stop_string == stop
    assert result.completion_tokens < full.completion_tokens  # generation really ended early


def test_stop_string_in_a_batch_only_affects_its_rows(
    tiny_generator: Generator, prompts: list[str], greedy_results: list[GenerationResult]
) -> None:
    plain = greedy_results
    longest = max(plain, key=lambda r: len(r.text))
    stop = longest.text[5:8]
    stopped = tiny_generator.generate(prompts, stop=stop, batch_size=3)
    for before, after in zip(plain, stopped, strict=True):
        if stop in before.text:
            assert after.text == before.text[: before.text.index(stop)]
            assert after.finish_reason == "stop_string"
        else:
            assert after == before
    assert stopped == one_by_one(tiny_generator, prompts, stop=stop)


def test_stop_string_inside_the_prompt_is_ignored(
    tiny_generator: Generator, prompts: list[str], greedy_results: list[GenerationResult]
) -> None:
    prompt = prompts[0]
    word = prompt.split()[0]  # occurs in the prompt (and in the chat-templated prompt text)
    plain = greedy_results[0]
    result = tiny_generator.generate([prompt], stop=word)[0]
    if word in plain.text:
        assert result.text == plain.text[: plain.text.index(word)]
    else:
        assert result == plain  # generation was not cut short by the prompt's own text


def test_beam_search_runs_and_batches_consistently(
    tiny_generator: Generator, prompts: list[str]
) -> None:
    options = GenerationOptions(
        num_beams=3,
        length_penalty=1.0,
        no_repeat_ngram_size=2,
        early_stopping=True,
        max_new_tokens=12,
    )
    batched = tiny_generator.generate(prompts, options, batch_size=3)
    assert batched == one_by_one(tiny_generator, prompts, **options.model_dump(exclude_unset=True))
    for result in batched:
        assert 0 < result.completion_tokens <= 12
        assert result.finish_reason in {"stop", "length"}


def test_repetition_controls_change_repetitive_output(
    tiny_generator: Generator, prompts: list[str], greedy_results: list[GenerationResult]
) -> None:
    plain = greedy_results
    repetitive = next(r for r in plain if r.finish_reason == "length")
    prompt = prompts[plain.index(repetitive)]
    penalised = tiny_generator.generate([prompt], repetition_penalty=5.0)[0]
    assert penalised.text != repetitive.text
    no_repeat = tiny_generator.generate([prompt], no_repeat_ngram_size=2)[0]
    assert no_repeat.text != repetitive.text


def test_sampling_is_reproducible_with_a_seed_and_leaves_the_callers_rng_alone(
    tiny_generator: Generator, prompts: list[str], greedy_results: list[GenerationResult]
) -> None:
    options = {"do_sample": True, "temperature": 1.5, "top_k": 50, "top_p": 0.95}
    state = torch.random.get_rng_state()
    first = tiny_generator.generate(prompts, seed=3, **options)
    again = tiny_generator.generate(prompts, seed=3, **options)
    assert torch.equal(state, torch.random.get_rng_state())
    assert first == again
    others = [tiny_generator.generate(prompts, seed=s, **options) for s in (4, 5)]
    assert any(o != first for o in others)
    assert first != greedy_results


def test_generator_default_options_and_per_call_precedence(tiny_llama_dir: Path) -> None:
    gen = Generator(str(tiny_llama_dir), device="cpu", options={"max_new_tokens": 3})
    assert gen.generate(["Tokens"])[0].completion_tokens <= 3
    call_opts = GenerationOptions(max_new_tokens=5)
    assert gen.generate(["Tokens"], call_opts)[0].completion_tokens <= 5
    assert gen.generate(["Tokens"], call_opts, max_new_tokens=2)[0].completion_tokens <= 2
    with pytest.raises(ValidationError, match="temprature"):
        gen.generate(["Tokens"], temprature=0.2)
    with pytest.raises(ValidationError, match="do_sample=True"):
        gen.generate(["Tokens"], temperature=0.2)


def test_chat_messages_and_plain_strings(tiny_generator: Generator) -> None:
    as_string = tiny_generator.generate(["Who wrote the report?"])[0]
    as_chat = tiny_generator.generate(
        [[ChatMessage(role="user", content="Who wrote the report?")]]
    )[0]
    as_dicts = tiny_generator.generate([[{"role": "user", "content": "Who wrote the report?"}]])[0]
    assert as_string == as_chat == as_dicts
    assert as_chat.prompt_text.startswith("<|im_start|>user\nWho wrote the report?<|im_end|>")
    raw = tiny_generator.generate(["Who wrote the report?"], apply_chat_template=False)[0]
    assert raw.prompt_text == "Who wrote the report?"
    system = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
    ]
    assert tiny_generator.generate([system])[0].prompt_text.startswith(
        "<|im_start|>system\nbe brief"
    )


def test_model_without_chat_template_falls_back_to_a_transcript(
    tiny_llama_no_template_dir: Path,
) -> None:
    gen = Generator(str(tiny_llama_no_template_dir), device="cpu", options={"max_new_tokens": 4})
    assert gen.render("Paris is") == "Paris is"  # plain strings are sent verbatim
    chat = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    assert gen.render(chat) == "System: be brief\n\nUser: hi\n\nAssistant:"
    assert gen.render("hi", apply_chat_template=True) == "User: hi\n\nAssistant:"
    result = gen.generate([chat])[0]
    assert result.prompt_text == "System: be brief\n\nUser: hi\n\nAssistant:"


def test_bad_prompts(tiny_generator: Generator) -> None:
    assert tiny_generator.generate([]) == []
    with pytest.raises(TypeError, match="list of prompts"):
        tiny_generator.generate("Paris is")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="string or a list of chat messages"):
        tiny_generator.generate([42])  # type: ignore[list-item]
    with pytest.raises(ValidationError):
        tiny_generator.generate([[{"role": "robot", "content": "beep"}]])
    with pytest.raises(ValueError, match="empty after tokenization"):
        tiny_generator.generate([""], apply_chat_template=False)


def test_context_length_and_token_helpers(tiny_generator: Generator, max_new_tokens: int) -> None:
    assert tiny_generator.context_length == 256
    assert tiny_generator.max_prompt_tokens({"max_new_tokens": 56}) == 200
    assert tiny_generator.max_prompt_tokens() == 256 - max_new_tokens
    text = "The quick brown fox jumps over the lazy dog. " * 3
    n = tiny_generator.count_tokens(text, apply_chat_template=False)
    assert n == len(tiny_generator.tokenizer(text, add_special_tokens=False)["input_ids"])
    assert tiny_generator.count_tokens(text) > n  # the chat template adds its markers
    short = tiny_generator.truncate(text, 5)
    assert text.startswith(short) and short != text
    assert tiny_generator.count_tokens(short, apply_chat_template=False) <= 5
    assert tiny_generator.truncate(text, 10_000) == text
    assert tiny_generator.truncate(text, 0) == ""


def test_prompt_longer_than_the_context_is_a_one_line_error(tiny_generator: Generator) -> None:
    long_prompt = "The quick brown fox jumps over the lazy dog. " * 40
    with pytest.raises(ContextLengthError, match="exceeds the model's context of 256") as excinfo:
        tiny_generator.generate(["Paris is", long_prompt])
    assert "prompt 1 has" in str(excinfo.value) and "\n" not in str(excinfo.value)


def test_tokenizer_loads_without_the_weights(tiny_llama_dir: Path) -> None:
    gen = Generator(str(tiny_llama_dir), device="cpu")
    assert gen.count_tokens("Paris is", apply_chat_template=False) > 0
    assert gen.context_length == 256
    assert not gen.is_loaded
    gen.warm_up()
    assert gen.is_loaded and gen.model.dtype == torch.float32


def test_config_round_trip(tiny_llama_dir: Path) -> None:
    gen = Generator(str(tiny_llama_dir), device="cpu", batch_size=2, options={"stop": "\n"})
    data = gen.config.model_dump(exclude_unset=True)
    clone = Generator.from_config(data)
    assert clone.config == gen.config
    with pytest.raises(ValidationError, match="colour"):
        GeneratorConfig.model_validate({"model": "x", "colour": "red"})


def test_unloadable_model_is_a_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"model_type": "not-a-model"}', encoding="utf-8")
    gen = Generator(str(tmp_path), device="cpu")
    with pytest.raises(ModelNotFoundError) as excinfo:
        gen.warm_up()
    assert "\n" not in str(excinfo.value)


def test_pad_and_eos_ids_are_exposed(tiny_generator: Generator) -> None:
    tok = tiny_generator.tokenizer
    assert tiny_generator.eos_token_ids == frozenset({tok.eos_token_id})
    assert tiny_generator.pad_token_id == tok.eos_token_id  # pad == eos in the fixture
    assert tok.padding_side == "left"


def test_mapping_options_merge_with_generator_defaults(tiny_llama_dir: Path) -> None:
    sampler = Generator(str(tiny_llama_dir), device="cpu", options={"do_sample": True})
    # valid only together with the generator's do_sample=True default
    result = sampler.generate(["Tokens"], {"temperature": 0.5, "max_new_tokens": 3}, seed=0)[0]
    assert result.completion_tokens <= 3
    with pytest.raises(TypeError, match="options must be"):
        sampler.generate(["Tokens"], ["temperature"])  # type: ignore[arg-type]
