"""PDF loader: one document per page, so a citation can name the page."""

from __future__ import annotations

import logging
from pathlib import Path

from ragkit.errors import LoaderError
from ragkit.schema import Document


class PdfLoader:
    suffixes: tuple[str, ...] = (".pdf",)
    mime_types: tuple[str, ...] = ("application/pdf",)

    def load(self, path: Path, source: str, document_id: str) -> list[Document]:
        from pypdf import PdfReader
        from pypdf.errors import PyPdfError

        logging.getLogger("pypdf").setLevel(logging.ERROR)
        try:
            reader = PdfReader(path, strict=False)
            if reader.is_encrypted:
                raise LoaderError(f"{path} is an encrypted PDF")
            pages = [page.extract_text() or "" for page in reader.pages]
        except LoaderError:
            raise
        except (PyPdfError, OSError, ValueError, KeyError, TypeError) as exc:
            raise LoaderError(
                f"{path} is not a readable PDF ({type(exc).__name__}: {exc})"
            ) from None
        if not pages:
            raise LoaderError(f"{path} is a PDF with no pages")
        total = len(pages)
        return [
            Document(
                id=f"{document_id}#page={number}",
                text=text,
                source=source,
                metadata={"format": "pdf", "page": number, "pages": total},
            )
            for number, text in enumerate(pages, start=1)
        ]
