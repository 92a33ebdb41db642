"""The loader contract and the registry that picks a loader for a file.

A loader turns one file into one or more documents. New formats plug in by registering a
loader for a file suffix (``.rst.txt`` style compound suffixes work) or a MIME type.
"""

from __future__ import annotations

import mimetypes
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol, runtime_checkable

from ragkit.errors import LoaderError
from ragkit.schema import Document

BINARY_SNIFF_BYTES = 8192


@runtime_checkable
class Loader(Protocol):
    """Reads one file into documents; raises :class:`LoaderError` for unreadable input."""

    suffixes: tuple[str, ...]
    mime_types: tuple[str, ...]

    def load(self, path: Path, source: str, document_id: str) -> list[Document]:
        """Load ``path``; ``source`` is the path as the user gave it, ``document_id`` its stable id."""
        ...


def read_text(path: Path) -> str:
    """Read a text file, refusing binaries and non-UTF-8 content with a clear reason."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise LoaderError(f"cannot read {path}: {exc.strerror or exc}") from None
    if b"\x00" in data[:BINARY_SNIFF_BYTES]:
        raise LoaderError(f"{path} looks like a binary file (NUL bytes), not text")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise LoaderError(f"{path} is not UTF-8 text (byte {exc.start} is invalid)") from None


class LoaderRegistry:
    """Maps suffixes and MIME types to loaders; the longest matching suffix wins."""

    def __init__(self, loaders: Iterable[Loader] = ()) -> None:
        self._by_suffix: dict[str, Loader] = {}
        self._by_mime: dict[str, Loader] = {}
        for loader in loaders:
            self.register(loader)

    def register(self, loader: Loader) -> None:
        for suffix in loader.suffixes:
            self._by_suffix[suffix.lower()] = loader
        for mime in loader.mime_types:
            self._by_mime[mime.lower()] = loader

    @property
    def suffixes(self) -> list[str]:
        return sorted(self._by_suffix)

    def for_path(self, path: Path) -> Loader | None:
        """The loader for ``path`` by its (compound) suffix, falling back to its guessed MIME type."""
        name = path.name.lower()
        best: tuple[int, Loader] | None = None
        for suffix, loader in self._by_suffix.items():
            if (
                name.endswith(suffix)
                and len(name) > len(suffix)
                and (best is None or len(suffix) > best[0])
            ):
                best = (len(suffix), loader)
        if best is not None:
            return best[1]
        mime, _ = mimetypes.guess_type(path.name)
        if mime is not None:
            return self._by_mime.get(mime.lower())
        return None
