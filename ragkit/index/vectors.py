"""The FAISS side of an index: vectors keyed by int64 ids shared with the chunk store.

Inner product over unit vectors (= cosine). ``flat`` is exact and supports incremental add
and delete; ``hnsw`` and ``ivf`` are approximate, for large corpora, and are rebuilt from the
stored vectors when the set of vectors changes. ``auto`` (the default) is exact up to
:data:`AUTO_HNSW_THRESHOLD` vectors and HNSW above: below that size an exact search over
384-dimensional vectors takes a few milliseconds, less than encoding the query
(benchmarks/index_type_bench.py measures the trade-off). Files are written through a temporary file
and renamed, so a reader never sees a partial file.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import numpy.typing as npt

from ragkit.atomic import atomic_path
from ragkit.errors import IndexFormatError
from ragkit.index.manifest import IndexType

Ids = npt.NDArray[np.int64]
Matrix = npt.NDArray[np.float32]

AUTO_HNSW_THRESHOLD = 50_000
HNSW_NEIGHBOURS = 32
HNSW_EF_SEARCH = 128
IVF_NPROBE = 16


def _faiss():  # type: ignore[no-untyped-def]
    import faiss

    return faiss


class VectorIndex:
    def __init__(self, dimension: int, index_type: IndexType = "flat") -> None:
        self.dimension = dimension
        self.index_type: IndexType = index_type
        self.kind: IndexType = "flat" if index_type == "auto" else index_type
        self.needs_rebuild = False
        self._index = self._empty()

    def plan(self, total: int) -> None:
        """For ``auto``: pick the structure for ``total`` vectors (a change forces a rebuild)."""
        if self.index_type != "auto":
            return
        wanted: IndexType = "hnsw" if total > AUTO_HNSW_THRESHOLD else "flat"
        if wanted != self.kind:
            self.kind = wanted
            self.needs_rebuild = True

    # -- construction -----------------------------------------------------------------------
    def _empty(self, training: Matrix | None = None):  # type: ignore[no-untyped-def]
        faiss = _faiss()
        if self.kind == "flat":
            return faiss.IndexIDMap2(faiss.IndexFlatIP(self.dimension))
        if self.kind == "hnsw":
            inner = faiss.IndexHNSWFlat(self.dimension, HNSW_NEIGHBOURS, faiss.METRIC_INNER_PRODUCT)
            inner.hnsw.efSearch = HNSW_EF_SEARCH
            return faiss.IndexIDMap2(inner)
        n = 0 if training is None else len(training)
        nlist = max(1, min(int(4 * math.sqrt(max(n, 1))), max(n // 39, 1)))
        quantizer = faiss.IndexFlatIP(self.dimension)
        ivf = faiss.IndexIVFFlat(quantizer, self.dimension, nlist, faiss.METRIC_INNER_PRODUCT)
        ivf.nprobe = min(IVF_NPROBE, nlist)
        if training is not None and n > 0:
            ivf.train(training)
        return ivf

    @property
    def supports_incremental(self) -> bool:
        return self.kind == "flat" and not self.needs_rebuild

    @property
    def ntotal(self) -> int:
        return int(self._index.ntotal)

    def rebuild(self, ids: Ids, vectors: Matrix) -> None:
        """Replace the contents with exactly these vectors (used by approximate index types)."""
        self._index = self._empty(training=vectors if self.kind == "ivf" else None)
        self.needs_rebuild = False
        if len(ids):
            self._index.add_with_ids(self._check(vectors), ids.astype(np.int64))

    def add(self, ids: Ids, vectors: Matrix) -> None:
        if len(ids):
            self._index.add_with_ids(self._check(vectors), ids.astype(np.int64))

    def remove(self, ids: Ids) -> None:
        if len(ids):
            self._index.remove_ids(np.asarray(ids, dtype=np.int64))

    def _check(self, vectors: Matrix) -> Matrix:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dimension:
            raise IndexFormatError(
                f"vectors of shape {vectors.shape} do not match index dimension {self.dimension}"
            )
        return vectors

    # -- search -----------------------------------------------------------------------------
    def search(self, queries: Matrix, k: int, allowed: Ids | None = None) -> tuple[Matrix, Ids]:
        """Top-``k`` (scores, ids) per query; ids of -1 mark empty slots. ``allowed`` restricts ids."""
        faiss = _faiss()
        queries = self._check(queries)
        k = max(1, min(k, self.ntotal)) if self.ntotal else 1
        if allowed is None:
            scores, ids = self._index.search(queries, k)
        else:
            if len(allowed) == 0:
                n = len(queries)
                return np.full((n, k), -np.inf, dtype=np.float32), np.full(
                    (n, k), -1, dtype=np.int64
                )
            selector = faiss.IDSelectorBatch(np.asarray(allowed, dtype=np.int64))
            params = self._search_params(selector)
            scores, ids = self._index.search(queries, k, params=params)
        return scores, ids

    def _search_params(self, selector):  # type: ignore[no-untyped-def]
        faiss = _faiss()
        if self.kind == "hnsw":
            return faiss.SearchParametersHNSW(sel=selector, efSearch=HNSW_EF_SEARCH)
        if self.kind == "ivf":
            return faiss.SearchParametersIVF(sel=selector, nprobe=self._index.nprobe)
        return faiss.SearchParameters(sel=selector)

    # -- persistence ------------------------------------------------------------------------
    def save(self, path: Path) -> None:
        faiss = _faiss()
        with atomic_path(path) as tmp:
            faiss.write_index(self._index, str(tmp))

    @classmethod
    def load(cls, path: Path, dimension: int, index_type: IndexType) -> VectorIndex:
        faiss = _faiss()
        try:
            raw = faiss.read_index(str(path))
        except RuntimeError as exc:
            raise IndexFormatError(
                f"cannot read vector file {path}: {str(exc).splitlines()[0]}"
            ) from None
        if raw.d != dimension:
            raise IndexFormatError(
                f"vector file {path} has dimension {raw.d}, manifest says {dimension}"
            )
        index = cls(dimension, index_type)
        index._index = raw
        index.kind = _kind_of(raw)
        if index.kind == "hnsw":
            faiss.downcast_index(raw.index).hnsw.efSearch = HNSW_EF_SEARCH
        return index


def _kind_of(raw) -> IndexType:  # type: ignore[no-untyped-def]
    """Which structure a loaded FAISS object is (``auto`` indexes change structure with size)."""
    faiss = _faiss()
    inner = faiss.downcast_index(raw.index) if hasattr(raw, "id_map") else faiss.downcast_index(raw)
    if isinstance(inner, faiss.IndexHNSW):
        return "hnsw"
    if isinstance(inner, faiss.IndexIVF):
        return "ivf"
    return "flat"
