"""Backends on sentence-transformers + torch: fp32 (the reference), bf16 on CPU, fp16 on CUDA."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ragkit.embedding.backends.base import Vectors, normalise_rows

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer


def cpu_has_bf16() -> bool:
    """Whether this CPU does bf16 dot products natively (AVX-512 BF16 or AMX).

    Without them torch emulates bf16 and it is slower than fp32, so ``torch-bf16`` is not
    offered to the automatic choice there.
    """
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


class TorchBackend:
    """A ``SentenceTransformer`` in fp32, or cast to bf16 (CPU) / fp16 (CUDA)."""

    def __init__(self, model: SentenceTransformer, name: str = "torch") -> None:
        import torch

        self.name = name
        device = str(model.device)
        if name == "torch-bf16":
            model = model.to(torch.bfloat16)
        elif device.startswith("cuda"):
            model = model.half()
        self.model = model.eval()
        dim = model.get_embedding_dimension()
        if dim is None:  # pragma: no cover - every ST model with pooling reports it
            raise ValueError("the embedder does not report its dimension")
        self.dimension = int(dim)
        self.max_seq_length = int(model.max_seq_length or 512)
        # a copy: the model's own is used by ``encode`` in an ingestion worker thread while
        # the chunker counts tokens with this one, and a fast tokenizer cannot be shared
        self.tokenizer: Any = copy.deepcopy(model.tokenizer)

    def encode(self, texts: Sequence[str], batch_size: int) -> Vectors:
        vectors = self.model.encode(
            list(texts),
            batch_size=batch_size,
            convert_to_numpy=False,
            convert_to_tensor=True,
            show_progress_bar=False,
        )
        return normalise_rows(vectors.float().cpu().numpy())

    def encode_one(self, text: str) -> Vectors:
        """One forward pass without ``encode``'s sorting and batching bookkeeping."""
        import torch

        prepare = getattr(self.model, "preprocess", None) or self.model.tokenize
        features = prepare([text])
        device = self.model.device
        features = {k: v.to(device) if hasattr(v, "to") else v for k, v in features.items()}
        with torch.inference_mode():
            out = self.model(features)["sentence_embedding"]
        return normalise_rows(np.asarray(out.float().cpu().numpy()))
