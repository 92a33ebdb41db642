"""Preference pairs and demonstrations: the records, their readers and a deterministic split.

Readers never raise on one bad line: they drop it and count it in a :class:`DataReport`, so a
few malformed records in a large file cost a line in the log, not the run. They raise
:class:`DataFormatError` only when the source as a whole is unusable (missing file, unknown
field mapping). Content checks that every source shares (empty response, chosen == rejected,
too long) happen once, at tokenisation (:mod:`alignment.tokenization`).
"""

from __future__ import annotations

import gzip
import json
import os
import random
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from alignment.errors import DataFormatError
from alignment.hh import HHFormatError, split_hh_pair
from alignment.report import DataReport

PairFormat = Literal["fields", "hh"]


class PreferencePair(BaseModel):
    """One human comparison: for ``prompt``, ``chosen`` was preferred over ``rejected``.

    ``chosen`` and ``rejected`` are responses only (the prompt is not repeated in them).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt: str
    chosen: str
    rejected: str
    metadata: dict[str, Any] = Field(default_factory=dict)

    def group_key(self) -> str:
        """Pairs with the same key share a prompt: they stay in one split and one batch."""
        return self.prompt


class ChatMessage(BaseModel):
    """One chat turn, as accepted by Hugging Face chat templates."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    role: Literal["system", "user", "assistant"]
    content: str


