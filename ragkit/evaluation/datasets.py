"""Evaluation datasets: SQuAD (v1.1/v2.0), BEIR folders and a simple JSONL, as one record type."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ragkit.errors import RagkitError
from ragkit.schema import Document

DatasetFormat = Literal["squad", "beir", "jsonl"]


class EvalQuestion(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    question: str
    answers: list[str] = Field(default_factory=list)
    gold_ids: list[str] = Field(
        default_factory=list, description="Relevant document ids (or chunk ids)."
    )
    is_impossible: bool = False
    context: str | None = Field(
        None, description="The gold paragraph (SQuAD), for matching chunks of another index."
    )
    answer_starts: list[int] = Field(default_factory=list)


class EvalDataset(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    format: DatasetFormat
    questions: list[EvalQuestion]
    corpus: list[Document] = Field(
        default_factory=list, description="Documents to index when no index is given."
    )


def detect_format(path: Path) -> DatasetFormat:
    if path.is_dir():
        return "beir"
    if path.suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    return "squad"


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RagkitError(f"dataset not found: {path}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RagkitError(f"{path} is not valid JSON: {exc}") from None


def read_squad(path: Path) -> EvalDataset:
    """Each paragraph becomes one document (id ``<title>#<n>``), the gold of its questions."""
    data = _read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise RagkitError(f"{path} is not in SQuAD format (expected a 'data' list)")
    corpus: list[Document] = []
    questions: list[EvalQuestion] = []
    for article in data["data"]:
        title = str(article.get("title", f"article{len(corpus)}"))
        for n, paragraph in enumerate(article.get("paragraphs", [])):
            doc_id = f"{title}#{n}"
            context = paragraph["context"]
            corpus.append(
                Document(
                    id=doc_id,
                    text=context,
                    source=f"{path.name}:{doc_id}",
                    metadata={"title": title},
                )
            )
            for qa in paragraph.get("qas", []):
                answers = [a["text"] for a in qa.get("answers", [])]
                questions.append(
                    EvalQuestion(
                        id=str(qa.get("id", len(questions))),
                        question=qa["question"],
                        answers=answers,
                        gold_ids=[doc_id],
                        is_impossible=bool(qa.get("is_impossible", False)) or not answers,
                        context=context,
                        answer_starts=[
                            int(a.get("answer_start", -1)) for a in qa.get("answers", [])
                        ],
                    )
                )
    return EvalDataset(name=path.stem, format="squad", questions=questions, corpus=corpus)


def _jsonl(path: Path) -> Iterator[dict[str, object]]:
    if not path.is_file():
        raise RagkitError(f"missing file: {path}")
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise RagkitError(f"{path}:{number}: invalid JSON ({exc.msg})") from None
            if not isinstance(record, dict):
                raise RagkitError(f"{path}:{number}: expected an object")
            yield record


def read_beir(folder: Path, split: str = "test") -> EvalDataset:
    """``corpus.jsonl`` + ``queries.jsonl`` + ``qrels/<split>.tsv`` (query-id, corpus-id, score)."""
    corpus = [
        Document(
            id=str(r["_id"]),
            text=f"{r.get('title', '')}\n{r.get('text', '')}".strip(),
            source=f"{folder.name}:{r['_id']}",
        )
        for r in _jsonl(folder / "corpus.jsonl")
    ]
    queries = {str(r["_id"]): str(r["text"]) for r in _jsonl(folder / "queries.jsonl")}
    qrels_path = folder / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        raise RagkitError(f"missing file: {qrels_path}")
    relevant: dict[str, list[str]] = {}
    with qrels_path.open(encoding="utf-8") as fh:
        for row in csv.reader(fh, delimiter="\t"):
            if len(row) < 3 or row[0] == "query-id":
                continue
            if float(row[2]) > 0:
                relevant.setdefault(row[0], []).append(row[1])
    questions = [
        EvalQuestion(id=qid, question=queries[qid], gold_ids=gold)
        for qid, gold in relevant.items()
        if qid in queries
    ]
    return EvalDataset(name=folder.name, format="beir", questions=questions, corpus=corpus)


def read_jsonl_questions(path: Path) -> EvalDataset:
    """``{"question", "answers", "gold_ids"?}`` per line; needs an existing index."""
    questions = []
    for i, record in enumerate(_jsonl(path)):
        if not isinstance(record.get("question"), str):
            raise RagkitError(f"{path}: record {i + 1} has no 'question' string")
        answers = record.get("answers", [])
        gold = record.get("gold_ids", [])
        questions.append(
            EvalQuestion(
                id=str(record.get("id", i)),
                question=str(record["question"]),
                answers=[str(a) for a in answers] if isinstance(answers, list) else [str(answers)],
                gold_ids=[str(g) for g in gold] if isinstance(gold, list) else [str(gold)],
                is_impossible=bool(record.get("is_impossible", False)),
            )
        )
    return EvalDataset(name=path.stem, format="jsonl", questions=questions)


def load_dataset(path: str | Path, format: DatasetFormat | None = None) -> EvalDataset:
    path = Path(path)
    if not path.exists():
        raise RagkitError(f"dataset not found: {path}")
    fmt = format or detect_format(path)
    if fmt == "squad":
        return read_squad(path)
    if fmt == "beir":
        return read_beir(path)
    if fmt == "jsonl":
        return read_jsonl_questions(path)
    raise RagkitError(f"unknown dataset format {fmt!r} (use squad, beir or jsonl)")
