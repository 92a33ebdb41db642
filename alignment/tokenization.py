"""Turning prompt/response text into token ids that never lose the end of a response.

Three rules from the RLHF recipes live here:

* a dedicated pad token, distinct from EOS (with pad == EOS the attention mask also hides the
  real EOS that ends each response, which is exactly where a reward model reads its score);
* the prompt is truncated from the left, so the response (what is scored or learnt) is never cut
  and the prompt keeps its most recent turns;
* both responses of a pair see the *same* truncated prompt, so their scores differ only by the
  response.

Records that cannot follow the rules are dropped and counted in a :class:`DataReport`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from alignment.data import ChatMessage, Demonstration, PreferencePair
from alignment.errors import DataFormatError
from alignment.report import DataReport

DEFAULT_PAD_TOKEN = "<|pad|>"


def ensure_pad_token(tokenizer: Any, model: Any = None, pad_token: str = DEFAULT_PAD_TOKEN) -> bool:
    """Give ``tokenizer`` a pad token distinct from EOS; resize ``model``'s embeddings to match.

    Returns True when a token was added. ``model`` (a transformers model, optional) also gets
    ``config.pad_token_id`` so that nothing downstream falls back to EOS for padding.
    """
    added = False
    if tokenizer.pad_token_id is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
        tokenizer.add_special_tokens({"pad_token": pad_token})
        added = True
    if tokenizer.pad_token_id == tokenizer.eos_token_id:  # pragma: no cover - defensive
        raise DataFormatError(f"pad token {pad_token!r} is the tokenizer's EOS token")
    if model is not None:
        if model.get_input_embeddings().num_embeddings < len(tokenizer):
            model.resize_token_embeddings(len(tokenizer))
        model.config.pad_token_id = tokenizer.pad_token_id
    return added


@dataclass(frozen=True)
class EncodedExample:
    """Token ids of prompt + response; ``response_start`` is the index of the first response id."""

    input_ids: tuple[int, ...]
    response_start: int

    @property
    def response_ids(self) -> tuple[int, ...]:
        """The response part (what SFT learns and what a reward model judges)."""
        return self.input_ids[self.response_start :]


@dataclass(frozen=True)
class TokenizedPair:
    """A preference pair ready for collation; ``group`` is the prompt key used for batching."""

    chosen: EncodedExample
    rejected: EncodedExample
    group: str
    index: int

    @property
    def length(self) -> int:
        """The longer of the two sequences (what a batch is padded to)."""
        return max(len(self.chosen.input_ids), len(self.rejected.input_ids))


@dataclass(frozen=True)
class TokenizedDemonstration:
    """A demonstration ready for collation."""

    example: EncodedExample
    group: str
    index: int

    @property
    def length(self) -> int:
        """Sequence length."""
        return len(self.example.input_ids)


def render_chat(tokenizer: Any, messages: Sequence[ChatMessage]) -> tuple[str, str]:
    """Split a chat into (prompt text, response text) with the tokenizer's chat template.

    The prompt is the template applied to every message but the last with the generation prompt
    added; the response is the rest of the fully rendered chat (it includes the template's
    end-of-turn token, so no EOS is appended).
    """
    if not getattr(tokenizer, "chat_template", None):
        raise DataFormatError("chat demonstrations need a tokenizer with a chat template")
    as_dicts = [m.model_dump() for m in messages]
    full = tokenizer.apply_chat_template(as_dicts, tokenize=False)
    prompt = tokenizer.apply_chat_template(
        as_dicts[:-1], tokenize=False, add_generation_prompt=True
    )
    if not isinstance(full, str) or not isinstance(prompt, str) or not full.startswith(prompt):
        raise ValueError("chat_template_mismatch")
    return prompt, full[len(prompt) :]


def _special_prefix(tokenizer: Any) -> tuple[int, ...]:
    """Ids the tokenizer puts before the text by itself (a BOS for Llama-2 style tokenizers)."""
    with_special = list(tokenizer("a")["input_ids"])
    without = list(tokenizer("a", add_special_tokens=False)["input_ids"])
    for start in range(len(with_special) - len(without) + 1):
        if with_special[start : start + len(without)] == without:
            return tuple(with_special[:start])
    return ()


class PromptResponseEncoder:
    """Encodes prompts with one or more responses under a total ``max_length`` budget.

    The responses are kept whole (with EOS appended when ``append_eos``); the prompt is cut from
    the left to fit. A record whose prompt would keep fewer than ``min_prompt_tokens`` tokens (or
    whose response alone does not fit) is ``too_long``.
    """

    def __init__(
        self,
        tokenizer: Any,
        *,
        max_length: int,
        min_prompt_tokens: int = 8,
        append_eos: bool = True,
    ) -> None:
        if tokenizer.eos_token_id is None and append_eos:
            raise DataFormatError("the tokenizer has no EOS token to end responses with")
        if max_length < 2:
            raise ValueError(f"max_length must be at least 2, got {max_length}")
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.min_prompt_tokens = min_prompt_tokens
        self.append_eos = append_eos
        self.prefix = _special_prefix(tokenizer)

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text without special tokens (one batched tokenizer call)."""
        if not texts:
            return []
        encoded = self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        return [list(ids) for ids in encoded]

    def assemble(
        self, prompt_ids: Sequence[int], responses_ids: Sequence[Sequence[int]], append_eos: bool
    ) -> tuple[list[EncodedExample], int] | str:
        """Join one prompt with each response; return (examples, prompt tokens cut) or a reason."""
        tails = [
            list(r) + ([self.tokenizer.eos_token_id] if append_eos else []) for r in responses_ids
        ]
        if any(not r for r in responses_ids):
            return "empty_response"
        budget = self.max_length - len(self.prefix) - max(len(t) for t in tails)
        keep = min(len(prompt_ids), max(budget, 0))
        if budget < 0 or keep < min(len(prompt_ids), self.min_prompt_tokens):
            return "too_long"
        cut = len(prompt_ids) - keep
        head = [*self.prefix, *prompt_ids[cut:]]
        examples = [EncodedExample(tuple(head + tail), len(head)) for tail in tails]
        return examples, cut

    def encode(self, prompt: str, response: str) -> EncodedExample | str:
        """Encode one prompt/response; returns the reason string when it cannot be encoded."""
        prompt_ids, response_ids = self.token_ids([prompt, response])
        if not response.strip():
            return "empty_response"
        result = self.assemble(prompt_ids, [response_ids], self.append_eos)
        return result if isinstance(result, str) else result[0][0]

    def encode_for_scoring(self, prompt: str, response: str) -> EncodedExample:
        """Like :meth:`encode`, but never refuses: an over-long response keeps its last tokens.

        Scoring must return a number for every sample (e.g. a PPO rollout); the score is read
        at the end of the sequence, so the end is what is kept.
        """
        prompt_ids, response_ids = self.token_ids([prompt, response])
        eos = [self.tokenizer.eos_token_id] if self.append_eos else []
        tail = (list(response_ids) + eos)[-(self.max_length - len(self.prefix)) :]
        budget = self.max_length - len(self.prefix) - len(tail)
        head = [
            *self.prefix,
            *(prompt_ids[max(len(prompt_ids) - budget, 0) :] if budget > 0 else []),
        ]
        return EncodedExample(tuple(head + tail), len(head))