class Demonstration(BaseModel):
    """A target behaviour for SFT: a prompt and its response, or a chat ending with the answer.

    With ``messages`` the last message must come from the assistant: it is the response (the only
    part trained on), everything before it is rendered with the tokenizer's chat template as the
    prompt.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt: str | None = None
    response: str | None = None
    messages: tuple[ChatMessage, ...] | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_form(self) -> Demonstration:
        plain = self.prompt is not None or self.response is not None
        if self.messages is not None:
            if plain:
                raise ValueError("give either prompt/response or messages, not both")
            if not self.messages or self.messages[-1].role != "assistant":
                raise ValueError("the last message must be the assistant's response")
        elif self.prompt is None or self.response is None:
            raise ValueError("a demonstration needs prompt and response (or messages)")
        return self

    def group_key(self) -> str:
        """Demonstrations with the same key share a prompt and stay in one split."""
        if self.messages is not None:
            return json.dumps([m.model_dump() for m in self.messages[:-1]], sort_keys=True)
        return self.prompt or ""


R = TypeVar("R", PreferencePair, Demonstration)


@dataclass
class Loaded(Generic[R]):
    """Records that were read successfully and the report of those that were not."""

    records: list[R]
    report: DataReport


@dataclass
class Split(Generic[R]):
    """A train/validation split; records keep their original order inside each part."""

    train: list[R]
    validation: list[R]
    info: dict[str, int] = field(default_factory=dict)


# --------------------------------------------------------------------------- raw rows


def _open_text(path: Path) -> Iterator[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        yield from fh


def iter_jsonl(
    path: str | os.PathLike[str], report: DataReport, limit: int | None = None
) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """Yield ``("line N", object)`` for each JSON object line; count malformed lines in ``report``.

    ``limit`` caps the number of non-blank lines read (bad ones included), for quick runs.
    """
    path = Path(path)
    if path.is_dir():
        raise DataFormatError(f"data path {path} is a folder, not a JSONL file")
    if not path.is_file():
        raise DataFormatError(f"data file not found: {path}")
    seen = 0
    try:
        for number, line in enumerate(_open_text(path), start=1):
            if not line.strip():
                continue
            if limit is not None and seen >= limit:
                return
            seen += 1
            where = f"line {number}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                report.drop("malformed_json", where)
                continue
            if not isinstance(obj, dict):
                report.drop("malformed_json", where)
                continue
            yield where, obj
    except (OSError, UnicodeDecodeError, EOFError) as exc:
        raise DataFormatError(f"cannot read {path}: {exc}") from exc


def _text_field(row: Mapping[str, Any], name: str, report: DataReport, where: str) -> str | None:
    value = row.get(name)
    if value is None:
        report.drop("missing_field", f"{where} ({name})")
        return None
    if not isinstance(value, str):
        report.drop("wrong_type", f"{where} ({name})")
        return None
    return value


def _metadata(row: Mapping[str, Any], fields: Sequence[str], where: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"source": where}
    for name in fields:
        if name in row:
            meta[name] = row[name]
    return meta


# --------------------------------------------------------------------------- preference pairs


def pairs_from_rows(
    rows: Iterable[tuple[str, Mapping[str, Any]]],
    report: DataReport,
    *,
    format: PairFormat = "fields",
    prompt_field: str = "prompt",
    chosen_field: str = "chosen",
    rejected_field: str = "rejected",
    metadata_fields: Sequence[str] = (),
) -> list[PreferencePair]:
    """Turn raw rows into pairs; ``format="hh"`` splits the shared prompt off two dialogues."""
    pairs: list[PreferencePair] = []
    for where, row in rows:
        chosen = _text_field(row, chosen_field, report, where)
        if chosen is None:
            continue
        rejected = _text_field(row, rejected_field, report, where)
        if rejected is None:
            continue
        if format == "hh":
            try:
                prompt, chosen, rejected = split_hh_pair(chosen, rejected)
            except HHFormatError as problem:
                report.drop(problem.reason, where)
                continue
        else:
            found = _text_field(row, prompt_field, report, where)
            if found is None:
                continue
            prompt = found
        meta = _metadata(row, metadata_fields, where)
        pairs.append(PreferencePair(prompt=prompt, chosen=chosen, rejected=rejected, metadata=meta))
        report.keep()
    return pairs


def read_preference_jsonl(
    path: str | os.PathLike[str],
    *,
    format: PairFormat = "fields",
    prompt_field: str = "prompt",
    chosen_field: str = "chosen",
    rejected_field: str = "rejected",
    metadata_fields: Sequence[str] = (),
    limit: int | None = None,
) -> Loaded[PreferencePair]:
    """Read preference pairs from a JSONL file (``.gz`` accepted), one object a line.

    ``format="fields"`` reads prompt/chosen/rejected from the named fields; ``format="hh"`` reads
    two whole HH dialogues from ``chosen_field``/``rejected_field`` and splits off the prompt.
    """
    report = DataReport(source=str(path))
    rows = iter_jsonl(path, report, limit)
    pairs = pairs_from_rows(
        rows,
        report,
        format=format,
        prompt_field=prompt_field,
        chosen_field=chosen_field,
        rejected_field=rejected_field,
        metadata_fields=metadata_fields,
    )
    return Loaded(pairs, report)


def read_hh_jsonl(
    path: str | os.PathLike[str], *, limit: int | None = None
) -> Loaded[PreferencePair]:
    """Read an Anthropic HH file (``{"chosen": dialogue, "rejected": dialogue}`` lines)."""
    return read_preference_jsonl(path, format="hh", limit=limit)


def _dataset_rows(
    dataset: Iterable[Mapping[str, Any]], limit: int | None
) -> Iterator[tuple[str, Mapping[str, Any]]]:
    for index, row in enumerate(dataset):
        if limit is not None and index >= limit:
            return
        yield f"row {index}", row


def pairs_from_dataset(
    dataset: Iterable[Mapping[str, Any]],
    *,
    format: PairFormat = "fields",
    prompt_field: str = "prompt",
    chosen_field: str = "chosen",
    rejected_field: str = "rejected",
    metadata_fields: Sequence[str] = (),
    limit: int | None = None,
) -> Loaded[PreferencePair]:
    """Read pairs from a Hugging Face ``datasets.Dataset`` (or any iterable of dict rows).

    Only string columns are accepted; TRL's conversational columns (lists of messages) are
    reported as ``wrong_type``.
    """
    columns = getattr(dataset, "column_names", None)
    if isinstance(columns, list):
        needed = [chosen_field, rejected_field] + ([prompt_field] if format == "fields" else [])
        missing = [name for name in needed if name not in columns]
        if missing:
            raise DataFormatError(
                f"dataset has no column {missing[0]!r} (columns: {', '.join(map(str, columns))})"
            )
    report = DataReport(source=type(dataset).__name__)
    pairs = pairs_from_rows(
        _dataset_rows(dataset, limit),
        report,
        format=format,
        prompt_field=prompt_field,
        chosen_field=chosen_field,
        rejected_field=rejected_field,
        metadata_fields=metadata_fields,
    )
    return Loaded(pairs, report)


# --------------------------------------------------------------------------- demonstrations


def demonstrations_from_rows(
    rows: Iterable[tuple[str, Mapping[str, Any]]],
    report: DataReport,
    *,
    prompt_field: str = "prompt",
    response_field: str = "response",
    messages_field: str = "messages",
    metadata_fields: Sequence[str] = (),
) -> list[Demonstration]:
    """Rows with ``messages_field`` become chat demonstrations, others prompt/response ones."""
    demos: list[Demonstration] = []
    for where, row in rows:
        meta = _metadata(row, metadata_fields, where)
        if messages_field in row:
            raw = row[messages_field]
            try:
                messages = tuple(ChatMessage.model_validate(m) for m in raw)
                demo = Demonstration(messages=messages, metadata=meta)
            except (ValueError, TypeError):
                report.drop("bad_messages", where)
                continue
        else:
            prompt = _text_field(row, prompt_field, report, where)
            if prompt is None:
                continue
            response = _text_field(row, response_field, report, where)
            if response is None:
                continue
            demo = Demonstration(prompt=prompt, response=response, metadata=meta)
        demos.append(demo)
        report.keep()
    return demos


def read_demonstrations_jsonl(
    path: str | os.PathLike[str],
    *,
    prompt_field: str = "prompt",
    response_field: str = "response",
    messages_field: str = "messages",
    metadata_fields: Sequence[str] = (),
    limit: int | None = None,
) -> Loaded[Demonstration]:
    """Read demonstrations from JSONL: ``{prompt, response}`` or ``{messages: [...]}`` lines."""
    report = DataReport(source=str(path))
    demos = demonstrations_from_rows(
        iter_jsonl(path, report, limit),
        report,
        prompt_field=prompt_field,
        response_field=response_field,
        messages_field=messages_field,
        metadata_fields=metadata_fields,
    )
    return Loaded(demos, report)


def demonstrations_from_dataset(
    dataset: Iterable[Mapping[str, Any]],
    *,
    prompt_field: str = "prompt",
    response_field: str = "response",
    messages_field: str = "messages",
    metadata_fields: Sequence[str] = (),
    limit: int | None = None,
) -> Loaded[Demonstration]:
    """Read demonstrations from a ``datasets.Dataset`` (or any iterable of dict rows)."""
    report = DataReport(source=type(dataset).__name__)
    demos = demonstrations_from_rows(
        _dataset_rows(dataset, limit),
        report,
        prompt_field=prompt_field,
        response_field=response_field,
        messages_field=messages_field,
        metadata_fields=metadata_fields,
    )
    return Loaded(demos, report)


def demonstrations_from_pairs(pairs: Iterable[PreferencePair]) -> list[Demonstration]:
    """The chosen side of each pair as a demonstration (SFT on preferred answers)."""
    return [
        Demonstration(prompt=p.prompt, response=p.chosen, metadata=dict(p.metadata)) for p in pairs
    ]


# --------------------------------------------------------------------------- split


def train_validation_split(
    records: Sequence[R], *, validation_fraction: float = 0.1, seed: int = 0
) -> Split[R]:
    """Split deterministically by prompt group: the same records and seed give the same split.

    Whole prompt groups move together, so no prompt appears in both parts (validation would
    otherwise reward memorising a prompt). The number of validation groups is
    ``round(fraction × groups)``, at least one and at most all but one when there are two or more.
    """
    if not 0.0 <= validation_fraction < 1.0:
        raise ValueError(f"validation_fraction must be in [0, 1), got {validation_fraction}")
    order: dict[str, int] = {}
    for record in records:
        order.setdefault(record.group_key(), len(order))
    n_groups = len(order)
    n_val = round(validation_fraction * n_groups)
    if validation_fraction > 0 and n_groups >= 2:
        n_val = min(max(n_val, 1), n_groups - 1)
    group_ids = list(range(n_groups))
    random.Random(seed).shuffle(group_ids)
    val_groups = set(group_ids[:n_val])
    train = [r for r in records if order[r.group_key()] not in val_groups]
    validation = [r for r in records if order[r.group_key()] in val_groups]
    info = {"groups": n_groups, "validation_groups": n_val}
    return Split(train, validation, info)
