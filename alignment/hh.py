"""The Anthropic HH dialogue format: ``\\n\\nHuman: ... \\n\\nAssistant: ...``.

Each HH record holds two whole dialogues, ``chosen`` and ``rejected``, that share every turn up to
the last assistant turn. A reward model must see the shared prompt once and the two differing
answers separately, so the prompt is everything up to and including the last
``\\n\\nAssistant:`` marker and the responses are what follows it.
"""

from __future__ import annotations

HUMAN_MARKER = "\n\nHuman:"
ASSISTANT_MARKER = "\n\nAssistant:"


class HHFormatError(ValueError):
    """A record that is not a valid HH pair; ``reason`` is a short key for the data report."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def split_hh_dialogue(dialogue: str) -> tuple[str, str]:
    """Split one dialogue into (prompt ending with the last assistant marker, final response)."""
    cut = dialogue.rfind(ASSISTANT_MARKER)
    if cut < 0:
        raise HHFormatError("no_assistant_turn")
    end = cut + len(ASSISTANT_MARKER)
    return dialogue[:end], dialogue[end:]


def split_hh_pair(chosen: str, rejected: str) -> tuple[str, str, str]:
    """Return ``(prompt, chosen_response, rejected_response)`` for one HH record.

    Raises :class:`HHFormatError` with reason ``no_assistant_turn`` or ``prompt_mismatch``
    (the dialogues differ before their last assistant turn, so there is no shared prompt).
    """
    prompt, chosen_response = split_hh_dialogue(chosen)
    other_prompt, rejected_response = split_hh_dialogue(rejected)
    if prompt != other_prompt:
        raise HHFormatError("prompt_mismatch")
    return prompt, chosen_response, rejected_response
