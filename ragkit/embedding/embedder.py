"""The embedder users hold: a model name, a backend that computes it, and a query cache.

The model loads lazily (first use or ``warm_up()``) so that importing ragkit and parsing CLI
arguments stay fast. ``backend="auto"`` (the default, or ``$RAGKIT_EMBED_BACKEND``) resolves to
the fastest backend that passes the quality guard on this machine; an index records the
resolved name so that its queries are embedded the way its corpus was.
"""

from __future__ import annotations

import os
import sys
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ragkit.embedding.backends.base import AUTO, BACKEND_NAMES, EmbeddingBackend, Vectors
from ragkit.embedding.backends.torch_backend import TorchBackend
from ragkit.embedding.coalesce import QueryCoalescer
from ragkit.embedding.selection import (
    BackendChoice,
    cached_choice,
    candidate_backends,
    measure_backends,
    save_choice,
)
from ragkit.errors import ModelNotFoundError
from ragkit.models import canonical_embedder_name, resolve_embedder

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

BACKEND_ENV = "RAGKIT_EMBED_BACKEND"
QUERY_CACHE_SIZE = 1024

__all__ = ["Embedder", "Vectors", "auto_device", "check_backend_name"]


GPU_DRIVER_PATHS = ("/proc/driver/nvidia", "/dev/nvidia0", "/dev/kfd")
"""Where an NVIDIA (or ROCm) driver shows itself on Linux: without one, CUDA cannot be available."""


def auto_device() -> str:
    """``cuda`` when torch sees a GPU, else ``cpu``.

    On Linux without a GPU driver the answer is ``cpu`` without importing torch (about a second
    of a cold start that may not need torch at all: ONNX embedder, llama.cpp generator).
    """
    if sys.platform.startswith("linux") and "torch" not in sys.modules:
        if not any(Path(path).exists() for path in GPU_DRIVER_PATHS):
            return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def check_backend_name(name: str) -> str:
    """Normalise a user-given backend name, or fail naming the valid ones."""
    cleaned = name.strip().lower()
    if cleaned != AUTO and cleaned not in BACKEND_NAMES:
        valid = ", ".join((AUTO, *BACKEND_NAMES))
        raise ValueError(f"unknown embedding backend {name!r} (choose one of: {valid})")
    return cleaned


def default_backend() -> str:
    return check_backend_name(os.environ.get(BACKEND_ENV, AUTO) or AUTO)


