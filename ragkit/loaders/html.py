"""HTML to text with a real parser: scripts, styles and other non-content elements are dropped."""

from __future__ import annotations

import re
from pathlib import Path

from selectolax.lexbor import LexborHTMLParser as HTMLParser

from ragkit.loaders.base import read_text
from ragkit.schema import Document

_DROPPED_TAGS = ("script", "style", "noscript", "template", "svg", "head")
_BLANK_RUNS = re.compile(r"\n[ \t]*(?:\n[ \t]*)+")
_SPACE_RUNS = re.compile(r"[ \t\r\f\v]+")


def html_to_text(html: str) -> tuple[str, str | None]:
    """Return the visible text (one block per line) and the page title, if any."""
    tree = HTMLParser(html)
    title_node = tree.css_first("title")
    title = title_node.text(strip=True) if title_node is not None else None
    tree.strip_tags(list(_DROPPED_TAGS))
    root = tree.body or tree.root
    if root is None:
        return "", title
    raw = root.text(separator="\n", strip=False)
    lines = [_SPACE_RUNS.sub(" ", line).strip() for line in raw.splitlines()]
    text = _BLANK_RUNS.sub("\n\n", "\n".join(lines)).strip()
    return text, title or None


class HtmlLoader:
    suffixes: tuple[str, ...] = (".html", ".htm", ".xhtml")
    mime_types: tuple[str, ...] = ("text/html", "application/xhtml+xml")

    def load(self, path: Path, source: str, document_id: str) -> list[Document]:
        text, title = html_to_text(read_text(path))
        metadata: dict[str, object] = {"format": "html"}
        if title:
            metadata["title"] = title
        return [Document(id=document_id, text=text, source=source, metadata=metadata)]
