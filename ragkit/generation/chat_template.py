"""A model's own chat template rendered without transformers (for GGUF-backed generators).

A GGUF file carries its chat template as Jinja text (``tokenizer.chat_template``). Rendering it
here, in a sandboxed immutable environment as transformers does, lets the llama.cpp backend use
:func:`ragkit.generation.chat.render_prompt` unchanged — the same prompt text as the transformers
path — without importing transformers. Messages are data: the sandbox means neither a template
nor message text can reach Python objects, and message text is never itself parsed as a template.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ragkit.errors import RagkitError


class ChatTemplateError(RagkitError):
    """The model's chat template does not render (a broken template, or it refused the turns)."""


class TemplateTokenizer:
    """The two members of a tokenizer that ``render_prompt`` uses: the template and its renderer."""

    def __init__(self, chat_template: str | None, bos_token: str = "", eos_token: str = "") -> None:
        self.chat_template = chat_template or None
        self.bos_token = bos_token
        self.eos_token = eos_token
        self._compiled: Any = None

    def _template(self) -> Any:
        if self._compiled is None:
            from jinja2 import TemplateError
            from jinja2.sandbox import ImmutableSandboxedEnvironment

            env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)

            def raise_exception(message: str) -> None:
                raise ChatTemplateError(f"the model's chat template refused the prompt: {message}")

            env.globals["raise_exception"] = raise_exception
            try:
                self._compiled = env.from_string(self.chat_template or "")
            except TemplateError as exc:
                raise ChatTemplateError(
                    f"the model's chat template does not parse: {exc}"
                ) from None
        return self._compiled

    def apply_chat_template(
        self,
        messages: Sequence[Mapping[str, str]],
        *,
        tokenize: bool = False,
        add_generation_prompt: bool = True,
    ) -> str:
        if tokenize:
            raise ValueError("TemplateTokenizer renders text only (tokenize=False)")
        from jinja2 import TemplateError

        try:
            return str(
                self._template().render(
                    messages=[dict(m) for m in messages],
                    add_generation_prompt=add_generation_prompt,
                    bos_token=self.bos_token,
                    eos_token=self.eos_token,
                )
            )
        except TemplateError as exc:
            raise ChatTemplateError(f"the model's chat template failed: {exc}") from None
