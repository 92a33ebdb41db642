"""Loaders: files to :class:`~ragkit.schema.Document` objects, one small object per format."""

from ragkit.loaders.base import Loader, LoaderRegistry, read_text
from ragkit.loaders.html import HtmlLoader, html_to_text
from ragkit.loaders.jsonl import JsonlLoader
from ragkit.loaders.pdf import PdfLoader
from ragkit.loaders.registry import default_registry
from ragkit.loaders.text import TextLoader, markdown_loader, plain_text_loader, rst_loader
from ragkit.loaders.walker import (
    LoadedFile,
    SkippedFile,
    SourceFile,
    discover_files,
    load_documents,
    load_file,
)

__all__ = [
    "HtmlLoader",
    "JsonlLoader",
    "LoadedFile",
    "Loader",
    "LoaderRegistry",
    "PdfLoader",
    "SkippedFile",
    "SourceFile",
    "TextLoader",
    "default_registry",
    "discover_files",
    "html_to_text",
    "load_documents",
    "load_file",
    "markdown_loader",
    "plain_text_loader",
    "read_text",
    "rst_loader",
]
