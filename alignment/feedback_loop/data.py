"""The loop's data: preference pairs exported from the feedback store, checked, in the served format.

The pairs come out of :func:`ragkit.feedback.export_preferences` (the code behind ``ragkit
feedback export``), with one difference: each prompt is the exact text the served generator was
given — the stored passages and question rendered through the same prompt template, and chat
template when the format is a chat one — instead of the export's neutral plain text. The reward
model then scores prompts in the form PPO's rollouts use, and what PPO trains is what ``ragkit
serve`` runs.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alignment.errors import AlignmentError


class FeedbackLoopError(AlignmentError):
    """The feedback loop cannot run on this input (too little feedback, the wrong model...)."""


class NotEnoughFeedbackError(FeedbackLoopError):
    """The feedback store holds fewer preference pairs than the loop needs."""


class FeedbackMismatchError(FeedbackLoopError):
    """The feedback was given on answers of another model or prompt format."""


def canonical_model(name: str | None) -> str:
    """One spelling per model: packaged aliases and ``default`` → the packaged model's name,
    existing folders → their absolute path, anything else (a hub id) as given."""
    from ragkit.generation.checkpoints import DEFAULT_GENERATOR, GEMMA_ALIASES, SMOLLM2_ALIASES

    text = (name or "default").strip()
    key = text.lower()
    key = DEFAULT_GENERATOR if key == "default" else key
    if key in GEMMA_ALIASES:
        return "gemma3-270m"
    if key in SMOLLM2_ALIASES:
        return "smollm2"
    path = Path(text).expanduser()
    if path.exists():
        return str(path.resolve())
    return text


def default_prompt_format(model: str) -> str:
    """The prompt template ``ragkit serve`` uses for ``model`` unless told otherwise."""
    from ragkit.rag.profiles import answering_profile

    return answering_profile(model).template  # "default" included


@dataclass
class ServedPromptRenderer:
    """``render(question, passages) -> str``: the text the served generator reads.

    ``template``: a prompt-library template name (``grounded_qa_completion``,
    ``grounded_qa``...). Completion templates are used as they render; chat templates go
    through the model tokenizer's chat template, as :class:`ragkit.generation.Generator` does.
    """

    model: str
    template: str
    _builder: Any = field(default=None, init=False, repr=False)
    _tokenizer: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        from ragkit.rag.prompt_builder import PromptBuilder

        try:
            self._builder = PromptBuilder(self.template)
        except (KeyError, ValueError) as exc:
            reason = exc.args[0] if exc.args else exc
            raise FeedbackLoopError(f"prompt format {self.template!r}: {reason}") from None

    @property
    def completion(self) -> bool:
        return bool(self._builder.completion)

    def _chat_tokenizer(self) -> Any:
        if self._tokenizer is None:
            from alignment.backbone import load_tokenizer, resolve_backbone

            self._tokenizer = load_tokenizer(resolve_backbone(self.model))
        return self._tokenizer

    def __call__(self, question: str, passages: Sequence[Any]) -> str:
        from ragkit.generation.chat import render_prompt
        from ragkit.rag.schema import Passage

        shown = [
            Passage(
                n=p.n,
                chunk_id=p.chunk_id or f"passage-{p.n}",
                source=p.source,
                start=0,
                end=len(p.text),
                text=p.text,
                score=0.0,
            )
            for p in passages
        ]
        built = self._builder.render(question, shown)
        if self.completion and isinstance(built, str):
            return built
        rendered = render_prompt(self._chat_tokenizer(), built, None)
        return rendered.text


@dataclass
class LoopPairs:
    """The exported pairs and what the loop records about them."""

    path: Path
    pairs: list[dict[str, Any]]
    counts: dict[str, int]
    sha256: str

    @property
    def prompts(self) -> list[str]:
        """Distinct prompts, in export order: the PPO rollout prompts."""
        return list(dict.fromkeys(p["prompt"] for p in self.pairs))

    @property
    def passages(self) -> dict[str, list[str]]:
        """Each prompt's passage texts (those of its first pair): a grounded rollout's quotes."""
        found: dict[str, list[str]] = {}
        for pair in self.pairs:
            found.setdefault(pair["prompt"], list(pair.get("passages") or []))
        return found

    def provenance(self, db: Path) -> dict[str, Any]:
        origins = Counter(p["origin"] for p in self.pairs)
        return {
            "feedback_db": str(db.resolve()),
            "pairs": len(self.pairs),
            "pairs_file": str(self.path),
            "pairs_sha256": self.sha256,
            "pairs_from": dict(sorted(origins.items())),
            "distinct_prompts": len(self.prompts),
            "store": self.counts,
            "answer_adapters": sorted(
                {a for p in self.pairs for a in str(p.get("adapter", "")).split(",") if a}
            ),
        }


def export_loop_pairs(
    db: str | os.PathLike[str],
    out: Path,
    *,
    model: str,
    prompt_format: str,
    render: ServedPromptRenderer,
    min_pairs: int,
    allow_unrecorded_format: bool = False,
) -> LoopPairs:
    """Export the store's pairs to ``out`` (prompts in the served format) and check them.

    Raises :class:`NotEnoughFeedbackError` (fewer than ``min_pairs``, saying how many there
    are and what a pair needs) or :class:`FeedbackMismatchError` (answers of another model or
    prompt format, naming both) — each a one-line message.
    """
    from ragkit.feedback import FeedbackStore, export_preferences

    db = Path(db)
    count = export_preferences(db, out, render=render)
    with FeedbackStore(db, create=False) as store:
        counts = store.counts()
    if count < min_pairs:
        raise NotEnoughFeedbackError(
            f"feedback store {db} has {count} preference pair(s) ({counts['answers']} answers, "
            f"{counts['votes']} votes, {counts['choices']} choices); the loop needs at least "
            f"{min_pairs} (feedback.min_pairs): a pair is a choice between two answers, or an "
            "answer voted up and another voted down on the same question"
        )
    raw = out.read_bytes()
    pairs = [json.loads(line) for line in raw.decode("utf-8").splitlines() if line.strip()]
    check_pairs(pairs, model, prompt_format, db, allow_unrecorded_format)
    return LoopPairs(out, pairs, counts, hashlib.sha256(raw).hexdigest())


def reload_loop_pairs(path: Path, counts: dict[str, int], sha256: str, *, db: Path) -> LoopPairs:
    """The pairs an interrupted run exported (a resume replays them, not the store as it is
    now); a file that is gone or changed is a one-line error, since the reward model and PPO
    of that run were trained on exactly those bytes."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise FeedbackLoopError(
            f"--resume: cannot read the exported pairs {path} ({exc.strerror or exc}); run "
            "without --resume to export again"
        ) from None
    if hashlib.sha256(raw).hexdigest() != sha256:
        raise FeedbackLoopError(
            f"--resume: {path} changed since the run exported it from {db}; run without "
            "--resume to export again"
        )
    pairs = [json.loads(line) for line in raw.decode("utf-8").splitlines() if line.strip()]
    return LoopPairs(path, pairs, dict(counts), sha256)


