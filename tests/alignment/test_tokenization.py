"""Pad token handling, left truncation of prompts and the bad-record report at tokenisation."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from alignment import (
    ChatMessage,
    Demonstration,
    PreferencePair,
    PromptResponseEncoder,
    collate_pairs,
    ensure_pad_token,
    tokenize_demonstrations,
    tokenize_pairs,
)


def test_pad_token_is_added_when_it_equals_eos_and_embeddings_grow(
    tokenizer: Any, tiny_lm: Any
) -> None:
    assert tokenizer.pad_token_id == tokenizer.eos_token_id  # the SmolLM2 situation
    rows_before = tiny_lm.get_input_embeddings().num_embeddings
    assert ensure_pad_token(tokenizer, tiny_lm) is True
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    assert tokenizer.pad_token == "<|pad|>"
    assert tiny_lm.get_input_embeddings().num_embeddings == rows_before + 1 == len(tokenizer)
    assert tiny_lm.get_output_embeddings().weight.shape[0] == len(tokenizer)
    assert tiny_lm.config.pad_token_id == tokenizer.pad_token_id
    # idempotent: a second call adds nothing
    assert ensure_pad_token(tokenizer, tiny_lm) is False
    assert tiny_lm.get_input_embeddings().num_embeddings == rows_before + 1


def test_an_existing_distinct_pad_token_is_kept(tokenizer: Any) -> None:
    tokenizer.pad_token = "<unk>"
    assert ensure_pad_token(tokenizer) is False
    assert tokenizer.pad_token == "<unk>"


def test_the_final_eos_stays_visible_after_padding(tokenizer: Any) -> None:
    ensure_pad_token(tokenizer)
    encoder = PromptResponseEncoder(tokenizer, max_length=32, min_prompt_tokens=1)
    pairs = [
        PreferencePair(prompt="Human : w1 Assistant :", chosen="w2", rejected="w3 w4 w5 w6"),
    ]
    tokenized, _ = tokenize_pairs(pairs, encoder)
    batch = collate_pairs(tokenized, tokenizer.pad_token_id, "right")
    eos = tokenizer.eos_token_id
    for row in range(batch.size):
        real = batch.input_ids[row][batch.attention_mask[row].bool()]
        assert real[-1].item() == eos  # the EOS is a real, attended token
    assert (batch.input_ids[0, batch.attention_mask[0] == 0] == tokenizer.pad_token_id).all()


def _ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def test_prompt_is_cut_from_the_left_and_the_response_is_never_cut(tokenizer: Any) -> None:
    ensure_pad_token(tokenizer)
    prompt = "Human : " + " ".join(f"w{i}" for i in range(30)) + " Assistant :"
    response = "w40 w41 w42 w43 w44"
    encoder = PromptResponseEncoder(tokenizer, max_length=16, min_prompt_tokens=4)
    example = encoder.encode(prompt, response)
    assert not isinstance(example, str)
    assert len(example.input_ids) == 16
    assert list(example.response_ids) == [*_ids(tokenizer, response), tokenizer.eos_token_id]
    # what is left of the prompt is its end (the most recent text)
    kept = list(example.input_ids[: example.response_start])
    assert kept == _ids(tokenizer, prompt)[-len(kept) :]
    assert kept[-2:] == _ids(tokenizer, "Assistant :")


def test_both_sides_of_a_pair_share_the_same_truncated_prompt(tokenizer: Any) -> None:
    ensure_pad_token(tokenizer)
    prompt = " ".join(f"w{i}" for i in range(20))
    pair = PreferencePair(prompt=prompt, chosen="w50", rejected="w51 w52 w53 w54 w55 w56")
    encoder = PromptResponseEncoder(tokenizer, max_length=12, min_prompt_tokens=2)
    (tokenized,), report = tokenize_pairs([pair], encoder)
    c, r = tokenized.chosen, tokenized.rejected
    assert c.input_ids[: c.response_start] == r.input_ids[: r.response_start]
    assert len(r.input_ids) == 12 and len(c.input_ids) < 12
    assert report.notes == {"prompt_truncated": 1}


def test_bad_pairs_are_counted_by_reason(tokenizer: Any) -> None:
    ensure_pad_token(tokenizer)
    long_response = " ".join(["w1"] * 20)
    pairs = [
        PreferencePair(prompt="w1 w2", chosen="w3", rejected="w4"),
        PreferencePair(prompt="w1", chosen="   ", rejected="w4"),
        PreferencePair(prompt="w1", chosen="w5 w6", rejected=" w5 w6 "),
        PreferencePair(prompt="w1", chosen=long_response, rejected="w4"),
        # fits only by cutting the prompt below min_prompt_tokens
        PreferencePair(prompt="w1 w2 w3 w4 w5 w6", chosen=" ".join(["w2"] * 10), rejected="w4"),
        PreferencePair(prompt="w1", chosen="w2", rejected="w3", metadata={"source": "line 9"}),
    ]
    encoder = PromptResponseEncoder(tokenizer, max_length=14, min_prompt_tokens=4)
    kept, report = tokenize_pairs(pairs, encoder)
    assert [p.index for p in kept] == [0, 5]
    assert report.dropped == {"empty_response": 1, "identical_responses": 1, "too_long": 2}
    assert report.examples["too_long"] == ["record 3", "record 4"]
    assert report.total == 6 and report.kept == 2


def test_scoring_encoding_never_refuses(tokenizer: Any) -> None:
    ensure_pad_token(tokenizer)
    encoder = PromptResponseEncoder(tokenizer, max_length=8, min_prompt_tokens=4)
    example = encoder.encode_for_scoring("w1 w2 w3", " ".join(f"w{i}" for i in range(20)))
    assert len(example.input_ids) == 8
    assert example.input_ids[-1] == tokenizer.eos_token_id
    short = encoder.encode_for_scoring("w1 w2 w3", "w9")
    assert list(short.input_ids) == [*_ids(tokenizer, "w1 w2 w3 w9"), tokenizer.eos_token_id]


def test_chat_demonstrations_use_the_chat_template(tokenizer: Any) -> None:
    ensure_pad_token(tokenizer)
    demo = Demonstration(
        messages=(
            ChatMessage(role="user", content="w1 w2"),
            ChatMessage(role="assistant", content="w3 w4"),
        )
    )
    encoder = PromptResponseEncoder(tokenizer, max_length=32, min_prompt_tokens=1)
    (tokenized,), report = tokenize_demonstrations([demo], encoder)
    example = tokenized.example
    assert list(example.input_ids[: example.response_start]) == _ids(
        tokenizer, "user : w1 w2 <eos> assistant :"
    )
    # the template's own end-of-turn token ends the response; no extra EOS is appended
    assert list(example.response_ids) == _ids(tokenizer, "w3 w4 <eos>")
    assert report.kept == 1


def test_chat_without_template_is_a_clear_error(tokenizer: Any) -> None:
    tokenizer.chat_template = None
    demo = Demonstration(messages=(ChatMessage(role="assistant", content="w3"),))
    encoder = PromptResponseEncoder(tokenizer, max_length=32)
    with pytest.raises(Exception, match="chat template"):
        tokenize_demonstrations([demo], encoder)


def test_response_labels_are_the_only_supervised_positions(tokenizer: Any) -> None:
    from alignment import collate_demonstrations

    ensure_pad_token(tokenizer)
    encoder = PromptResponseEncoder(tokenizer, max_length=32, min_prompt_tokens=1)
    demos = [
        Demonstration(prompt="w1 w2 w3", response="w4"),
        Demonstration(prompt="w1", response="w5 w6"),
    ]
    tokenized, _ = tokenize_demonstrations(demos, encoder)
    batch = collate_demonstrations(tokenized, tokenizer.pad_token_id)
    assert batch.labels is not None
    eos = tokenizer.eos_token_id
    w = {t: _ids(tokenizer, t)[0] for t in ("w4", "w5", "w6")}
    assert batch.labels[0].tolist() == [-100, -100, -100, w["w4"], eos]
    assert batch.labels[1].tolist() == [-100, w["w5"], w["w6"], eos, -100]
    assert torch.equal(batch.attention_mask[1], torch.tensor([1, 1, 1, 1, 0]))
