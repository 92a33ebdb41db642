"""Errors raised by the alignment jobs for bad input, configuration or saved artefacts.

They subclass :class:`ragkit.errors.RagkitError`, so the CLI prints their one-line message
instead of a traceback; a bug in our own code still raises an ordinary exception.
"""

from __future__ import annotations

from ragkit.errors import RagkitError


class AlignmentError(RagkitError):
    """Base class of the alignment package's user-facing errors."""


class DataFormatError(AlignmentError):
    """A data file or dataset cannot be read as preference pairs or demonstrations at all."""


class ConfigError(AlignmentError):
    """A job configuration is invalid (unknown key, wrong type, impossible value)."""


class CheckpointError(AlignmentError):
    """A checkpoint or saved model is missing, incomplete or of an unknown format version."""