def check_pairs(
    pairs: Sequence[dict[str, Any]],
    model: str,
    prompt_format: str,
    db: Path,
    allow_unrecorded_format: bool = False,
) -> None:
    """Refuse pairs whose answers came from another model or another prompt format."""
    wanted = canonical_model(model)
    models: Counter[str] = Counter()
    formats: Counter[str] = Counter()
    for pair in pairs:
        for name in str(pair.get("model", "")).split(","):
            models[name] += 1
        for name in str(pair.get("prompt_format", "")).split(","):
            formats[name] += 1
    others = sorted(name for name in models if canonical_model(name) != wanted)
    if others:
        n = sum(models[name] for name in others)
        raise FeedbackMismatchError(
            f"feedback store {db} holds answers of model {', '.join(map(repr, others))} "
            f"({n} pair side(s)), but the loop trains {model!r}: export the feedback of one "
            "model, or set model to the one that answered"
        )
    unrecorded = formats.pop("", 0)
    if unrecorded and not allow_unrecorded_format:
        raise FeedbackMismatchError(
            f"feedback store {db} holds {unrecorded} pair side(s) whose prompt format was not "
            f"recorded (a store written before feedback schema 2); the loop trains prompt "
            f"format {prompt_format!r}: set feedback.allow_unrecorded_format: true if they "
            "were answered with it"
        )
    wrong = sorted(name for name in formats if name != prompt_format)
    if wrong:
        raise FeedbackMismatchError(
            f"feedback store {db} holds answers of prompt format "
            f"{', '.join(map(repr, wrong))}, but the loop trains prompt format "
            f"{prompt_format!r}: set prompt_format to the one the server used"
        )


def write_prompts(
    prompts: Sequence[str], path: Path, passages: Mapping[str, Sequence[str]] | None = None
) -> Path:
    """The PPO job's prompt file (``format: prompts``): one ``{"prompt": ...}`` per line, with
    the prompt's ``"passages"`` when given (grounded rollouts quote them)."""
    from ragkit.atomic import atomic_write_text

    def row(prompt: str) -> dict[str, Any]:
        if passages is None:
            return {"prompt": prompt}
        return {"prompt": prompt, "passages": list(passages.get(prompt, []))}

    atomic_write_text(path, "".join(json.dumps(row(p)) + "\n" for p in prompts))
    return path
