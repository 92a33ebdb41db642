"""ONNX Runtime backend: runs a cached export (fp32 or int8) without loading torch weights.

Two sessions share the file: one for batches (all cores), one for single queries with one
intra-op thread, because for a 10-token query the cost of waking a thread pool is larger than
the work it would share.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ragkit.embedding.backends.base import Vectors, longest_first, normalise_rows
from ragkit.embedding.onnx_export import ONNX_FILE, OnnxExportInfo, OnnxVariant, ensure_export

QUERY_THREADS = 1


def _session(path: Path, threads: int | None) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxBackend:
    """Sentence embeddings from an ONNX export of a sentence-transformers folder."""

    def __init__(self, location: Path, variant: OnnxVariant = "int8") -> None:
        from transformers import AutoTokenizer

        folder, info = ensure_export(location, variant)
        self.name = "onnx-int8" if variant == "int8" else "onnx"
        self.info: OnnxExportInfo = info
        self.dimension = info.dimension
        self.max_seq_length = info.max_seq_length
        # Three tokenizer instances: a fast tokenizer mutates its padding/truncation state on
        # every call and fails ("Already borrowed") when two threads share one, and ingestion
        # chunks with ``tokenizer`` while a worker thread embeds.
        self.tokenizer: Any = AutoTokenizer.from_pretrained(str(folder / "tokenizer"))
        self._batch_tokenizer: Any = AutoTokenizer.from_pretrained(str(folder / "tokenizer"))
        self._query_tokenizer: Any = AutoTokenizer.from_pretrained(str(folder / "tokenizer"))
        self._query_lock = threading.Lock()
        threads = int(os.environ.get("RAGKIT_EMBED_THREADS", "0")) or None
        self._batch_session = _session(folder / ONNX_FILE, threads)
        self._query_session = _session(folder / ONNX_FILE, QUERY_THREADS)

    def _features(self, tokenizer: Any, texts: Sequence[str]) -> dict[str, np.ndarray]:
        # the same preprocessing as sentence-transformers' Transformer.tokenize
        cleaned = [str(t).strip() for t in texts]
        if self.info.do_lower_case:
            cleaned = [t.lower() for t in cleaned]
        encoded = tokenizer(
            cleaned,
            padding=True,
            truncation="longest_first",
            max_length=self.max_seq_length,
            return_tensors="np",
        )
        return {n: np.asarray(encoded[n], dtype=np.int64) for n in self.info.input_names}

    def encode(self, texts: Sequence[str], batch_size: int) -> Vectors:
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        order = longest_first(texts)
        for start in range(0, len(order), batch_size):
            ids = order[start : start + batch_size]
            features = self._features(self._batch_tokenizer, [texts[i] for i in ids])
            out[ids] = self._batch_session.run(None, features)[0]
        return normalise_rows(out)

    def encode_one(self, text: str) -> Vectors:
        with self._query_lock:  # server threads share this backend
            features = self._features(self._query_tokenizer, [text])
        return normalise_rows(self._query_session.run(None, features)[0])
