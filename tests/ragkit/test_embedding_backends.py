"""Embedding backends: ONNX export and caching, backend choice, the query cache, index records."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ragkit.embedding import Embedder
from ragkit.embedding.backends.base import Vectors, normalise_rows
from ragkit.embedding.onnx_export import METADATA_FILE, export_folder, probe_texts
from ragkit.embedding.selection import MIN_SPEEDUP, measure_backends
from ragkit.errors import IndexFormatError
from ragkit.index import Index
from ragkit.schema import Document

TEXTS = [
    "strasbourg is the capital of alsace",
    "the river flows through the city",
    "a bridge and a cathedral",
    "history of art and music in europe",
    "parliament",
]


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("RAGKIT_CACHE_DIR", str(root))
    return root


def test_onnx_fp32_reproduces_torch(tiny_model_path: Path, cache: Path) -> None:
    torch_vectors = Embedder(str(tiny_model_path), backend="torch").encode(TEXTS)
    onnx = Embedder(str(tiny_model_path), backend="onnx").warm_up()
    assert onnx.backend_name == "onnx"
    got = onnx.encode(TEXTS)
    assert got.shape == torch_vectors.shape and got.dtype == np.float32
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert float(np.sum(got * torch_vectors, axis=1).min()) > 0.9999
    # the query path agrees with the batch path, whatever the batch's padding
    assert np.allclose(onnx.encode_query(TEXTS[4])[0], got[4], atol=1e-5)


def test_onnx_int8_runs_and_stays_close(tiny_model_path: Path, cache: Path) -> None:
    reference = Embedder(str(tiny_model_path), backend="torch").encode(TEXTS)
    int8 = Embedder(str(tiny_model_path), backend="onnx-int8")
    got = int8.encode(TEXTS)
    assert int8.backend_name == "onnx-int8"
    assert got.shape == reference.shape
    assert float(np.sum(got * reference, axis=1).mean()) > 0.9


def test_export_is_cached_complete_and_keyed_by_variant(tiny_model_path: Path, cache: Path) -> None:
    Embedder(str(tiny_model_path), backend="onnx").warm_up()
    folder = export_folder(tiny_model_path, "fp32")
    meta = json.loads((folder / METADATA_FILE).read_text())
    assert meta["variant"] == "fp32" and meta["dimension"] == 32
    assert meta["input_names"][:2] == ["input_ids", "attention_mask"]
    assert export_folder(tiny_model_path, "int8") != folder
    stamp = (folder / "model.onnx").stat().st_mtime_ns
    Embedder(str(tiny_model_path), backend="onnx").warm_up()  # second use: no re-export
    assert (folder / "model.onnx").stat().st_mtime_ns == stamp
    leftovers = [p.name for p in folder.parent.iterdir() if p.name.startswith(".")]
    assert not [n for n in leftovers if not n.endswith(".lock")]


def test_changed_model_gets_a_new_export(
    tiny_model_path: Path, tmp_path: Path, cache: Path
) -> None:
    import shutil

    copy = tmp_path / "model-copy"
    shutil.copytree(tiny_model_path, copy)
    before = export_folder(copy, "fp32")
    config = copy / "config_sentence_transformers.json"
    config.write_text(config.read_text() + " ")
    assert export_folder(copy, "fp32") != before


def test_unknown_backend_is_a_clear_error(tiny_model_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown embedding backend 'tflite'.*onnx-int8"):
        Embedder(str(tiny_model_path), backend="tflite")


def test_auto_measures_once_then_reuses_the_choice(tiny_model_path: Path, cache: Path) -> None:
    first = Embedder(str(tiny_model_path), backend="auto").warm_up()
    assert first.choice is not None
    names = [m.name for m in first.choice.measurements]
    assert names[0] == "torch" and "onnx-int8" in names
    assert first.backend_name == first.choice.chosen
    stored = list((cache / "embedders").glob("backend-choice-*.json"))
    assert len(stored) == 1
    second = Embedder(str(tiny_model_path), backend="auto").warm_up()
    assert second.choice == first.choice and second.backend_name == first.backend_name


def test_env_variable_sets_the_default(
    tiny_model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAGKIT_EMBED_BACKEND", "onnx")
    assert Embedder(str(tiny_model_path)).backend == "onnx"
    monkeypatch.setenv("RAGKIT_EMBED_BACKEND", "nope")
    with pytest.raises(ValueError, match="unknown embedding backend"):
        Embedder(str(tiny_model_path))


class FakeClock:
    """``time.perf_counter`` for the selection module: advances only when a fake backend
    "works", so the timing comparison is deterministic on a loaded machine (no sleeps)."""

    now = 0.0

    @classmethod
    def perf_counter(cls) -> float:
        return cls.now


class FakeBackend:
    """Returns the reference vectors plus noise, taking a fixed (fake-clock) time per call."""

    def __init__(self, name: str, noise: float, seconds: float, fail: bool = False) -> None:
        self.name = name
        self.dimension = 8
        self.max_seq_length = 16
        self.tokenizer = None
        self.noise, self.seconds, self.fail = noise, seconds, fail

    def encode(self, texts: Sequence[str], batch_size: int) -> Vectors:
        if self.fail:
            raise RuntimeError("no kernel for this CPU")
        FakeClock.now += self.seconds
        rng = np.random.default_rng(len(texts))
        base = np.eye(8, dtype=np.float32)[[i % 8 for i in range(len(texts))]]
        return normalise_rows(base + self.noise * rng.standard_normal(base.shape))

    def encode_one(self, text: str) -> Vectors:
        return self.encode([text], 1)


def _choose(candidates: dict[str, FakeBackend]) -> str:
    from unittest import mock

    from ragkit.embedding import selection

    reference = FakeBackend("torch", 0.0, 0.02)
    with mock.patch.object(selection, "time", FakeClock):
        choice, _ = _measure(reference, candidates)
    return choice.chosen


def _measure(reference: FakeBackend, candidates: dict[str, FakeBackend]) -> Any:
    return measure_backends(
        reference,  # type: ignore[arg-type]
        lambda name: candidates[name],  # type: ignore[arg-type,return-value]
        ["torch", *candidates],
        ["t"] * 8,
        4,
        "cpu",
    )


def test_choice_takes_the_fastest_backend_that_passes_the_guard() -> None:
    assert _choose({"fast": FakeBackend("fast", 0.0, 0.005)}) == "fast"
    # faster but its vectors drift below the 0.99 mean cosine guard
    assert _choose({"sloppy": FakeBackend("sloppy", 0.5, 0.001)}) == "torch"
    # passes but is not MIN_SPEEDUP faster: not worth leaving the reference
    assert MIN_SPEEDUP > 1.0
    assert _choose({"same": FakeBackend("same", 0.0, 0.02)}) == "torch"


def test_a_backend_that_fails_is_recorded_not_chosen() -> None:
    reference = FakeBackend("torch", 0.0, 0.01)
    choice, built = measure_backends(
        reference,  # type: ignore[arg-type]
        lambda name: FakeBackend(name, 0.0, 0.0, fail=True),  # type: ignore[arg-type,return-value]
        ["torch", "broken"],
        ["t"] * 4,
        4,
        "cpu",
    )
    assert choice.chosen == "torch" and "broken" not in built
    broken = next(m for m in choice.measurements if m.name == "broken")
    assert broken.error is not None and "no kernel" in broken.error and not broken.passed


def test_query_cache_hits_and_evicts(tiny_model_path: Path) -> None:
    embedder = Embedder(str(tiny_model_path), backend="torch", query_cache_size=2).warm_up()
    calls: list[str] = []
    engine = embedder.engine
    original = engine.encode_one

    def counting(text: str) -> Vectors:
        calls.append(text)
        return original(text)

    engine.encode_one = counting  # type: ignore[method-assign]
    a = embedder.encode_query("a bridge")
    a[0, 0] = 42.0  # callers get copies: mutating one must not poison the cache
    again = embedder.encode_query("a bridge")
    assert calls == ["a bridge"] and again[0, 0] != 42.0
    embedder.encode_query("the river")
    embedder.encode_query("parliament")  # evicts "a bridge" (least recently used)
    embedder.encode_query("a bridge")
    assert calls == ["a bridge", "the river", "parliament", "a bridge"]


def test_index_records_backend_and_queries_use_it(
    tiny_model_path: Path, tmp_path: Path, cache: Path
) -> None:
    directory = tmp_path / "idx"
    with Index.create(directory, Embedder(str(tiny_model_path), backend="onnx")) as index:
        assert index.manifest.embed_backend == "onnx"
    manifest = json.loads((directory / "manifest.json").read_text())
    assert manifest["embed_backend"] == "onnx"
    with Index.open(directory) as index:  # no backend given: the index's own
        assert index.embedder.backend_name == "onnx"
    for unset in (None, "auto"):  # an embedder without an explicit backend adopts the index's
        with Index.open(directory, Embedder(str(tiny_model_path), backend=unset)) as index:
            assert index.embedder.backend == "onnx"
    with pytest.raises(IndexFormatError, match=r"embedded with backend 'onnx'.*'torch'"):
        Index.open(directory, Embedder(str(tiny_model_path), backend="torch"))


def test_version_1_manifest_means_torch(tiny_model_path: Path, tmp_path: Path) -> None:
    directory = tmp_path / "old"
    with Index.create(directory, Embedder(str(tiny_model_path), backend="torch")):
        pass
    path = directory / "manifest.json"
    manifest = json.loads(path.read_text())
    del manifest["embed_backend"]
    manifest["format_version"] = 1
    path.write_text(json.dumps(manifest))
    with Index.open(directory) as index:
        assert index.manifest.embed_backend == "torch"


def test_probe_texts_look_like_chunks() -> None:
    texts = probe_texts()
    assert len(texts) >= 12
    assert sum(len(t) >= 900 for t in texts) >= 8


def test_concurrent_queries_share_a_pass() -> None:
    import threading
    import time

    from ragkit.embedding.coalesce import QueryCoalescer

    sizes: list[int] = []
    started = threading.Event()

    def encode_many(texts: list[str]) -> Vectors:
        sizes.append(len(texts))
        started.set()
        time.sleep(0.2)  # a slow pass: callers arriving meanwhile must queue for the next one
        return np.array([[float(len(t)), 1.0] for t in texts], dtype=np.float32)

    coalescer = QueryCoalescer(encode_many)
    results: dict[str, Vectors] = {}

    def call(text: str) -> None:
        results[text] = coalescer.encode(text)

    first = threading.Thread(target=call, args=("x",))
    first.start()
    assert started.wait(5)
    others = [threading.Thread(target=call, args=("y" * n,)) for n in range(2, 8)]
    for thread in others:
        thread.start()
    for thread in [first, *others]:
        thread.join(10)
    assert sizes[0] == 1 and sum(sizes) == 7 and max(sizes) >= 3
    for text, vector in results.items():  # every caller got its own row
        assert vector.shape == (1, 2) and vector[0, 0] == len(text)


def test_a_failing_pass_fails_only_its_callers() -> None:
    from ragkit.embedding.coalesce import QueryCoalescer

    calls = iter([RuntimeError("boom"), None])

    def encode_many(texts: list[str]) -> Vectors:
        error = next(calls)
        if error is not None:
            raise error
        return np.ones((len(texts), 2), dtype=np.float32)

    coalescer = QueryCoalescer(encode_many)
    with pytest.raises(RuntimeError, match="boom"):
        coalescer.encode("a")
    assert coalescer.encode("b").shape == (1, 2)  # the coalescer is usable again


def test_an_onnx_query_path_imports_neither_torch_nor_transformers(
    tiny_model_path: Path, tmp_path: Path, cache: Path
) -> None:
    """Issue 21's cold start: with an ONNX index and the llama.cpp backend, answering a question
    loads no torch, transformers, sentence-transformers or scikit-learn (seconds of imports)."""
    directory = tmp_path / "idx"
    with Index.create(directory, Embedder(str(tiny_model_path), backend="onnx")) as index:
        index.add_documents(
            [
                Document(id="p", text="The parliament sits in Strasbourg since 1992.", source="p"),
                Document(id="r", text="A bridge crosses the river.", source="r"),
            ]
        )
        index.commit()
    probe = (
        "import sys, types\n"
        "sys.modules['llama_cpp'] = types.ModuleType('llama_cpp')  # installed, never used\n"
        "sys.path.insert(0, 'tests/generation')\n"
        "from test_llamacpp_backend import BigramModel\n"
        "from ragkit.generation.backends import LlamaCppGenerator\n"
        "from ragkit.rag import RAGPipeline\n"
        "gen = LlamaCppGenerator('m.gguf', loader=lambda *a: BigramModel(4096))\n"
        "gen.gguf_path = lambda: 'm.gguf'\n"
        f"rag = RAGPipeline.from_index({str(directory)!r}, generator=gen, retriever='dense',\n"
        "    template='grounded_qa_completion', decoding='grounded')\n"
        "answer = rag.ask('Where does the parliament sit?')\n"
        "heavy = ('torch', 'transformers', 'sentence_transformers', 'sklearn')\n"
        "print(sorted(m for m in heavy if m in sys.modules), answer.trace is not None)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
        env={**os.environ, "RAGKIT_CACHE_DIR": str(cache)},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[] True", done.stdout + done.stderr[-2000:]
