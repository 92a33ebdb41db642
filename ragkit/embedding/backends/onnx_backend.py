"""ONNX Runtime backend: runs a cached export (fp32 or int8) without loading torch weights.

Two sessions share the file: one for batches (all cores), one for single queries with one
intra-op thread, because for a 10-token query the cost of waking a thread pool is larger than
the work it would share.

Texts are encoded with the Rust ``tokenizers`` library straight from the export's
``tokenizer.json`` (its truncation and padding set as sentence-transformers sets them), not with
transformers' ``AutoTokenizer``: importing transformers pulls in torch, about two seconds of a
cold ``ragkit ask`` that otherwise needs neither. The transformers tokenizer is still what
:attr:`OnnxBackend.tokenizer` gives the chunker (offsets, special-token counts), loaded only when
indexing asks for it.
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


def _encoder(folder: Path, max_length: int) -> Any:
    """A ``tokenizers.Tokenizer`` that pads to the batch's longest and truncates as ST does."""
    import json

    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    config_file = folder / "tokenizer_config.json"
    config = json.loads(config_file.read_text(encoding="utf-8")) if config_file.is_file() else {}
    pad_token = config.get("pad_token") or "[PAD]"
    if isinstance(pad_token, dict):  # older configs store AddedToken dicts
        pad_token = pad_token.get("content", "[PAD]")
    pad_id = tokenizer.token_to_id(pad_token)
    tokenizer.enable_truncation(max_length=max_length, strategy="longest_first")
    tokenizer.enable_padding(
        pad_id=pad_id if pad_id is not None else 0,
        pad_token=pad_token,
        pad_type_id=int(config.get("pad_token_type_id", 0) or 0),
    )
    return tokenizer


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
        folder, info = ensure_export(location, variant)
        self.name = "onnx-int8" if variant == "int8" else "onnx"
        self.info: OnnxExportInfo = info
        self.dimension = info.dimension
        self.max_seq_length = info.max_seq_length
        self._tokenizer_folder = folder / "tokenizer"
        self._chunk_tokenizer: Any = None
        self._chunk_lock = threading.Lock()
        # One encoder per session: the batch one runs in ingestion's worker thread while a
        # server thread encodes queries.
        self._batch_tokenizer = _encoder(self._tokenizer_folder, info.max_seq_length)
        self._query_tokenizer = _encoder(self._tokenizer_folder, info.max_seq_length)
        self._query_lock = threading.Lock()
        threads = int(os.environ.get("RAGKIT_EMBED_THREADS", "0")) or None
        self._batch_session = _session(folder / ONNX_FILE, threads)
        self._query_session = _session(folder / ONNX_FILE, QUERY_THREADS)

    @property
    def tokenizer(self) -> Any:
        """The transformers tokenizer of the export, for the chunker (loaded on first use)."""
        with self._chunk_lock:
            if self._chunk_tokenizer is None:
                from transformers import AutoTokenizer

                self._chunk_tokenizer = AutoTokenizer.from_pretrained(str(self._tokenizer_folder))
            return self._chunk_tokenizer

    def _features(self, tokenizer: Any, texts: Sequence[str]) -> dict[str, np.ndarray]:
        # the same preprocessing as sentence-transformers' Transformer.tokenize
        cleaned = [str(t).strip() for t in texts]
        if self.info.do_lower_case:
            cleaned = [t.lower() for t in cleaned]
        encoded = tokenizer.encode_batch(cleaned)
        columns = {
            "input_ids": [e.ids for e in encoded],
            "attention_mask": [e.attention_mask for e in encoded],
            "token_type_ids": [e.type_ids for e in encoded],
        }
        return {n: np.asarray(columns[n], dtype=np.int64) for n in self.info.input_names}

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
