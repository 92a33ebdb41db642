"""Turning a prompt (a string or a conversation) into the exact text the model reads.

Instruct models answer well only inside the chat format they were trained on, so by default a
plain string becomes one user turn of the tokenizer's chat template. Models without a template
(base models, tiny test models) get a simple role-labelled transcript instead, and pre-rendered
prompts can opt out entirely with ``apply_chat_template=False``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

Role = Literal["system", "user", "assistant"]


class ChatMessage(BaseModel):
    """One turn of a conversation."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    role: Role
    content: str


Prompt = str | Sequence[ChatMessage | Mapping[str, str]]
"""What :meth:`Generator.generate` accepts per item: a string or a list of chat messages."""


@dataclass(frozen=True)
class RenderedPrompt:
    """The final prompt text and how to tokenize it.

    A chat template already writes the model's special tokens (BOS, turn markers), so its output
    is tokenized without adding them again; a raw string gets the tokenizer's usual specials.
    """

    text: str
    add_special_tokens: bool


def as_messages(prompt: Sequence[Any]) -> list[ChatMessage]:
    """Validate a conversation given as ChatMessage objects or ``{"role", "content"}`` mappings."""
    messages = [m if isinstance(m, ChatMessage) else ChatMessage.model_validate(m) for m in prompt]
    if not messages:
        raise ValueError("a conversation prompt needs at least one message")
    return messages


def has_chat_template(tokenizer: Any) -> bool:
    """Whether the tokenizer carries a chat template."""
    return bool(getattr(tokenizer, "chat_template", None))


def plain_transcript(messages: Sequence[ChatMessage]) -> str:
    """Fallback format for models without a template: labelled turns ending with an open answer."""
    labels = {"system": "System", "user": "User", "assistant": "Assistant"}
    turns = [f"{labels[m.role]}: {m.content}" for m in messages]
    return "\n\n".join([*turns, "Assistant:"])


def render_prompt(tokenizer: Any, prompt: Any, apply_chat_template: bool | None) -> RenderedPrompt:
    """Render one prompt according to ``apply_chat_template`` (None = when the tokenizer has one)."""
    if isinstance(prompt, str):
        if apply_chat_template is False or (
            apply_chat_template is None and not has_chat_template(tokenizer)
        ):
            return RenderedPrompt(prompt, add_special_tokens=True)
        messages = [ChatMessage(role="user", content=prompt)]
    elif isinstance(prompt, Sequence) and not isinstance(prompt, bytes | bytearray):
        messages = as_messages(prompt)
    else:
        raise TypeError(
            f"a prompt must be a string or a list of chat messages, not {type(prompt).__name__}"
        )
    if apply_chat_template is not False and has_chat_template(tokenizer):
        text = tokenizer.apply_chat_template(
            [m.model_dump() for m in messages], tokenize=False, add_generation_prompt=True
        )
        return RenderedPrompt(str(text), add_special_tokens=False)
    return RenderedPrompt(plain_transcript(messages), add_special_tokens=True)
