"""Text embeddings: one :class:`Embedder` front, several interchangeable backends.

The backends compute the same sentence-transformers model in different ways (fp32 torch, bf16
torch, ONNX Runtime fp32 or int8); ``backend="auto"`` picks the fastest one that passes a
quality guard on this machine (see :mod:`ragkit.embedding.selection`).
"""

from ragkit.embedding.embedder import Embedder, Vectors, auto_device

__all__ = ["Embedder", "Vectors", "auto_device"]
