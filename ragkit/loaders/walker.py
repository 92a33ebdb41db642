"""Turns the paths a user names into files to load, honouring include/exclude globs.

Every file that is found but cannot be indexed is reported with a reason: nothing is dropped
silently. Hidden files and folders (names starting with '.') are not walked.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from ragkit.errors import LoaderError, RagkitError
from ragkit.loaders.base import LoaderRegistry
from ragkit.loaders.registry import default_registry
from ragkit.schema import Document


class SourceFile(BaseModel):
    """A file selected for indexing; ``key`` (the resolved path) identifies it across runs."""

    model_config = ConfigDict(extra="forbid")

    key: str
    source: str
    path: str


class SkippedFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: str
    reason: str


class LoadedFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    file: SourceFile
    content_hash: str
    documents: list[Document]


def _matches(relative: str, name: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatch(relative, p) or fnmatch.fnmatch(name, p) for p in patterns)


def _walk(root: Path) -> tuple[list[Path], list[Path]]:
    """Files under ``root`` in path order, and the ragkit index folders left out: ``ragkit
    index . --index idx`` must not walk into ``idx`` and report its store files (or, with
    ``--include '*.json'``, index its manifest). Hidden files and folders are not walked, nor
    symbolic links to folders."""
    from ragkit.index.manifest import is_index_directory  # ragkit.index imports this module

    files: list[Path] = []
    indexes: list[Path] = []
    for folder, dirs, names in os.walk(root):
        here = Path(folder)
        kept = []
        for name in dirs:
            if name.startswith("."):
                continue
            if is_index_directory(here / name):
                indexes.append(here / name)
            else:
                kept.append(name)
        dirs[:] = kept
        files += [
            here / name for name in names if not name.startswith(".") and (here / name).is_file()
        ]
    return sorted(files), sorted(indexes)


def discover_files(
    paths: Sequence[str | Path],
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    registry: LoaderRegistry | None = None,
) -> tuple[list[SourceFile], list[SkippedFile]]:
    """Walk ``paths`` (files or folders, recursively) and split them into selected and skipped files."""
    registry = registry or default_registry()
    if not paths:
        raise RagkitError("no paths given to index")
    selected: dict[str, SourceFile] = {}
    skipped: list[SkippedFile] = []
    for given in paths:
        root = Path(given)
        if not root.exists():
            raise RagkitError(f"path does not exist: {given}")
        if root.is_file():
            candidates = [(root, root.name)]
        else:
            from ragkit.index.manifest import is_index_directory

            if is_index_directory(root):
                raise RagkitError(f"{given} is a ragkit index, not a folder of documents")
            found, indexes = _walk(root)
            skipped += [
                SkippedFile(source=str(folder), reason="a ragkit index (not documents)")
                for folder in indexes
            ]
            candidates = [(path, path.relative_to(root).as_posix()) for path in found]
            if not candidates and not indexes:
                raise RagkitError(f"folder is empty: {given}")
        explicit_file = root.is_file()
        for path, relative in candidates:
            source = str(path)
            if not explicit_file:
                if include and not _matches(relative, path.name, include):
                    continue
                if exclude and _matches(relative, path.name, exclude):
                    continue
            if registry.for_path(path) is None:
                skipped.append(
                    SkippedFile(
                        source=source,
                        reason=f"unsupported file type '{''.join(path.suffixes) or path.name}'",
                    )
                )
                continue
            key = path.resolve().as_posix()
            selected.setdefault(key, SourceFile(key=key, source=source, path=str(path)))
    return list(selected.values()), skipped


def content_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_file(
    file: SourceFile, registry: LoaderRegistry | None = None, digest: str | None = None
) -> LoadedFile:
    """Load one selected file; raises :class:`LoaderError` with the reason it cannot be read.

    ``digest`` is the file's :func:`content_hash` when the caller already computed it (the
    indexer does, to skip unchanged files), so the file is not hashed twice.
    """
    registry = registry or default_registry()
    path = Path(file.path)
    loader = registry.for_path(path)
    if loader is None:
        raise LoaderError(f"unsupported file type: {file.source}")
    if digest is None:
        try:
            digest = content_hash(path)
        except OSError as exc:
            raise LoaderError(f"cannot read {file.source}: {exc.strerror or exc}") from None
    documents = loader.load(path, file.source, file.key)
    return LoadedFile(file=file, content_hash=digest, documents=documents)


def load_documents(
    paths: Sequence[str | Path],
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    registry: LoaderRegistry | None = None,
) -> Iterator[Document]:
    """Convenience: every document under ``paths``; unreadable files raise :class:`LoaderError`."""
    registry = registry or default_registry()
    files, _ = discover_files(paths, include, exclude, registry)
    for file in files:
        yield from load_file(file, registry).documents
