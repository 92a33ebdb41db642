"""Persistent index: FAISS vectors + SQLite store + JSON manifest in one directory.

:class:`VectorStore` is the contract every store implements (this directory index and
:class:`ragkit.stores.PgVectorIndex`); :mod:`ragkit.index.staging` is what they share.
"""

from ragkit.index.contract import FileRecords, VectorStore
from ragkit.index.index import Index
from ragkit.index.ingest import IngestReport, index_paths
from ragkit.index.manifest import FORMAT_VERSION, IndexCounts, IndexManifest, IndexType
from ragkit.index.ray_ingest import index_paths_ray  # imports Ray only when called
from ragkit.index.store import ChunkStore, filter_sql
from ragkit.index.vectors import VectorIndex

__all__ = [
    "FORMAT_VERSION",
    "ChunkStore",
    "FileRecords",
    "Index",
    "IndexCounts",
    "IndexManifest",
    "IndexType",
    "IngestReport",
    "VectorIndex",
    "VectorStore",
    "filter_sql",
    "index_paths",
    "index_paths_ray",
]
