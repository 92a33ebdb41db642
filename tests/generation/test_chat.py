"""Prompt rendering rules, on stand-in tokenizers (no model needed)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from ragkit.generation import ChatMessage
from ragkit.generation.chat import plain_transcript, render_prompt


class TemplateTokenizer:
    chat_template = "{{ messages }}"

    def __init__(self) -> None:
        self.calls: list[list[dict[str, str]]] = []

    def apply_chat_template(self, messages: list[dict[str, str]], **kwargs: Any) -> str:
        assert kwargs == {"tokenize": False, "add_generation_prompt": True}
        self.calls.append(messages)
        return "<s>" + "|".join(f"{m['role']}:{m['content']}" for m in messages) + "|assistant:"


class PlainTokenizer:
    chat_template = None


def test_string_becomes_a_user_turn_of_the_template() -> None:
    tok = TemplateTokenizer()
    rendered = render_prompt(tok, "hi", None)
    assert rendered.text == "<s>user:hi|assistant:"
    assert rendered.add_special_tokens is False  # the template wrote the specials itself
    assert tok.calls == [[{"role": "user", "content": "hi"}]]


def test_template_opt_out_sends_strings_verbatim() -> None:
    rendered = render_prompt(TemplateTokenizer(), "Question: x\nAnswer:", False)
    assert rendered.text == "Question: x\nAnswer:" and rendered.add_special_tokens is True


def test_fallback_without_template() -> None:
    assert render_prompt(PlainTokenizer(), "hi", None).text == "hi"
    messages = [ChatMessage(role="system", content="s"), ChatMessage(role="user", content="u")]
    rendered = render_prompt(PlainTokenizer(), messages, None)
    assert rendered.text == plain_transcript(messages) == "System: s\n\nUser: u\n\nAssistant:"
    assert rendered.add_special_tokens is True


def test_messages_validation() -> None:
    with pytest.raises(ValidationError):
        render_prompt(TemplateTokenizer(), [{"role": "user"}], None)
    with pytest.raises(ValidationError):
        render_prompt(TemplateTokenizer(), [{"role": "user", "content": "x", "name": "bob"}], None)
    with pytest.raises(ValueError, match="at least one message"):
        render_prompt(TemplateTokenizer(), [], None)
    with pytest.raises(TypeError, match="string or a list"):
        render_prompt(TemplateTokenizer(), b"bytes", None)
