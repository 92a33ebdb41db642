"""Hostile document text, end to end: files → ``index_paths`` → search → CLI printers and ``/v1/search``.

Shared by ``tests/ragkit/test_hostile_text_fuzz.py`` (a short hypothesis run in CI) and
``benchmarks/hostile_text_fuzz.py`` (the long run, ≥ 10,000 generated documents).

A corpus is a few files with hostile names (rich markup, control and bidi characters) holding
hostile text: markup, emoji codes, C0/C1 controls, bidi overrides and isolates, NUL, U+2028,
combining marks, CRLF, a BOM, enormous lines, invalid UTF-8 bytes; JSONL files mix good records
with broken lines. :meth:`HostileRig.check` indexes it and asserts:

* nothing raises; each file is indexed, or listed as skipped for the reason it should be (not
  UTF-8, binary, no text, no usable JSONL line), and each bad JSONL line is named in a warning;
* every stored document is the exact decoded text, every chunk is ``document[start:end]`` (and
  ``open(source, newline="").read()[start:end]`` for text files), and the chunks cover every
  non-whitespace character;
* search returns the stored chunk texts; the CLI's table, sources list, skipped/warning lines and
  JSON print every text (shown with :func:`ragkit.terminal.visible` on a terminal, exact in
  JSON) with no raw control or bidi character; ``/v1/search`` returns exactly the stored texts.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from hypothesis import strategies as st

PRINTED_HITS = 50
# What must never reach a terminal raw (tab and newline aside).
RAW = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
FRAGMENTS = [
    "[/bold]",
    "[bold]",
    "[red]x[/red]",
    "[/]",
    "[",
    "]",
    "\\[",
    "[link=http://x]",
    ":smile:",
    ":thumbs_up:",
    "[stʁaz.buʁ, stʁas.buʁ]",
    "\x1b[2J",
    "\x1b]0;title\x07",
    "\x1b[31m",
    "\x9b31m",
    "\x00",
    "\x7f",
    "\r",
    "\r\n",
    "\n\n",
    "\t",
    "\u202e",
    "\u202d",
    "\u2066",
    "\u2067",
    "\u2068",
    "\u2069",
    "\u202c",
    "\u200f",
    "\u061c",
    "\u2028",
    "\u2029",
    "\x85",
    "\ufeff",
    "e\u0301",
    "\u200b",
    "😀",
    "中文",
    "עברית",
    "عربى",
    "%s %d {0} {}",
    "<script>alert(1)</script>",
    "&amp;",
    " ",
    "word",
    "Strasbourg",
]
BAD_BYTES = [b"\xff", b"\xc3\x28", b"\xe2\x82", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\x80"]
BROKEN_LINES = [
    b"{broken",
    b"[1, 2]",
    b'"a string"',
    b"42",
    b"{}",
    b'{"text": 5}',
    b'{"other": "x"}',
    b'{"text": "\xff"}',
    b"\xc3\x28",
    b"{" * 2000,
]

_chars = st.characters(blacklist_categories=("Cs",))
_name_chars = st.characters(blacklist_categories=("Cs",), blacklist_characters="/\x00")


def hostile_texts(max_size: int = 40) -> st.SearchStrategy[str]:
    piece = st.one_of(st.sampled_from(FRAGMENTS), st.text(_chars, max_size=8))
    return st.lists(piece, max_size=max_size).map("".join)


@st.composite
def _long_line(draw: st.DrawFn, max_line: int) -> str:
    unit = draw(hostile_texts(6).filter(lambda s: "\n" not in s and s != ""))
    length = draw(st.integers(1000, max_line))
    return (unit * (length // len(unit) + 1))[:length]


@dataclass
class FileSpec:
    name: str
    kind: str  # "txt", "md" or "jsonl"
    data: bytes
    text: str | None = None  # txt/md: the decoded text the loader should keep
    records: list[tuple[int, str]] = field(default_factory=list)  # jsonl: (line, text)
    bad_lines: list[int] = field(default_factory=list)


@st.composite
def text_files(draw: st.DrawFn, max_line: int) -> tuple[str, bytes]:
    text = draw(hostile_texts())
    if draw(st.booleans()):
        text += draw(_long_line(max_line)) + draw(hostile_texts(8))
    if draw(st.integers(0, 3)):  # a NUL early on makes a binary file: keep most files text
        text = text.replace("\x00", "")
    data = text.encode("utf-8")
    if draw(st.booleans()):
        data = b"\xef\xbb\xbf" + data
    if draw(st.integers(0, 4)) == 0:
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.sampled_from(BAD_BYTES)) + data[at:]
    return text, data


@st.composite
def jsonl_files(draw: st.DrawFn, max_line: int) -> tuple[bytes, list[tuple[int, str]], list[int]]:
    lines: list[bytes] = []
    for _ in range(draw(st.integers(1, 8))):
        choice = draw(st.integers(0, 5))
        if choice == 0:
            lines.append(draw(st.sampled_from(BROKEN_LINES)))
        elif choice == 1:
            lines.append(draw(st.binary(max_size=12).filter(lambda b: b"\n" not in b)))
        elif choice == 2:
            lines.append(draw(st.sampled_from([b"", b"   ", b"\r"])))
        else:
            text = draw(hostile_texts())
            if choice == 5:
                text += draw(_long_line(max_line))
            record = {"text": text, "meta": draw(hostile_texts(4))}
            ascii_only = draw(st.booleans())
            lines.append(json.dumps(record, ensure_ascii=ascii_only).encode("utf-8"))
    data = b"\n".join(lines) + draw(st.sampled_from([b"", b"\n", b"\r\n"]))
    records, bad = [], []
    for number, raw in enumerate(data.split(b"\n"), start=1):
        verdict = _jsonl_oracle(raw)
        if verdict is False:
            bad.append(number)
        elif verdict is not None:
            records.append((number, verdict))
    return data, records, bad


def _jsonl_oracle(raw: bytes) -> str | bool | None:
    """The record's text, None for a blank line, False for a line that must be skipped."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    if not line.strip():
        return None
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):
        return False
    if not isinstance(record, dict) or not isinstance(record.get("text"), str):
        return False
    return record["text"]


