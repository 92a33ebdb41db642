"""The HTTP server: a FastAPI app around a RAG pipeline (see docs/serving.md).

Names are imported lazily so that importing ``ragkit.server`` (or one of its light modules, such
as ``settings``) loads no FastAPI; only building or running the app needs it. ``ragkit serve``
itself lives in :mod:`ragkit.cli.serve`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ragkit.server.app import create_app
    from ragkit.server.batching import DynamicBatcher, QueueFullError
    from ragkit.server.service import Decoding, RAGService
    from ragkit.server.settings import ServerSettings, is_loopback

_WHERE = {
    "create_app": "ragkit.server.app",
    "DynamicBatcher": "ragkit.server.batching",
    "QueueFullError": "ragkit.server.batching",
    "Decoding": "ragkit.server.service",
    "RAGService": "ragkit.server.service",
    "ServerSettings": "ragkit.server.settings",
    "is_loopback": "ragkit.server.settings",
}

__all__ = [
    "Decoding",
    "DynamicBatcher",
    "QueueFullError",
    "RAGService",
    "ServerSettings",
    "create_app",
    "is_loopback",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'ragkit.server' has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)
