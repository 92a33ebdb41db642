"""The default set of loaders, keyed by suffix."""

from __future__ import annotations

from ragkit.loaders.base import LoaderRegistry
from ragkit.loaders.html import HtmlLoader
from ragkit.loaders.jsonl import JsonlLoader
from ragkit.loaders.pdf import PdfLoader
from ragkit.loaders.text import markdown_loader, plain_text_loader, rst_loader


def default_registry(jsonl: JsonlLoader | None = None) -> LoaderRegistry:
    """A fresh registry with every built-in loader; pass ``jsonl`` to configure JSONL fields."""
    return LoaderRegistry(
        [
            plain_text_loader(),
            markdown_loader(),
            rst_loader(),
            HtmlLoader(),
            PdfLoader(),
            jsonl or JsonlLoader(),
        ]
    )