@st.composite
def corpora(draw: st.DrawFn, max_files: int = 4, max_line: int = 20_000) -> list[FileSpec]:
    specs = []
    for i in range(draw(st.integers(1, max_files))):
        name = draw(st.text(_name_chars, max_size=12) | st.sampled_from(FRAGMENTS[:12]))
        name = name.replace("/", "").replace("\x00", "")
        kind = draw(st.sampled_from(["txt", "txt", "md", "jsonl"]))
        filename = f"{i:03d}-{name}.{kind}"
        if len(filename.encode("utf-8")) > 200:
            filename = f"{i:03d}.{kind}"
        if kind == "jsonl":
            data, records, bad = draw(jsonl_files(max_line))
            specs.append(FileSpec(filename, kind, data, records=records, bad_lines=bad))
        else:
            text, data = draw(text_files(max_line))
            specs.append(FileSpec(filename, kind, data, text=text))
    return specs


@dataclass
class Stats:
    corpora: int = 0
    files: int = 0
    documents: int = 0  # generated documents: text files and JSONL records/lines
    indexed_documents: int = 0
    chunks: int = 0
    skipped_files: int = 0
    bad_lines: int = 0


class HostileRig:
    """Runs corpora through the index, the search, the CLI printers and the HTTP API."""

    def __init__(self, embedder: Any, generator: Any, scratch: Path) -> None:
        self.embedder = embedder
        self.generator = generator
        self.scratch = scratch
        self.stats = Stats()

    def check(self, specs: list[FileSpec], query: str) -> None:
        from ragkit.chunking import ChunkingSettings
        from ragkit.cli.index import LoaderWarnings
        from ragkit.index import Index, index_paths

        root = Path(tempfile.mkdtemp(dir=self.scratch))
        try:
            corpus = root / "corpus"
            corpus.mkdir()
            for spec in specs:
                (corpus / spec.name).write_bytes(spec.data)
            settings = ChunkingSettings(unit="chars", chunk_size=200, chunk_overlap=20)
            with (
                Index.create(root / "idx", self.embedder, settings) as index,
                LoaderWarnings() as warnings,
            ):
                report = index_paths(index, [str(corpus)])
                self._check_files(index, corpus, specs, report, warnings)
                self._check_search(index, query, report, warnings)
        finally:
            shutil.rmtree(root, ignore_errors=True)

    def _check_files(
        self, index: Any, corpus: Path, specs: list[FileSpec], report: Any, warnings: list[str]
    ) -> None:
        skipped = {Path(s.source).name: s.reason for s in report.skipped}
        self.stats.corpora += 1
        for spec in specs:
            self.stats.files += 1
            path = corpus / spec.name
            key = path.resolve().as_posix()
            reason = skipped.get(spec.name)
            expected = self._expected_skip(spec)
            if expected is not None:
                assert reason is not None and expected in reason, (spec.name, reason, expected)
                self.stats.skipped_files += 1
                self.stats.documents += max(1, len(spec.records) + len(spec.bad_lines))
                self.stats.bad_lines += len(spec.bad_lines)
                continue
            assert reason is None, (spec.name, reason)
            if spec.kind == "jsonl":
                self.stats.documents += len(spec.records) + len(spec.bad_lines)
                self.stats.bad_lines += len(spec.bad_lines)
                texts = {f"{key}#L{n}": t for n, t in spec.records}
                if spec.bad_lines:
                    (line,) = [w for w in warnings if f"/{spec.name}: skipped" in w]
                    assert f"skipped {len(spec.bad_lines)} bad line(s)" in line
                    for n in spec.bad_lines[:10]:
                        assert f"line {n}:" in line, (n, line)
            else:
                self.stats.documents += 1
                assert spec.text is not None
                texts = {key: spec.data.decode("utf-8-sig")}
            for doc_id, text in texts.items():
                document = index.document(doc_id)
                assert document is not None and document.text == text, doc_id
                self.stats.indexed_documents += 1
                chunks = index.store.chunks_of_document(doc_id)
                covered = bytearray(len(text))
                for chunk in chunks:
                    assert chunk.text == text[chunk.start : chunk.end]
                    covered[chunk.start : chunk.end] = b"\x01" * (chunk.end - chunk.start)
                    self.stats.chunks += 1
                lost = [i for i, c in enumerate(text) if not c.isspace() and not covered[i]]
                assert not lost, f"{doc_id}: characters {lost[:5]} in no chunk"
                if spec.kind != "jsonl":
                    with path.open(encoding="utf-8-sig", newline="") as f:
                        source_text = f.read()
                    for chunk in chunks:
                        assert source_text[chunk.start : chunk.end] == chunk.text

    @staticmethod
    def _expected_skip(spec: FileSpec) -> str | None:
        """The reason a file must be skipped for (a fragment of it), or None."""
        if b"\x00" in spec.data[:8192]:
            return "binary"
        if spec.kind == "jsonl":
            if spec.bad_lines and not spec.records:
                return "no usable line"
            if not any(t.strip() for _, t in spec.records):
                return "no extractable text"
            return None
        try:
            text = spec.data.decode("utf-8-sig")
        except UnicodeDecodeError:
            return "not UTF-8"
        return None if text.strip() else "no extractable text"

    def _check_search(self, index: Any, query: str, report: Any, warnings: list[str]) -> None:
        from ragkit.cli.common import say
        from ragkit.retrieval import make_retriever
        from ragkit.terminal import visible

        # the printers the index command uses for its report
        lines = [f"skipped {s.source}: {s.reason}" for s in report.skipped]
        lines += [f"warning: {w}" for w in warnings]
        printed = _capture(lambda: [say(x, one_line=True) for x in lines])
        assert not RAW.search(printed)
        for line in lines:
            assert visible(line, one_line=True) in printed

        total = index.counts().chunks
        if not total:
            return
        hits = make_retriever(index, "hybrid", k=total).search(query, k=total)
        assert {h.chunk.id for h in hits} == {
            c.id for d in _document_ids(index) for c in index.store.chunks_of_document(d)
        }
        for hit in hits:
            stored = index.chunk(hit.chunk.id)
            assert stored is not None and hit.chunk.text == stored.text
        self._check_printers(hits[:PRINTED_HITS])
        self._check_server(index, query, hits, total)

    @staticmethod
    def _check_printers(hits: list[Any]) -> None:
        """The CLI's search table, sources list and JSON (a -k 50 search's worth of hits)."""
        from ragkit.cli.answer import print_sources
        from ragkit.cli.common import print_json, snippet
        from ragkit.cli.index import hits_table
        from ragkit.terminal import visible

        table = _capture(lambda: _wide_console().print(hits_table(hits)))
        assert not RAW.search(table)
        at = 0
        for hit in hits:  # one row per hit, in order
            at = table.find(visible(hit.chunk.source, one_line=True), at)
            assert at >= 0, hit.chunk.source
            at = table.find(visible(snippet(hit.chunk.text, 300)), at)
            assert at >= 0, hit.chunk.text

        citations = [
            SimpleNamespace(
                n=i + 1,
                source=h.chunk.source,
                start=h.chunk.start,
                end=h.chunk.end,
                inferred=False,
                text=h.chunk.text,
                quote=None,
            )
            for i, h in enumerate(hits)
        ]
        answer = SimpleNamespace(citations=citations, trace=None, abstained=False)
        sources = _capture(lambda: print_sources(answer))
        assert not RAW.search(sources)
        lines = sources.rstrip("\n").split("\n")
        assert lines[:2] == ["", "Sources:"]
        for c, line in zip(citations, lines[2:], strict=True):
            prefix = f"  [{c.n}] {visible(c.source, one_line=True)} [{c.start}:{c.end}]: "
            assert line == prefix + visible(snippet(c.text, 160))

        dumped = _capture(lambda: print_json([h.to_json_dict() for h in hits]))
        assert not RAW.search(dumped)
        assert json.loads(dumped) == json.loads(json.dumps([h.to_json_dict() for h in hits]))

    def _check_server(self, index: Any, query: str, hits: list[Any], total: int) -> None:
        from fastapi.testclient import TestClient

        from ragkit.rag import RAGPipeline
        from ragkit.retrieval import make_retriever
        from ragkit.server import ServerSettings, create_app

        rag = RAGPipeline(make_retriever(index, "hybrid", k=total), self.generator)
        settings = ServerSettings(max_k=max(total, 1), rate_limit_per_minute=None)
        with TestClient(create_app(rag, settings)) as client:
            response = client.post("/v1/search", json={"query": query, "k": total})
        assert response.status_code == 200, response.text
        served = {h["chunk_id"]: h for h in response.json()["hits"]}
        assert set(served) == {h.chunk.id for h in hits}
        for hit in hits:
            got = served[hit.chunk.id]
            assert got["text"] == hit.chunk.text
            assert (got["source"], got["start"], got["end"]) == (
                hit.chunk.source,
                hit.chunk.start,
                hit.chunk.end,
            )


def _document_ids(index: Any) -> list[str]:
    rows = index.store.conn.execute("SELECT id FROM documents").fetchall()
    return [r[0] for r in rows]


def _wide_console() -> Any:
    from rich.console import Console

    return Console(width=1_000_000, markup=False, emoji=False, highlight=False)


def _capture(action: Any) -> str:
    """Everything the CLI consoles (and a wide console) print to stdout/stderr during action."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
        action()
    return buffer.getvalue()
