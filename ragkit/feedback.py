"""The feedback store: served answers and what users thought of them, as preference pairs.

Every answer the server gives is recorded with its question, the passages it was grounded on,
the model that wrote it (base model, adapter, prompt format) and the time. Users then either
vote (thumbs up/down on one answer) or choose (the better of two answers to the same question).
Choices are preference pairs as they stand; votes become pairs by pairing, per question, each
answer voted up overall with each answer voted down overall. :func:`export_preferences` writes the pairs as the JSONL that
``alignment.read_preference_jsonl`` (and so reward-model training) reads.

SQLite in WAL mode with ``synchronous=FULL``: each record is its own committed transaction, so
killing the server mid-write loses at most the request that was in flight, never a committed
row, and readers (an export) never block the server's writers.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ragkit.atomic import atomic_path
from ragkit.errors import RagkitError

SCHEMA_VERSION = 2
"""Version 2 added ``answers.prompt_format`` and ``answers.adapter`` (empty in version-1 rows); a
version-1 store is upgraded in place when opened."""
PromptStyle = Literal["passages", "question"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS answers (
    id TEXT PRIMARY KEY,
    question TEXT NOT NULL,
    question_key TEXT NOT NULL,
    answer TEXT NOT NULL,
    passages TEXT NOT NULL,
    model TEXT NOT NULL,
    created REAL NOT NULL,
    prompt_format TEXT NOT NULL DEFAULT '',
    adapter TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS answers_by_question ON answers (question_key, created);
CREATE TABLE IF NOT EXISTS votes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    answer_id TEXT NOT NULL REFERENCES answers (id),
    value INTEGER NOT NULL CHECK (value IN (-1, 1)),
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS votes_by_answer ON votes (answer_id);
CREATE TABLE IF NOT EXISTS choices (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    chosen_id TEXT NOT NULL REFERENCES answers (id),
    rejected_id TEXT NOT NULL REFERENCES answers (id),
    created REAL NOT NULL
);
"""


class FeedbackError(RagkitError):
    """Feedback that cannot be recorded: unknown answer, or a choice across questions."""


class StoredPassage(BaseModel):
    """The part of a passage worth keeping with an answer (enough to rebuild the prompt)."""

    model_config = ConfigDict(extra="ignore")

    n: int
    chunk_id: str = ""
    source: str = ""
    text: str


class StoredAnswer(BaseModel):
    """A recorded answer. ``prompt_format`` (the prompt template's name) and ``adapter`` are
    empty for answers recorded before schema version 2 or by a caller that did not give them."""

    model_config = ConfigDict(extra="forbid")

    id: str
    question: str
    answer: str
    passages: list[StoredPassage] = Field(default_factory=list)
    model: str
    created: float
    prompt_format: str = ""
    adapter: str = ""


class ExportedPair(BaseModel):
    """One line of the export: ``prompt``/``chosen``/``rejected`` plus provenance fields."""

    model_config = ConfigDict(extra="forbid")

    prompt: str
    chosen: str
    rejected: str
    question: str
    origin: Literal["choice", "votes"]
    chosen_id: str
    rejected_id: str
    model: str
    prompt_format: str = ""
    adapter: str = ""
    passages: list[str] = Field(default_factory=list)
    """The texts of the passages the chosen answer was given from: what a grounded answer may
    quote, so PPO can sample under the span constraint the server answered with."""


PromptRenderer = Callable[[str, Sequence[StoredPassage]], str]
"""``render(question, passages) -> prompt``: how an exported pair's prompt is written."""


def question_key(question: str) -> str:
    """Answers to "What is X?" and "what is  x ?" are answers to the same question."""
    return re.sub(r"\s+", " ", question).strip().casefold()


def render_prompt(question: str, passages: Sequence[StoredPassage]) -> str:
    """Plain-text prompt of an exported pair: the passages (quoted, numbered) and the question.

    Plain text rather than the policy's chat template, so any reward-model tokenizer can read it;
    the question comes last because reward training truncates prompts from the left.
    """
    lines = ["Passages:"]
    lines += [f"[{p.n}] {p.text}" for p in passages]
    lines += ["", f"Question: {question}"]
    return "\n".join(lines)


def check_existing_store(path: Path) -> None:
    """A path a reader may open as a feedback store: an existing file (else a one-line error)."""
    if path.is_dir():
        raise FeedbackError(f"{path} is a folder, not a feedback store (an SQLite file)")
    if not path.is_file():
        raise FeedbackError(f"feedback store not found: {path}")


