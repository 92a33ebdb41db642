"""JSON Lines loader: one document per line, with configurable text, id and metadata fields."""

from __future__ import annotations

import json
from pathlib import Path

from ragkit.errors import LoaderError
from ragkit.loaders.base import read_text
from ragkit.schema import Document


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
        documents: list[Document] = []
        for number, line in enumerate(read_text(path).splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise LoaderError(f"{path}:{number}: invalid JSON ({exc.msg})") from None
            if not isinstance(record, dict):
                raise LoaderError(
                    f"{path}:{number}: expected a JSON object, got {type(record).__name__}"
                )
            text = record.get(self.text_field)
            if not isinstance(text, str):
                raise LoaderError(
                    f"{path}:{number}: field {self.text_field!r} is missing or not a string"
                )
            if self.id_field is not None:
                if self.id_field not in record:
                    raise LoaderError(f"{path}:{number}: id field {self.id_field!r} is missing")
                doc_id = f"{document_id}#{record[self.id_field]}"
            else:
                doc_id = f"{document_id}#L{number}"
            skip = {self.text_field}
            names = (
                self.metadata_fields
                if self.metadata_fields is not None
                else [k for k in record if k not in skip]
            )
            metadata = {name: record[name] for name in names if name in record}
            metadata.update({"format": "jsonl", "line": number})
            documents.append(Document(id=doc_id, text=text, source=source, metadata=metadata))
        return documents
