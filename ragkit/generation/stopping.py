"""Stop strings: ending generation when a string appears, and cutting the output before it.

Stop strings are text, but generation proceeds token by token and a stop string can span
several tokens (or end in the middle of one), so every check decodes a window of recent tokens.
The same :func:`find_stop` is used by the batch path, the streaming path and the final cut, so
streamed and non-streamed outputs agree.

Semantics: a row stops at the first token after which its generated text contains any stop
string, and the text is cut before the earliest stop string found at that point. (A longer stop
string that started earlier but had not completed yet cannot complete any more.)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

REPLACEMENT_CHAR = "\ufffd"


def find_stop(text: str, stops: Sequence[str]) -> tuple[int, str] | None:
    """Earliest occurrence of any stop string in ``text`` as ``(index, stop)``; ties go to the
    longer stop string so the reported match is the most specific one."""
    best: tuple[int, str] | None = None
    for stop in stops:
        index = text.find(stop)
        if index < 0:
            continue
        if best is None or index < best[0] or (index == best[0] and len(stop) > len(best[1])):
            best = (index, stop)
    return best


def held_back(text: str, stops: Sequence[str]) -> int:
    """How many trailing characters of ``text`` must not be shown yet while streaming.

    Those are a suffix that could still grow into a stop string, and a trailing replacement
    character (an incomplete multi-byte character that the next token may complete).
    """
    body = text.rstrip(REPLACEMENT_CHAR)
    pending = len(text) - len(body)  # may still become any character, even part of a stop
    keep = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(body)), 0, -1):
            if body.endswith(stop[:size]):
                keep = max(keep, size)
                break
    return pending + keep


def token_window(stops: Sequence[str]) -> int:
    """Recent tokens to decode when looking for a stop string that a new token may complete.

    A token decodes to at least one byte and a character is at most four, so this many tokens
    always cover the longest stop string plus the token that completed it.
    """
    longest = max((len(s) for s in stops), default=0)
    return 4 * longest + 4


def make_stop_criteria(
    decode: Callable[[list[int]], str], stops: Sequence[str], prompt_length: int
) -> Callable[..., torch.Tensor]:
    """A transformers ``StoppingCriteria`` marking rows whose new text contains a stop string.

    ``prompt_length`` is the padded prompt width: only generated tokens are searched, so a stop
    string inside the prompt never ends generation. A row that stopped stays stopped.
    """
    import torch
    from transformers import StoppingCriteria

    window = token_window(stops)

    class _StopStrings(StoppingCriteria):
        def __init__(self) -> None:
            self.done: torch.Tensor | None = None

        def __call__(
            self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: object
        ) -> torch.Tensor:
            rows = input_ids.shape[0]
            if self.done is None or self.done.shape[0] != rows:
                self.done = torch.zeros(rows, dtype=torch.bool, device=input_ids.device)
            start = max(prompt_length, input_ids.shape[1] - window)
            tails = input_ids[:, start:].tolist()
            for row, tail in enumerate(tails):
                if not self.done[row] and find_stop(decode(tail), stops) is not None:
                    self.done[row] = True
            return self.done.clone()

    return _StopStrings()


def make_cancel_criteria(is_cancelled: Callable[[], bool]) -> Callable[..., torch.Tensor]:
    """A ``StoppingCriteria`` ending every row once ``is_cancelled()`` is true (abandoned streams)."""
    import torch
    from transformers import StoppingCriteria

    class _Cancel(StoppingCriteria):
        def __call__(
            self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: object
        ) -> torch.Tensor:
            flag = is_cancelled()
            return torch.full(
                (input_ids.shape[0],), flag, dtype=torch.bool, device=input_ids.device
            )

    return _Cancel()
