"""Untimed set-up for the floor: write the chunks ragkit would embed, one JSON object per line.

The floor must embed *the same chunks* as ragkit so that the ratio measures ragkit's overhead,
not a difference in how much text was embedded. This mirrors what ``ragkit index`` does with
``--chunk-unit chars``: the same file walk and include glob, the same loaders, empty documents
dropped, and ragkit's ``RecursiveSplitter`` with the embedder's tokenizer (which caps chunks at
the model's maximum sequence length). The orchestrator checks afterwards that ragkit's own
index holds the same number of chunks and says so when it does not.

Runs in ragkit's environment (``.venv``); when ragkit is not importable it falls back to a
plain paragraph → line → word splitter so that the floor and the peers can still be measured.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import common  # noqa: F401  (sets the offline environment before any model library loads)


def ragkit_chunks(corpus: Path, model: str, size: int, overlap: int) -> list[dict[str, object]]:
    from ragkit.chunking import ChunkingSettings, RecursiveSplitter
    from ragkit.embedding import Embedder
    from ragkit.loaders import discover_files, load_file

    embedder = Embedder(model)
    settings = ChunkingSettings.for_unit("chars", size, overlap)
    splitter = RecursiveSplitter(
        settings, tokenizer=embedder.tokenizer, max_tokens=embedder.max_tokens
    )
    files, _ = discover_files([corpus], include=["*.txt"])
    rows: list[dict[str, object]] = []
    for file in files:
        documents = [d for d in load_file(file).documents if d.text.strip()]
        for chunk in splitter.split_many(documents):
            rows.append(
                {"source": chunk.source, "start": chunk.start, "end": chunk.end, "text": chunk.text}
            )
    return rows


_SEPARATORS = (re.compile(r"\n\s*\n"), re.compile(r"\n"), re.compile(r"\s+"))


def _split(text: str, size: int, level: int = 0) -> list[str]:
    """Pieces no longer than ``size``, cut at the coarsest separator that works."""
    if len(text) <= size:
        return [text]
    if level >= len(_SEPARATORS):
        return [text[i : i + size] for i in range(0, len(text), size)]
    pieces: list[str] = []
    for part in _SEPARATORS[level].split(text):
        pieces.extend(_split(part, size, level + 1) if len(part) > size else [part])
    return pieces


def fallback_chunks(corpus: Path, size: int, overlap: int) -> list[dict[str, object]]:
    """Greedy merge of pieces into ``size``-character chunks with about ``overlap`` carried over."""
    rows: list[dict[str, object]] = []
    for path in sorted(corpus.rglob("*.txt")):
        text = path.read_text(encoding="utf-8", errors="replace")
        current = ""
        for piece in _split(text, size):
            piece = piece.strip()
            if not piece:
                continue
            if current and len(current) + 1 + len(piece) > size:
                rows.append({"source": str(path), "text": current})
                tail = current[-overlap:] if overlap else ""
                current = (tail + " " + piece) if len(tail) + 1 + len(piece) <= size else piece
            else:
                current = f"{current} {piece}" if current else piece
        if current.strip():
            rows.append({"source": str(path), "text": current})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--corpus", type=Path, required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--chunk-size", type=int, default=1000)
    parser.add_argument("--chunk-overlap", type=int, default=100)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    try:
        rows = ragkit_chunks(args.corpus, args.model, args.chunk_size, args.chunk_overlap)
        chunker = "ragkit.chunking.RecursiveSplitter (chars, capped at the model's max tokens)"
    except ImportError as exc:
        rows = fallback_chunks(args.corpus, args.chunk_size, args.chunk_overlap)
        chunker = f"fallback character splitter (ragkit not importable: {exc})"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
    meta = {
        "chunks": len(rows),
        "chunker": chunker,
        "chars": sum(len(str(r["text"])) for r in rows),
    }
    args.out.with_suffix(".meta.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
    print(json.dumps(meta))


if __name__ == "__main__":
    main()
