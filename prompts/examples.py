"""Few-shot examples as pydantic records, and how they are laid into a prompt."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from prompts.protocols import Prompt, as_messages


class Example(BaseModel):
    """One demonstration: an input, its output and, for chain-of-thought, a worked rationale.

    ``key`` is the text similarity selectors compare with the query; it defaults to ``input``
    (set it to the bare question when ``input`` also carries a long context). ``fields`` holds
    extra values an example template may use.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    input: str
    output: str
    rationale: str | None = None
    key: str | None = None
    fields: dict[str, str] = Field(default_factory=dict)

    def __hash__(self) -> int:  # frozen, but ``fields`` is a dict: hash its items
        return hash(
            (self.input, self.output, self.rationale, self.key, tuple(sorted(self.fields.items())))
        )

    @property
    def match_text(self) -> str:
        """The text a semantic selector embeds."""
        return self.key if self.key is not None else self.input

    def values(self) -> dict[str, Any]:
        """Everything an example template may reference."""
        return {
            "input": self.input,
            "output": self.output,
            "rationale": self.rationale or "",
            **self.fields,
        }


def answer_text(example: Example, with_rationale: bool = False, marker: str = "Answer:") -> str:
    """The assistant side of a demonstration; with a rationale it ends ``Answer: <output>``."""
    if with_rationale and example.rationale:
        return f"{example.rationale.strip()}\n{marker} {example.output}"
    return example.output


def insert_examples(
    prompt: Prompt, examples: Sequence[Example], with_rationale: bool = False
) -> list[dict[str, str]] | str:
    """The prompt with demonstrations placed right before the final request.

    A conversation gets each example as a user turn and an assistant turn before its last
    user message (instruct models learn the format best from their own turns); a plain
    string gets an ``Input:/Output:`` block in front of it.
    """
    if not examples:
        return prompt if isinstance(prompt, str) else as_messages(prompt)
    if isinstance(prompt, str):
        blocks = [f"Input: {e.input}\nOutput: {answer_text(e, with_rationale)}" for e in examples]
        return "\n\n".join([*blocks, prompt])
    messages = as_messages(prompt)
    last_user = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=None)
    if last_user is None:
        raise ValueError("a conversation needs a user message to put examples before")
    shots: list[dict[str, str]] = []
    for e in examples:
        shots.append({"role": "user", "content": e.input})
        shots.append({"role": "assistant", "content": answer_text(e, with_rationale)})
    return messages[:last_user] + shots + messages[last_user:]
