"""User-facing errors.

Anything a user can get wrong (a path, a model name, an index directory, a query) raises a
subclass of :class:`RagkitError` with a one-line message naming the problem; the CLI prints
that line and exits non-zero instead of showing a traceback.
"""

from __future__ import annotations


class RagkitError(Exception):
    """Base class of errors caused by input, configuration or environment, not by a bug."""


class LoaderError(RagkitError):
    """A file could not be read as a document (binary, corrupt, unsupported)."""


class IndexFormatError(RagkitError):
    """An index directory is missing, corrupt, or was built with another format or embedder."""


class ModelNotFoundError(RagkitError):
    """A model name or path cannot be resolved to something loadable offline."""


class InvalidQueryError(RagkitError):
    """A query or question is empty or otherwise unusable."""


class OutputPathError(RagkitError):
    """A path to write cannot take a file: it is a folder, or it is empty."""
