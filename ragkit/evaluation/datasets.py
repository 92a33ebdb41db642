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


def _not_squad(path: Path, where: str, what: str) -> RagkitError:
    return RagkitError(f"{path} is not in SQuAD format: {where} {what}")


def _answers(path: Path, where: str, qa: dict[str, object]) -> tuple[list[str], list[int]]:
    raw = qa.get("answers", [])
    if not isinstance(raw, list) or not all(
        isinstance(a, dict) and isinstance(a.get("text"), str) for a in raw
    ):
        raise _not_squad(path, where, "has 'answers' that are not a list of {'text': ...}")
    starts = [a.get("answer_start", -1) for a in raw]
    if not all(isinstance(n, int) and not isinstance(n, bool) for n in starts):
        raise _not_squad(path, where, "has an 'answer_start' that is not an integer")
    return [str(a["text"]) for a in raw], [int(n) for n in starts]


def read_squad(path: Path) -> EvalDataset:
    """Each paragraph becomes one document (id ``<title>#<n>``), the gold of its questions.

    Every level is checked before use, so a malformed file is one line naming where it breaks
    (``data[0].paragraphs[3].qas[1]``), not a KeyError from deep inside."""
    data = _read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise RagkitError(f"{path} is not in SQuAD format (expected a 'data' list)")
    corpus: list[Document] = []
    questions: list[EvalQuestion] = []
    for i, article in enumerate(data["data"]):
        if not isinstance(article, dict):
            raise _not_squad(path, f"data[{i}]", "is not an object")
        title = str(article.get("title", f"article{len(corpus)}"))
        paragraphs = article.get("paragraphs", [])
        if not isinstance(paragraphs, list):
            raise _not_squad(path, f"data[{i}].paragraphs", "is not a list")
        for n, paragraph in enumerate(paragraphs):
            where = f"data[{i}].paragraphs[{n}]"
            if not isinstance(paragraph, dict):
                raise _not_squad(path, where, "is not an object")
            context = paragraph.get("context")
            if not isinstance(context, str):
                raise _not_squad(path, where, "has no 'context' string")
            qas = paragraph.get("qas", [])
            if not isinstance(qas, list):
                raise _not_squad(path, f"{where}.qas", "is not a list")
            doc_id = f"{title}#{n}"
            corpus.append(
                Document(
                    id=doc_id,
                    text=context,
                    source=f"{path.name}:{doc_id}",
                    metadata={"title": title},
                )
            )
            for j, qa in enumerate(qas):
                qa_where = f"{where}.qas[{j}]"
                if not isinstance(qa, dict):
                    raise _not_squad(path, qa_where, "is not an object")
                if not isinstance(qa.get("question"), str):
                    raise _not_squad(path, qa_where, "has no 'question' string")
                answers, starts = _answers(path, qa_where, qa)
                questions.append(
                    EvalQuestion(
                        id=str(qa.get("id", len(questions))),
                        question=str(qa["question"]),
                        answers=answers,
                        gold_ids=[doc_id],
                        is_impossible=bool(qa.get("is_impossible", False)) or not answers,
                        context=context,
                        answer_starts=starts,
                    )
                )
    return EvalDataset(name=path.stem, format="squad", questions=questions, corpus=corpus)


def _text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise RagkitError(f"{path} is not UTF-8 text") from None


def _jsonl(path: Path) -> Iterator[tuple[int, dict[str, object]]]:
    """(line number, record) of each non-empty line."""
    if not path.is_file():
        raise RagkitError(f"missing file: {path}")
    for number, line in enumerate(_text(path).splitlines(), start=1):
        if line.strip():
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise RagkitError(f"{path}:{number}: invalid JSON ({exc.msg})") from None
            if not isinstance(record, dict):
                raise RagkitError(f"{path}:{number}: expected an object")
            yield number, record


def _field(path: Path, number: int, record: dict[str, object], name: str) -> str:
    value = record.get(name)
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise RagkitError(f"{path}:{number}: no {name!r} (a string) in the record")
    return str(value)


def read_beir(folder: Path, split: str = "test") -> EvalDataset:
    """``corpus.jsonl`` + ``queries.jsonl`` + ``qrels/<split>.tsv`` (query-id, corpus-id, score)."""
    corpus_path = folder / "corpus.jsonl"
    corpus = []
    for number, r in _jsonl(corpus_path):
        doc_id = _field(corpus_path, number, r, "_id")
        corpus.append(
            Document(
                id=doc_id,
                text=f"{r.get('title', '')}\n{r.get('text', '')}".strip(),
                source=f"{folder.name}:{doc_id}",
            )
        )
    queries_path = folder / "queries.jsonl"
    queries = {
        _field(queries_path, n, r, "_id"): _field(queries_path, n, r, "text")
        for n, r in _jsonl(queries_path)
    }
    qrels_path = folder / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        raise RagkitError(f"missing file: {qrels_path}")
    relevant: dict[str, list[str]] = {}
    for number, row in enumerate(
        csv.reader(_text(qrels_path).splitlines(), delimiter="\t"), start=1
    ):
        if len(row) < 3 or row[0] == "query-id":
            continue
        try:
            score = float(row[2])
        except ValueError:
            raise RagkitError(
                f"{qrels_path}:{number}: the score {row[2]!r} is not a number"
            ) from None
        if score > 0:
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
    for i, (_number, record) in enumerate(_jsonl(path)):
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
