from __future__ import annotations

import json
from pathlib import Path

import pytest

from ragkit.errors import LoaderError, RagkitError
from ragkit.loaders import (
    JsonlLoader,
    LoaderRegistry,
    default_registry,
    discover_files,
    html_to_text,
    load_documents,
    load_file,
)
from ragkit.loaders.text import TextLoader


def _write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def test_registry_picks_loader_by_compound_suffix() -> None:
    registry = default_registry()
    rst = registry.for_path(Path("library/os.rst.txt"))
    txt = registry.for_path(Path("notes.txt"))
    assert rst is not None and getattr(rst, "format", None) == "rst"
    assert txt is not None and getattr(txt, "format", None) == "text"
    assert registry.for_path(Path("image.png")) is None


def test_new_format_plugs_in_by_suffix(tmp_path: Path) -> None:
    registry = LoaderRegistry([TextLoader("org", (".org",))])
    _write(tmp_path / "a.org", "* heading\nbody")
    docs = list(load_documents([tmp_path], registry=registry))
    assert [d.metadata["format"] for d in docs] == ["org"]


def test_text_markdown_rst_keep_verbatim_text(tmp_path: Path) -> None:
    content = "# Title\n\nSome *markdown* text.\n"
    for name, fmt in [("a.txt", "text"), ("b.md", "markdown"), ("c.rst", "rst")]:
        path = _write(tmp_path / name, content)
        (doc,) = load_file(discover_files([path])[0][0]).documents
        assert doc.text == content
        assert doc.metadata["format"] == fmt
        assert doc.source == str(path)
        assert doc.id == path.resolve().as_posix()


def test_html_drops_scripts_and_styles() -> None:
    html = """<html><head><title>T</title><style>body{color:red}</style></head>
    <body><h1>Hello</h1><script>alert('x')</script><p>World <b>bold</b></p><noscript>no</noscript></body></html>"""
    text, title = html_to_text(html)
    assert title == "T"
    assert "Hello" in text and "World" in text and "bold" in text
    assert "alert" not in text and "color" not in text and "no" not in text.split()


def test_binary_and_non_utf8_files_are_refused(tmp_path: Path) -> None:
    binary = _write(tmp_path / "blob.txt", b"abc\x00\x01\x02")
    latin = _write(tmp_path / "latin.txt", "café".encode("latin-1"))
    files, _ = discover_files([tmp_path])
    by_name = {Path(f.path).name: f for f in files}
    with pytest.raises(LoaderError, match="binary"):
        load_file(by_name[binary.name])
    with pytest.raises(LoaderError, match="not UTF-8"):
        load_file(by_name[latin.name])


def test_corrupt_pdf_is_a_loader_error(tmp_path: Path) -> None:
    path = _write(tmp_path / "broken.pdf", b"%PDF-1.4\nthis is not really a pdf")
    with pytest.raises(LoaderError, match=r"broken\.pdf"):
        load_file(discover_files([path])[0][0])


def test_pdf_one_document_per_page(shared_data: Path) -> None:
    files, _ = discover_files([shared_data / "files" / "sample_pdf_1.pdf"])
    docs = load_file(files[0]).documents
    assert len(docs) == 4
    assert [d.metadata["page"] for d in docs] == [1, 2, 3, 4]
    assert all(d.id.endswith(f"#page={d.metadata['page']}") for d in docs)
    assert any(d.text.strip() for d in docs)


def test_jsonl_fields_are_configurable(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "data.jsonl",
        "\n".join(
            json.dumps(r)
            for r in [
                {"body": "first", "id": 7, "lang": "en", "x": 1},
                {"body": "second", "id": 8, "lang": "fr", "x": 2},
            ]
        ),
    )
    loader = JsonlLoader(text_field="body", id_field="id", metadata_fields=["lang"])
    docs = loader.load(path, str(path), "doc")
    assert [d.text for d in docs] == ["first", "second"]
    assert [d.id for d in docs] == ["doc#7", "doc#8"]
    assert docs[0].metadata["lang"] == "en" and "x" not in docs[0].metadata


def test_jsonl_bad_line_names_the_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = _write(tmp_path / "bad.jsonl", '{"text": "ok"}\n{not json}\n')
    # the good line is kept; the bad one is named in a warning (issue 22)
    assert [d.text for d in JsonlLoader().load(path, str(path), "d")] == ["ok"]
    assert "line 2: invalid JSON" in caplog.text
    path2 = _write(tmp_path / "missing.jsonl", '{"body": "ok"}\n')
    with pytest.raises(LoaderError, match="'text' is missing"):
        JsonlLoader().load(path2, str(path2), "d")


def test_walker_include_exclude_and_unsupported(tmp_path: Path) -> None:
    _write(tmp_path / "a.txt", "a")
    _write(tmp_path / "sub" / "b.md", "b")
    _write(tmp_path / "sub" / "skip.md", "c")
    _write(tmp_path / "image.png", b"\x89PNG")
    _write(tmp_path / ".hidden" / "h.txt", "h")
    files, skipped = discover_files([tmp_path])
    assert sorted(Path(f.path).name for f in files) == ["a.txt", "b.md", "skip.md"]
    assert [Path(s.source).name for s in skipped] == ["image.png"]
    assert "unsupported" in skipped[0].reason

    files, _ = discover_files([tmp_path], include=["*.md"], exclude=["skip*"])
    assert [Path(f.path).name for f in files] == ["b.md"]


def test_walker_leaves_ragkit_index_folders_out_as_one_skipped_entry(tmp_path: Path) -> None:
    """`ragkit index . --index idx`: the index's own files are neither documents nor noise."""
    _write(tmp_path / "a.txt", "a")
    index = tmp_path / "idx"
    _write(index / "manifest.json", '{"format": "ragkit-index", "format_version": 2}')
    _write(index / "store.sqlite", b"SQLite format 3\x00")
    _write(index / "bm25-0" / "ragkit-lexical.json", "{}")
    _write(tmp_path / "data" / "manifest.json", '{"format": "something else"}')  # not an index
    files, skipped = discover_files([tmp_path], include=["*.json", "*.txt"])
    assert [Path(f.path).name for f in files] == ["a.txt"]
    # the index is one entry; a folder whose manifest is not an index's is walked as usual
    assert [(Path(s.source).relative_to(tmp_path).as_posix(), s.reason) for s in skipped] == [
        ("idx", "a ragkit index (not documents)"),
        ("data/manifest.json", "unsupported file type '.json'"),
    ]
    with pytest.raises(RagkitError, match="is a ragkit index, not a folder of documents"):
        discover_files([index])


def test_walker_keeps_path_order_and_skips_broken_links(tmp_path: Path) -> None:
    for name in ("a-b/x.txt", "a/b.txt", "a/c/d.txt", "z.txt"):
        _write(tmp_path / name, name)
    (tmp_path / "broken.txt").symlink_to(tmp_path / "nowhere.txt")
    files, skipped = discover_files([tmp_path])
    relative = [Path(f.path).relative_to(tmp_path).as_posix() for f in files]
    assert relative == [
        p.relative_to(tmp_path).as_posix() for p in sorted(map(Path, [f.path for f in files]))
    ]
    assert set(relative) == {"a-b/x.txt", "a/b.txt", "a/c/d.txt", "z.txt"} and skipped == []


def test_walker_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(RagkitError, match="does not exist"):
        discover_files([tmp_path / "nope"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(RagkitError, match="empty"):
        discover_files([tmp_path / "empty"])
