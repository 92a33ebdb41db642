"""JSON Lines loader: one document per line, with configurable text, id and metadata fields.

A line that cannot be used (not UTF-8, not JSON, not an object, no text or id field) is skipped
and the others are indexed; the skipped line numbers are logged as one warning per file on the
``ragkit.loaders`` logger (``ragkit index`` lists them in its report). A file none of whose lines
can be used is refused with the reasons.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from ragkit.errors import LoaderError
from ragkit.loaders.base import BINARY_SNIFF_BYTES
from ragkit.schema import Document

log = logging.getLogger(__name__)

MAX_LINES_NAMED = 10
"""Bad lines named one by one in a warning; the rest are counted."""


class JsonlLoader:
    """``text_field`` holds the text; ``metadata_fields`` (default: all other fields) become metadata."""

    suffixes: tuple[str, ...] = (".jsonl", ".ndjson")
    mime_types: tuple[str, ...] = ("application/jsonl", "application/x-ndjson")

    def __init__(
        self,
        text_field: str = "text",
        id_field: str | None = None,
        metadata_fields: list[str] | None = None,
    ) -> None:
        self.text_field = text_field
        self.id_field = id_field
        self.metadata_fields = metadata_fields

    def load(self, path: Path, source: str, document_id: str) -> list[Document]:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise LoaderError(f"cannot read {path}: {exc.strerror or exc}") from None
        if b"\x00" in data[:BINARY_SNIFF_BYTES]:
            raise LoaderError(f"{path} looks like a binary file (NUL bytes), not text")
        data = data.removeprefix(b"\xef\xbb\xbf")
        documents: list[Document] = []
        bad: list[tuple[int, str]] = []
        # Lines end at "\n" only: JSON text may hold U+2028, U+0085... raw inside strings, which
        # str.splitlines() would cut.
        for number, raw in enumerate(data.split(b"\n"), start=1):
            try:
                document = self._record(raw, number, source, document_id)
            except ValueError as exc:
                bad.append((number, str(exc)))
                continue
            if document is not None:
                documents.append(document)
        if bad and not documents:
            raise LoaderError(f"{path}: no usable line: {_describe(bad)}")
        if bad:
            log.warning(
                "%s: skipped %d bad line(s) of %d: %s",
                source,
                len(bad),
                len(bad) + len(documents),
                _describe(bad),
            )
        return documents

    def _record(self, raw: bytes, number: int, source: str, document_id: str) -> Document | None:
        """The document on one line, None for a blank line; ValueError says why it is unusable."""
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"not UTF-8 (byte {exc.start} is invalid)") from None
        if not line.strip():
            return None
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"invalid JSON ({exc.msg})") from None
        except RecursionError:
            raise ValueError("invalid JSON (nested too deeply)") from None
        if not isinstance(record, dict):
            raise ValueError(f"expected a JSON object, got {type(record).__name__}")
        text = record.get(self.text_field)
        if not isinstance(text, str):
            raise ValueError(f"field {self.text_field!r} is missing or not a string")
        if self.id_field is not None:
            if self.id_field not in record:
                raise ValueError(f"id field {self.id_field!r} is missing")
            doc_id = f"{document_id}#{record[self.id_field]}"
        else:
            doc_id = f"{document_id}#L{number}"
        names = (
            self.metadata_fields
            if self.metadata_fields is not None
            else [k for k in record if k != self.text_field]
        )
        metadata = {name: record[name] for name in names if name in record}
        metadata.update({"format": "jsonl", "line": number})
        return Document(id=doc_id, text=text, source=source, metadata=metadata)


def _describe(bad: list[tuple[int, str]]) -> str:
    """``line 3: invalid JSON (...); line 7: ...``, the first few, then a count of the rest."""
    named = "; ".join(f"line {n}: {why}" for n, why in bad[:MAX_LINES_NAMED])
    more = len(bad) - MAX_LINES_NAMED
    return named + (f"; and {more} more" if more > 0 else "")
