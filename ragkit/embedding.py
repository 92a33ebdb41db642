"""Sentence-transformers embeddings with L2-normalised float32 output.

The model loads lazily (first use or ``warm_up()``) so that importing ragkit and parsing CLI
arguments stay fast. On CUDA the model runs in fp16; on CPU in fp32.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from ragkit.errors import ModelNotFoundError
from ragkit.models import canonical_embedder_name, resolve_embedder

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

Vectors = npt.NDArray[np.float32]


def auto_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class Embedder:
    """Embeds texts into unit vectors; ``name`` identifies the model in an index manifest."""

    def __init__(
        self,
        model: str | None = None,
        device: str | None = None,
        batch_size: int = 64,
        model_kwargs: dict[str, Any] | None = None,
    ) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.name = canonical_embedder_name(model)
        self._requested = model
        self._device = device
        self.batch_size = batch_size
        self._model_kwargs = model_kwargs or {}
        self._model: SentenceTransformer | None = None

    @classmethod
    def from_model(cls, model: SentenceTransformer, name: str, batch_size: int = 64) -> Embedder:
        """Wrap an already-built ``SentenceTransformer`` (tests, custom models)."""
        embedder = cls(model=name, batch_size=batch_size)
        embedder.name = name
        embedder._model = model
        return embedder

    # -- loading ----------------------------------------------------------------------------
    def warm_up(self) -> Embedder:
        if self._model is None:
            self._model = self._load()
        return self

    def _load(self) -> SentenceTransformer:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        # ragkit reports its own progress; the per-load weight bar is noise in a CLI or server.
        hf_logging.disable_progress_bar()

        location = resolve_embedder(self._requested)
        device = self._device or auto_device()
        try:
            model = SentenceTransformer(location, device=device, **self._model_kwargs)
        except (OSError, ValueError) as exc:
            first_line = (
                str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            )
            raise ModelNotFoundError(f"cannot load embedder {self.name!r}: {first_line}") from None
        if device.startswith("cuda"):
            model.half()
        model.eval()
        return model

    @property
    def model(self) -> SentenceTransformer:
        return self.warm_up()._model  # type: ignore[return-value]

    @property
    def dimension(self) -> int:
        dim = self.model.get_embedding_dimension()
        if dim is None:  # pragma: no cover - every ST model with pooling reports it
            raise ModelNotFoundError(f"embedder {self.name!r} does not report its dimension")
        return int(dim)

    @property
    def tokenizer(self) -> Any:
        return self.model.tokenizer

    @property
    def max_tokens(self) -> int:
        """Tokens of text a chunk may hold: the max sequence length minus special tokens."""
        max_len = int(self.model.max_seq_length or 512)
        special = (
            self.tokenizer.num_special_tokens_to_add(pair=False)
            if self.tokenizer is not None
            else 2
        )
        return max_len - special

    # -- encoding ---------------------------------------------------------------------------
    def encode(self, texts: Sequence[str], batch_size: int | None = None) -> Vectors:
        """Unit-length float32 vectors, one row per text."""
        if len(texts) == 0:
            return np.zeros((0, self.dimension), dtype=np.float32)
        vectors = self.model.encode(
            list(texts),
            batch_size=batch_size or self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def encode_query(self, text: str) -> Vectors:
        """One query as a (1, dim) array: the latency-critical path of search."""
        return self.encode([text], batch_size=1)