def _where(record: PreferencePair | Demonstration, index: int) -> str:
    source = record.metadata.get("source")
    return str(source) if source is not None else f"record {index}"


def tokenize_pairs(
    pairs: Sequence[PreferencePair], encoder: PromptResponseEncoder, *, source: str = "pairs"
) -> tuple[list[TokenizedPair], DataReport]:
    """Tokenise pairs; drop (and count) empty, identical and over-long ones."""
    report = DataReport(source=f"tokenised {source}")
    prompts = encoder.token_ids([p.prompt for p in pairs])
    chosen = encoder.token_ids([p.chosen for p in pairs])
    rejected = encoder.token_ids([p.rejected for p in pairs])
    out: list[TokenizedPair] = []
    for i, pair in enumerate(pairs):
        where = _where(pair, i)
        if not pair.chosen.strip() or not pair.rejected.strip():
            report.drop("empty_response", where)
            continue
        if pair.chosen.strip() == pair.rejected.strip():
            report.drop("identical_responses", where)
            continue
        result = encoder.assemble(prompts[i], [chosen[i], rejected[i]], encoder.append_eos)
        if isinstance(result, str):
            report.drop(result, where)
            continue
        (c, r), cut = result
        if cut:
            report.note("prompt_truncated")
        out.append(TokenizedPair(c, r, pair.group_key(), i))
        report.keep()
    return out, report


def tokenize_demonstrations(
    demos: Sequence[Demonstration],
    encoder: PromptResponseEncoder,
    *,
    source: str = "demonstrations",
) -> tuple[list[TokenizedDemonstration], DataReport]:
    """Tokenise demonstrations (chat ones through the chat template); count the dropped ones."""
    report = DataReport(source=f"tokenised {source}")
    out: list[TokenizedDemonstration] = []
    for i, demo in enumerate(demos):
        where = _where(demo, i)
        append_eos = encoder.append_eos
        if demo.messages is not None:
            try:
                prompt, response = render_chat(encoder.tokenizer, demo.messages)
            except ValueError as problem:
                report.drop(str(problem), where)
                continue
            append_eos = False
            if not demo.messages[-1].content.strip():
                report.drop("empty_response", where)
                continue
        else:
            prompt, response = demo.prompt or "", demo.response or ""
        if not response.strip():
            report.drop("empty_response", where)
            continue
        prompt_ids, response_ids = encoder.token_ids([prompt, response])
        result = encoder.assemble(prompt_ids, [response_ids], append_eos)
        if isinstance(result, str):
            report.drop(result, where)
            continue
        (example,), cut = result
        if cut:
            report.note("prompt_truncated")
        out.append(TokenizedDemonstration(example, demo.group_key(), i))
        report.keep()
    return out, report
