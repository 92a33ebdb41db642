"""The contract every embedding backend meets, and the names users pick them by."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, Protocol, get_args

import numpy as np
import numpy.typing as npt

Vectors = npt.NDArray[np.float32]

BackendName = Literal["torch", "torch-bf16", "onnx", "onnx-int8"]
BACKEND_NAMES: tuple[str, ...] = get_args(BackendName)
AUTO = "auto"


class EmbeddingBackend(Protocol):
    """Computes one sentence-transformers model's embeddings; all backends agree up to rounding.

    ``encode`` handles many texts (batched, longest first); ``encode_one`` is the query path:
    no sorting, no progress machinery, one forward pass.
    """

    name: str
    dimension: int
    max_seq_length: int

    @property
    def tokenizer(self) -> Any:
        """The transformers tokenizer the chunker counts with (may load on first access)."""
        ...

    def encode(self, texts: Sequence[str], batch_size: int) -> Vectors: ...

    def encode_one(self, text: str) -> Vectors: ...


def normalise_rows(vectors: npt.NDArray[Any]) -> Vectors:
    """Unit-length float32 rows (zero rows stay zero), contiguous for FAISS."""
    out = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    np.maximum(norms, 1e-12, out=norms)
    return np.ascontiguousarray(out / norms, dtype=np.float32)


def longest_first(texts: Sequence[str]) -> list[int]:
    """Indices of ``texts`` by decreasing length: batches of similar length waste less padding."""
    return sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)
