"""Scoring an adapter on held-out questions, one score per question.

An evaluation function is ``evaluate(adapter) -> per-question scores``, where ``adapter`` is a
peft folder, a packaged adapter name or None (the bare base model). The loop calls it for the
current adapter and for the candidate and compares the two lists question by question, so it
must score the same questions in the same order each time, deterministically (greedy decoding).
:class:`AnswerScoreEvaluator` is the default; tests and benchmarks pass their own.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path

from alignment.feedback_loop.config import EvaluationSettings
from alignment.feedback_loop.data import FeedbackLoopError

EvaluateFn = Callable[[str | None], Sequence[float]]
"""``evaluate(adapter) -> scores``: one score per held-out question, same questions every call."""

_MARKERS = re.compile(r"\[\d+\]")


class AnswerScoreEvaluator:
    """Per-question answer score of the pipeline ``ragkit ask`` builds, with a given adapter.

    An answerable question scores the token F1 of the answer against its gold answers (0 when
    the model abstains); an unanswerable one scores 1 when the model abstains, else 0. The
    questions are read once (``settings.questions``, first ``settings.limit``).
    """

    def __init__(self, settings: EvaluationSettings, model: str) -> None:
        from ragkit.evaluation import load_dataset

        if settings.questions is None or settings.index is None:
            raise FeedbackLoopError(
                "the default evaluation needs evaluation.questions (held-out questions) and "
                "evaluation.index (the index they are answered from)"
            )
        self.settings = settings
        self.model = model
        data = load_dataset(Path(settings.questions))
        questions = list(data.questions)
        self.questions = questions[: settings.limit] if settings.limit else questions
        if len(self.questions) < 2:
            raise FeedbackLoopError(
                f"{settings.questions} holds {len(self.questions)} question(s); the comparison "
                "needs 2 or more"
            )

    def __call__(self, adapter: str | None) -> list[float]:
        from ragkit.evaluation import abstained, token_f1
        from ragkit.rag import answering_pipeline

        settings = self.settings
        assert settings.index is not None
        rag = answering_pipeline(
            settings.index,
            generator=None if self.model == "default" else self.model,
            k=settings.k,
            retriever=settings.retriever,
            adapter=adapter if adapter is not None else "none",
        )
        scores: list[float] = []
        for start in range(0, len(self.questions), settings.batch_size):
            batch = self.questions[start : start + settings.batch_size]
            answers = rag.ask_batch([q.question for q in batch])
            for question, answer in zip(batch, answers, strict=True):
                text = _MARKERS.sub("", answer.answer).strip()
                declined = bool(answer.abstained) or abstained(text)
                if question.is_impossible:
                    scores.append(1.0 if declined else 0.0)
                else:
                    scores.append(0.0 if declined else token_f1(text, question.answers))
        return scores
