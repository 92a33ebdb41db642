"""Test doubles for the prompts package: a scripted generator, a toy embedder, a tiny Llama."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest


@dataclass
class FakeResult:
    text: str
    prompt_tokens: int = 10
    completion_tokens: int = 5


def prompt_text(prompt: Any) -> str:
    """A prompt flattened to text, to let scripts and assertions look inside it."""
    if isinstance(prompt, str):
        return prompt
    return "\n".join(f"{m['role']}: {m['content']}" for m in prompt)


@dataclass
class ScriptedGenerator:
    """Replies from a script: a function of (prompt text, options), or a queue of strings.

    Every call is recorded as ``(prompts, options)`` so tests can assert on batching, on the
    options sent and on what each prompt contained.
    """

    script: Callable[[str, dict[str, Any]], str] | list[str]
    calls: list[tuple[list[Any], dict[str, Any]]] = field(default_factory=list)
    tokens: tuple[int, int] = (10, 5)

    def generate(self, prompts: Sequence[Any], **options: Any) -> list[FakeResult]:
        prompts = list(prompts)
        self.calls.append((prompts, options))
        out = []
        for p in prompts:
            if callable(self.script):
                text = self.script(prompt_text(p), options)
            else:
                if not self.script:
                    raise AssertionError("the script ran out of replies")
                text = self.script.pop(0)
            out.append(FakeResult(text, *self.tokens))
        return out

    @property
    def prompts(self) -> list[str]:
        return [prompt_text(p) for batch, _ in self.calls for p in batch]


@pytest.fixture
def scripted() -> type[ScriptedGenerator]:
    return ScriptedGenerator


def bag_of_words(texts: list[str], dim: int = 64) -> np.ndarray:
    """A deterministic toy embedding: hashed word counts (similar words -> similar vectors)."""
    out = np.zeros((len(texts), dim))
    for i, text in enumerate(texts):
        for word in re.findall(r"\w+", text.lower()):
            out[i, int(hashlib.md5(word.encode()).hexdigest(), 16) % dim] += 1.0
    return out


@pytest.fixture
def embed() -> Callable[[list[str]], np.ndarray]:
    return bag_of_words


CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CORPUS = [
    "Answer: the capital of France is Paris. Let's think step by step.",
    "Summarise the text. The Rhine flows past Strasbourg, 1,200 km long.",
    '{"name": "Paris", "population": 2100000} Reply with a JSON object.',
]


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A 2-layer random Llama with a 300-token BPE vocabulary, built in-process (no downloads)."""
    from tiny_llama import build_tiny_llama

    from ragkit.generation import Generator

    folder: Path = build_tiny_llama(
        tmp_path_factory.mktemp("prompts-llama"),
        CORPUS,
        vocab_size=300,
        hidden_size=32,
        max_positions=2048,
    )
    return Generator(str(folder), device="cpu", options={"max_new_tokens": 8}).warm_up()