class Embedder:
    """Embeds texts into unit vectors; ``name`` identifies the model in an index manifest."""

    def __init__(
        self,
        model: str | None = None,
        device: str | None = None,
        batch_size: int = 64,
        model_kwargs: dict[str, Any] | None = None,
        backend: str | None = None,
        query_cache_size: int = QUERY_CACHE_SIZE,
    ) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if query_cache_size < 0:
            raise ValueError(f"query_cache_size must be >= 0, got {query_cache_size}")
        self.name = canonical_embedder_name(model)
        self._requested = model
        self._device = device
        self.batch_size = batch_size
        self._model_kwargs = model_kwargs or {}
        self.backend = check_backend_name(backend) if backend else default_backend()
        # an index adopts its recorded backend unless the caller insisted on one
        self.backend_explicit = bool(backend) and self.backend != AUTO
        self.choice: BackendChoice | None = None
        self._backend: EmbeddingBackend | None = None
        self._load_lock = threading.Lock()
        self._query_cache: OrderedDict[str, Vectors] = OrderedDict()
        self._query_cache_size = query_cache_size
        self._cache_lock = threading.Lock()
        self.query_batches = QueryCoalescer(self._encode_queries)

    @classmethod
    def from_model(cls, model: SentenceTransformer, name: str, batch_size: int = 64) -> Embedder:
        """Wrap an already-built ``SentenceTransformer`` (tests, custom models)."""
        embedder = cls(model=name, batch_size=batch_size, backend="torch")
        embedder.backend_explicit = False
        embedder.name = name
        embedder._backend = TorchBackend(model)
        return embedder

    # -- loading ----------------------------------------------------------------------------
    @property
    def is_loaded(self) -> bool:
        return self._backend is not None

    def warm_up(self) -> Embedder:
        if self._backend is None:
            with self._load_lock:
                if self._backend is None:
                    self._backend = self._load()
        return self

    @property
    def backend_name(self) -> str:
        """The concrete backend (``auto`` resolved); loads the model."""
        return self.engine.name

    @property
    def engine(self) -> EmbeddingBackend:
        """The backend object that computes the vectors."""
        self.warm_up()
        assert self._backend is not None
        return self._backend

    def _load(self) -> EmbeddingBackend:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        location = resolve_embedder(self._requested)
        device = self._device or auto_device()
        wanted = self.backend
        if wanted == AUTO:
            folder = _local_folder(location)
            if folder is None or device.startswith("cuda"):
                return self._build("torch", location, device)
            from ragkit.embedding.onnx_export import model_fingerprint, probe_texts

            model_key = f"{folder.resolve()}|{model_fingerprint(folder)}"
            choice = cached_choice(model_key, device)
            if choice is not None:
                self.choice = choice
                return self._build(choice.chosen, location, device)
            reference = self._build("torch", location, device)
            choice, built = measure_backends(
                reference,
                lambda name: self._build(name, location, device),
                candidate_backends(device),
                probe_texts(),
                self.batch_size,
                device,
            )
            save_choice(model_key, device, choice)
            self.choice = choice
            return built[choice.chosen]
        return self._build(wanted, location, device)

    def _build(self, name: str, location: str, device: str) -> EmbeddingBackend:
        if name in ("torch", "torch-bf16"):
            return TorchBackend(self._load_sentence_transformer(location, device), name)
        folder = _local_folder(location)
        if folder is None:
            raise ModelNotFoundError(
                f"embedding backend {name!r} needs the model {self.name!r} as a local folder "
                "(a path, or a Hugging Face id already in the local cache)"
            )
        from ragkit.embedding.backends.onnx_backend import OnnxBackend

        return OnnxBackend(folder, "int8" if name == "onnx-int8" else "fp32")

    def _load_sentence_transformer(self, location: str, device: str) -> SentenceTransformer:
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        # ragkit reports its own progress; the per-load weight bar is noise in a CLI or server.
        hf_logging.disable_progress_bar()

        try:
            return SentenceTransformer(location, device=device, **self._model_kwargs)
        except (OSError, ValueError) as exc:
            text = str(exc).strip()
            first_line = text.splitlines()[0] if text else type(exc).__name__
            raise ModelNotFoundError(f"cannot load embedder {self.name!r}: {first_line}") from None

    @property
    def model(self) -> SentenceTransformer:
        """The underlying ``SentenceTransformer`` (torch backends only)."""
        engine = self.engine
        if not isinstance(engine, TorchBackend):
            raise AttributeError(f"the {engine.name!r} backend has no SentenceTransformer")
        return engine.model

    @property
    def dimension(self) -> int:
        return self.engine.dimension

    @property
    def tokenizer(self) -> Any:
        return self.engine.tokenizer

    @property
    def max_tokens(self) -> int:
        """Tokens of text a chunk may hold: the max sequence length minus special tokens."""
        engine = self.engine
        special = (
            engine.tokenizer.num_special_tokens_to_add(pair=False)
            if engine.tokenizer is not None
            else 2
        )
        return engine.max_seq_length - special

    # -- encoding ---------------------------------------------------------------------------
    def encode(self, texts: Sequence[str], batch_size: int | None = None) -> Vectors:
        """Unit-length float32 vectors, one row per text, in input order."""
        if len(texts) == 0:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return self.engine.encode(list(texts), batch_size or self.batch_size)

    def encode_query(self, text: str) -> Vectors:
        """One query as a (1, dim) array: the latency-critical path of search, LRU-cached."""
        if self._query_cache_size:
            with self._cache_lock:
                hit = self._query_cache.get(text)
                if hit is not None:
                    self._query_cache.move_to_end(text)
                    return hit.copy()
        vector = self.query_batches.encode(text)
        if self._query_cache_size:
            with self._cache_lock:
                self._query_cache[text] = vector
                if len(self._query_cache) > self._query_cache_size:
                    self._query_cache.popitem(last=False)
        return vector.copy()

    def _encode_queries(self, texts: list[str]) -> Vectors:
        """One query: the lean single-text path; several concurrent ones: one batch."""
        engine = self.engine
        if len(texts) == 1:
            return engine.encode_one(texts[0])
        return engine.encode(texts, self.batch_size)


def _local_folder(location: str) -> Path | None:
    """A local folder for ``location``: itself, or its snapshot in the Hugging Face cache."""
    path = Path(location)
    if path.is_dir():
        return path
    try:
        from huggingface_hub import snapshot_download

        from ragkit.generation.checkpoints import is_offline

        return Path(snapshot_download(location, local_files_only=is_offline()))
    except Exception:
        return None