class FeedbackStore:
    """A SQLite feedback database; safe to share between threads of one process.

    One connection serves all threads, every use under one lock, and each record is written by
    one autocommitted INSERT: no transaction is ever open across calls, so threads cannot nest
    or end each other's (unlike a shared connection holding read snapshots, see
    ``ragkit.index.store``). SQLite admits one writer at a time anyway, so per-thread
    connections would not write faster; other processes may write the same file concurrently.
    """

    def __init__(self, path: str | os.PathLike[str], *, create: bool = True) -> None:
        """``create=False`` (readers: export, the loop) opens an existing feedback store only:
        a missing path, a folder, or any other file (an empty one, an index's SQLite store) is
        a one-line error, and nothing is written to it. The server creates its store."""
        self.path = Path(path)
        if not create:
            check_existing_store(self.path)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(
                self.path, check_same_thread=False, isolation_level=None, timeout=30.0
            )
            if not create and not self._has_feedback_tables():
                self._db.close()
                raise FeedbackError(
                    f"{self.path} is not a ragkit feedback store (it holds no feedback tables; "
                    "`ragkit serve --feedback-db FILE` writes one)"
                )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, 1, SCHEMA_VERSION):
                raise FeedbackError(
                    f"feedback store {self.path} has schema version {version}; "
                    f"this ragkit reads version {SCHEMA_VERSION}"
                )
            self._db.executescript(_SCHEMA)
            self._upgrade()
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except sqlite3.DatabaseError as exc:
            raise FeedbackError(f"cannot open feedback store {self.path}: {exc}") from None
        self._lock = threading.Lock()

    def _has_feedback_tables(self) -> bool:
        row = self._db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'answers'"
        ).fetchone()
        return row is not None

    def _upgrade(self) -> None:
        """Version 1 → 2: add the columns a version-1 ``answers`` table lacks (empty values)."""
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(answers)")}
        for name in ("prompt_format", "adapter"):
            if name not in columns:
                self._db.execute(f"ALTER TABLE answers ADD COLUMN {name} TEXT NOT NULL DEFAULT ''")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> FeedbackStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ writing

    def record_answer(
        self,
        answer_id: str,
        question: str,
        answer: str,
        passages: Sequence[StoredPassage | dict[str, Any]],
        model: str,
        created: float | None = None,
        *,
        prompt_format: str = "",
        adapter: str = "",
    ) -> None:
        """Record a served answer; ``model`` is the base model, ``prompt_format`` the prompt
        template's name and ``adapter`` the LoRA adapter the answer was generated with."""
        kept = [StoredPassage.model_validate(p) for p in passages]
        payload = json.dumps([p.model_dump() for p in kept], ensure_ascii=False)
        with self._lock:
            try:
                self._db.execute(
                    "INSERT INTO answers (id, question, question_key, answer, passages, model, "
                    "created, prompt_format, adapter) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        answer_id,
                        question,
                        question_key(question),
                        answer,
                        payload,
                        model,
                        time.time() if created is None else created,
                        prompt_format,
                        adapter,
                    ),
                )
            except sqlite3.IntegrityError:
                raise FeedbackError(f"answer {answer_id!r} is already recorded") from None

    def vote(self, answer_id: str, value: Literal[1, -1]) -> None:
        """Thumbs up (``1``) or down (``-1``) on a recorded answer."""
        if value not in (1, -1):
            raise FeedbackError("a vote is 1 (up) or -1 (down)")
        with self._lock:
            self._require(answer_id)
            self._db.execute(
                "INSERT INTO votes (answer_id, value, created) VALUES (?, ?, ?)",
                (answer_id, value, time.time()),
            )

    def choose(self, chosen_id: str, rejected_id: str) -> None:
        """Record that ``chosen_id`` is the better of two answers to the same question."""
        if chosen_id == rejected_id:
            raise FeedbackError("chosen and rejected must be two different answers")
        with self._lock:
            keys = {self._require(chosen_id), self._require(rejected_id)}
            if len(keys) != 1:
                raise FeedbackError("a choice compares two answers to the same question")
            self._db.execute(
                "INSERT INTO choices (chosen_id, rejected_id, created) VALUES (?, ?, ?)",
                (chosen_id, rejected_id, time.time()),
            )

    def _require(self, answer_id: str) -> str:
        row = self._db.execute(
            "SELECT question_key FROM answers WHERE id = ?", (answer_id,)
        ).fetchone()
        if row is None:
            raise FeedbackError(f"no recorded answer with id {answer_id!r}")
        return str(row[0])

    # ------------------------------------------------------------------ reading

    def get(self, answer_id: str) -> StoredAnswer | None:
        with self._lock:
            row = self._db.execute(
                f"SELECT {_ANSWER_COLUMNS} FROM answers WHERE id = ?",
                (answer_id,),
            ).fetchone()
        return None if row is None else _stored(row)

    def counts(self) -> dict[str, int]:
        with self._lock:
            return {
                table: int(self._db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
                for table in ("answers", "votes", "choices")
            }

    def preference_pairs(
        self, prompt_style: PromptStyle = "passages", render: PromptRenderer | None = None
    ) -> list[ExportedPair]:
        """Pairs from choices (in order made), then pairs from votes (grouped by question).

        ``render(question, passages)``, when given, writes each pair's prompt instead of
        ``prompt_style`` (e.g. the exact prompt the generator was given, for a policy-side
        reward model).
        """
        with self._lock:
            choices = self._db.execute(
                "SELECT chosen_id, rejected_id FROM choices ORDER BY id"
            ).fetchall()
            scored = self._db.execute(
                "SELECT a.id, a.question, a.answer, a.passages, a.model, a.created, "
                "a.prompt_format, a.adapter, a.question_key, SUM(v.value) "
                "FROM answers a JOIN votes v ON v.answer_id = a.id "
                "GROUP BY a.id HAVING SUM(v.value) != 0 ORDER BY a.question_key, a.created, a.id"
            ).fetchall()
        pairs = [
            _pair(chosen, rejected, "choice", prompt_style, render)
            for chosen, rejected in self._answers_of(choices)
        ]
        groups: dict[str, list[tuple[StoredAnswer, int]]] = {}
        for row in scored:
            groups.setdefault(row[8], []).append((_stored(row[:8]), int(row[9])))
        for members in groups.values():
            good = [a for a, score in members if score > 0]
            bad = [a for a, score in members if score < 0]
            for chosen in good:
                for rejected in bad:
                    if chosen.answer.strip() != rejected.answer.strip():
                        pairs.append(_pair(chosen, rejected, "votes", prompt_style, render))
        return pairs

    def _answers_of(
        self, choices: list[tuple[str, str]]
    ) -> Iterator[tuple[StoredAnswer, StoredAnswer]]:
        for chosen_id, rejected_id in choices:
            chosen, rejected = self.get(chosen_id), self.get(rejected_id)
            if chosen is not None and rejected is not None:
                yield chosen, rejected


_ANSWER_COLUMNS = "id, question, answer, passages, model, created, prompt_format, adapter"


def _stored(row: Sequence[Any]) -> StoredAnswer:
    return StoredAnswer(
        id=row[0],
        question=row[1],
        answer=row[2],
        passages=[StoredPassage.model_validate(p) for p in json.loads(row[3])],
        model=row[4],
        created=row[5],
        prompt_format=row[6],
        adapter=row[7],
    )


def _joined(*values: str) -> str:
    """The distinct values of a pair's two answers, sorted and comma-joined (``"m1,m2"``)."""
    return ",".join(sorted(set(values)))


def _pair(
    chosen: StoredAnswer,
    rejected: StoredAnswer,
    origin: Literal["choice", "votes"],
    style: PromptStyle,
    render: PromptRenderer | None = None,
) -> ExportedPair:
    if render is not None:
        prompt = render(chosen.question, chosen.passages)
    elif style == "question":
        prompt = chosen.question
    else:
        prompt = render_prompt(chosen.question, chosen.passages)
    return ExportedPair(
        prompt=prompt,
        chosen=chosen.answer,
        rejected=rejected.answer,
        question=chosen.question,
        origin=origin,
        chosen_id=chosen.id,
        rejected_id=rejected.id,
        model=_joined(chosen.model, rejected.model),
        prompt_format=_joined(chosen.prompt_format, rejected.prompt_format),
        adapter=_joined(chosen.adapter, rejected.adapter),
        passages=[p.text for p in chosen.passages],
    )


def export_preferences(
    db: str | os.PathLike[str],
    out: str | os.PathLike[str],
    prompt_style: PromptStyle = "passages",
    render: PromptRenderer | None = None,
) -> int:
    """Write the store's preference pairs to ``out`` as JSONL (atomically); return the count.

    The file is read by ``alignment.read_preference_jsonl(out)`` (fields ``prompt``, ``chosen``,
    ``rejected``; the provenance fields can be kept with ``metadata_fields``). ``render``: see
    :meth:`FeedbackStore.preference_pairs`.
    """
    if Path(out).resolve() == Path(db).resolve():
        raise FeedbackError(
            f"the output {out} is the feedback store itself; write the pairs to another file"
        )
    with FeedbackStore(db, create=False) as store:
        pairs = store.preference_pairs(prompt_style, render)
    with atomic_path(out) as tmp, tmp.open("w", encoding="utf-8") as fh:
        for pair in pairs:
            fh.write(pair.model_dump_json() + "\n")
    return len(pairs)
