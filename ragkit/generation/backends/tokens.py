"""Token accounting for backends whose model runs somewhere else (a server, a vLLM engine).

The RAG prompt builder fits passages into the context with ``count_tokens`` / ``truncate`` /
``max_prompt_tokens``. With a local copy of the model's tokenizer those are exact: the work is
delegated to a transformers :class:`~ragkit.generation.Generator` that only ever loads its
tokenizer and config (never the weights). Without one they fall back to byte-based estimates that
err towards over-counting, so a prompt budgeted here still fits on the server.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from ragkit.generation.backends.base import (
    estimate_prompt_tokens,
    estimate_text_tokens,
    estimate_truncate,
)
from ragkit.generation.chat import Prompt, as_messages, plain_transcript
from ragkit.generation.generator import Generator


class TokenAccounting:
    """``count`` / ``truncate`` / ``render`` / ``context_length`` with or without a tokenizer.

    ``tokenizer``: None (estimates), or anything :class:`Generator` accepts as a model ("default",
    a hub id, a folder). ``context_length``: a fixed value; otherwise ``reported()`` is asked
    (e.g. the server's ``max_model_len``), then the tokenizer's model config, then ``fallback``.
    """

    def __init__(
        self,
        tokenizer: str | None,
        context_length: int | None,
        reported: Callable[[], int | None],
        fallback: int,
    ) -> None:
        self.local = Generator(tokenizer) if tokenizer is not None else None
        self._fixed = context_length
        self._reported = reported
        self._fallback = fallback
        self._resolved: int | None = None
        self._lock = threading.Lock()

    @property
    def exact(self) -> bool:
        """Whether counts come from the model's tokenizer (else they are estimates)."""
        return self.local is not None

    @property
    def tokenizer(self) -> Any:
        """The local tokenizer (None when counting by estimate)."""
        return self.local.tokenizer if self.local is not None else None

    def context_length(self) -> int:
        if self._fixed is not None:
            return self._fixed
        with self._lock:
            if self._resolved is None:
                found = self._reported()
                if found is None and self.local is not None:
                    found = self.local.context_length
                self._resolved = found if found is not None else self._fallback
            return self._resolved

    def count(self, prompt: Prompt, apply_chat_template: bool | None = None) -> int:
        if self.local is not None:
            return self.local.count_tokens(prompt, apply_chat_template)
        return estimate_prompt_tokens(prompt, apply_chat_template)

    def count_text(self, text: str) -> int:
        """Tokens of a bare piece of generated text (no template around it)."""
        if self.local is not None:
            return self.local.count_tokens(text, apply_chat_template=False)
        return estimate_text_tokens(text)

    def truncate(self, text: str, max_tokens: int) -> str:
        if self.local is not None:
            return self.local.truncate(text, max_tokens)
        return estimate_truncate(text, max_tokens)

    def render(self, prompt: Prompt, apply_chat_template: bool | None = None) -> str:
        """The prompt as text: exact with a tokenizer, else a labelled transcript.

        Without a tokenizer the server's chat template is unknown; the transcript is what the
        result's ``prompt_text`` (and so the trace) shows instead.
        """
        if self.local is not None:
            return self.local.render(prompt, apply_chat_template)
        if isinstance(prompt, str):
            return prompt
        return plain_transcript(as_messages(prompt))
