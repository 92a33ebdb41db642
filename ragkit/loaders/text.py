"""Loaders for plain-text formats: the text is kept verbatim so offsets match the file."""

from __future__ import annotations

from pathlib import Path

from ragkit.loaders.base import read_text
from ragkit.schema import Document


class TextLoader:
    """Plain text, Markdown and reStructuredText; ``format`` in metadata drives heading-aware chunking."""

    def __init__(
        self, text_format: str, suffixes: tuple[str, ...], mime_types: tuple[str, ...] = ()
    ) -> None:
        self.format = text_format
        self.suffixes = suffixes
        self.mime_types = mime_types

    def load(self, path: Path, source: str, document_id: str) -> list[Document]:
        text = read_text(path)
        return [
            Document(id=document_id, text=text, source=source, metadata={"format": self.format})
        ]


def plain_text_loader() -> TextLoader:
    return TextLoader("text", (".txt", ".text"), ("text/plain",))


def markdown_loader() -> TextLoader:
    return TextLoader("markdown", (".md", ".markdown"), ("text/markdown",))


def rst_loader() -> TextLoader:
    # Sphinx publishes its sources as ``.rst.txt``: treat them as reST, not plain text.
    return TextLoader("rst", (".rst", ".rest", ".rst.txt"), ("text/x-rst",))
