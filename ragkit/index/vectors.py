"""The FAISS side of an index: vectors keyed by int64 ids shared with the chunk store.

Inner product over unit vectors (= cosine). ``flat`` is exact and supports incremental add
and delete; ``hnsw``, ``ivf`` and ``ivfpq`` are approximate, for large corpora, and are rebuilt
from the stored vectors when the set of vectors changes. ``ivfpq`` (IVF + product quantisation,
about 100 bytes a vector instead of 1.5 kB) is the type for corpora whose raw vectors do not fit
in RAM: its file is memory-mapped on load, and its approximate scores are re-ranked with the
exact vectors of the candidates when the caller can supply them (the chunk store does);
docs/index-scale.md and benchmarks/faiss_scale_bench.py give the numbers behind its defaults. ``auto`` (the default) is exact up to
:data:`AUTO_HNSW_THRESHOLD` vectors and HNSW above: below that size an exact search over
384-dimensional vectors takes a few milliseconds, less than encoding the query
(benchmarks/index_type_bench.py measures the trade-off). Files are written through a temporary file
and renamed, so a reader never sees a partial file.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable, Iterator
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

# IVF-PQ defaults, chosen from benchmarks/faiss_scale_bench.py (docs/index-scale.md):
# - one PQ sub-quantiser per IVFPQ_DIMS_PER_CODE dimensions (384-d -> 96 bytes a vector): with 8
#   dimensions a byte, recall@10 stayed near 0.5 even after exact re-ranking;
# - nlist the power of two nearest 4*sqrt(n), at most IVFPQ_MAX_NLIST, and nprobe nlist/64 (at
#   least IVFPQ_NPROBE): a query scans ~1.6% of the lists whatever their number. Measured with
#   exact re-ranking, the same scan share with more, smaller lists found more true neighbours
#   for the same time: 1M vectors, 4096 lists / nprobe 64: recall@10 0.963 vs 0.936 with
#   2048 / 32; 10M, 8192 / 128: 0.976 vs 0.941, both at ~4 ms. The price is build time (2x:
#   k-means and assignment are linear in nlist; 12 min at 10M on 2 cores), which is small next
#   to embedding the chunks (10M chunks: ~40 h on the same machine);
# - the re-ranking depth trades latency for recall as measured at 1M and 10M vectors.
IVFPQ_DIMS_PER_CODE = 4
IVFPQ_MAX_NLIST = 8192
IVFPQ_NPROBE = 32
IVFPQ_LISTS_PER_PROBE = 64
IVFPQ_RERANK_FACTOR = 4
IVFPQ_RERANK_MIN = 40
# k-means and PQ training see at most this many vectors (a fixed-seed sample): training cost is
# linear in it; FAISS asks for >= 39 points a centroid
IVFPQ_TRAIN_PER_LIST = 40
IVFPQ_MAX_TRAIN = IVFPQ_TRAIN_PER_LIST * IVFPQ_MAX_NLIST
# FAISS wants >= 39 training points per centroid; fewer gives empty or degenerate clusters
MIN_POINTS_PER_CENTROID = 39
ADD_BATCH = 65_536

ExactVectors = Callable[[Ids], Matrix]
"""Returns the stored (exact) vectors of the given ids, in order; used to re-rank PQ candidates."""


def _faiss():  # type: ignore[no-untyped-def]
    import faiss

    return faiss


def ivfpq_nlist(total: int) -> int:
    """Inverted lists for ``total`` vectors: the power of two nearest 4*sqrt(n), capped.

    4*sqrt(n) is the usual FAISS guidance (a probe scans ~n/nlist codes, the coarse quantiser
    compares against nlist centroids: both terms balance near sqrt(n)); it is capped so that
    k-means keeps >= 39 points a centroid and build time stays reasonable (IVFPQ_MAX_NLIST).
    """
    if total < 2 * MIN_POINTS_PER_CENTROID:
        return 1
    wanted = 2 ** round(math.log2(4 * math.sqrt(total)))
    return int(max(1, min(wanted, IVFPQ_MAX_NLIST, total // MIN_POINTS_PER_CENTROID)))


def ivfpq_nprobe(nlist: int) -> int:
    """Lists a query probes: nlist/64 (a fixed share of the corpus), at least 32, at most nlist.

    Indexes built before the nlist cap was raised (2048 lists) get 32, as they always did.
    """
    return int(min(nlist, max(IVFPQ_NPROBE, nlist // IVFPQ_LISTS_PER_PROBE)))


def ivfpq_shape(dimension: int, total: int) -> tuple[int, int, int]:
    """(nlist, M sub-quantisers, bits a code) for ``total`` vectors of ``dimension``.

    M is the largest divisor of ``dimension`` not above dimension/4 (FAISS needs M to divide
    the dimension); codes have 8 bits unless the corpus is too small to train 256 centroids a
    sub-quantiser, in which case fewer bits keep k-means well posed (tiny indexes only: their
    candidates are re-ranked exactly anyway).
    """
    target = max(1, dimension // IVFPQ_DIMS_PER_CODE)
    m = max(d for d in range(1, target + 1) if dimension % d == 0)
    nbits = 8
    if total < 256 * MIN_POINTS_PER_CENTROID:
        nbits = int(max(1, min(8, math.floor(math.log2(max(total, 2) / MIN_POINTS_PER_CENTROID)))))
    return ivfpq_nlist(total), m, nbits


def training_sample(vectors: Matrix, size: int, seed: int = 0) -> Matrix:
    """A fixed-seed sample of rows (all rows when there are at most ``size``), for training."""
    if len(vectors) <= size:
        return vectors
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(vectors), size, replace=False))
    return np.ascontiguousarray(vectors[rows])


class VectorIndex:
    def __init__(self, dimension: int, index_type: IndexType = "flat") -> None:
        self.dimension = dimension
        self.index_type: IndexType = index_type
        self.kind: IndexType = "flat" if index_type == "auto" else index_type
        self.needs_rebuild = False
        # the file this index is memory-mapped from (None: fully in memory)
        self.mmap_source: Path | None = None
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
    def _empty(self, training: Matrix | None = None, total: int = 0):  # type: ignore[no-untyped-def]
        faiss = _faiss()
        if self.kind == "flat":
            return faiss.IndexIDMap2(faiss.IndexFlatIP(self.dimension))
        if self.kind == "hnsw":
            inner = faiss.IndexHNSWFlat(self.dimension, HNSW_NEIGHBOURS, faiss.METRIC_INNER_PRODUCT)
            inner.hnsw.efSearch = HNSW_EF_SEARCH
            return faiss.IndexIDMap2(inner)
        if self.kind == "ivfpq":
            return self._empty_ivfpq(training, total)
        n = 0 if training is None else len(training)
        nlist = max(1, min(int(4 * math.sqrt(max(n, 1))), max(n // 39, 1)))
        quantizer = faiss.IndexFlatIP(self.dimension)
        ivf = faiss.IndexIVFFlat(quantizer, self.dimension, nlist, faiss.METRIC_INNER_PRODUCT)
        ivf.nprobe = min(IVF_NPROBE, nlist)
        if training is not None and n > 0:
            ivf.train(training)
        return ivf

    def _empty_ivfpq(self, training: Matrix | None, total: int):  # type: ignore[no-untyped-def]
        faiss = _faiss()
        nlist, m, nbits = ivfpq_shape(self.dimension, max(total, 0))
        quantizer = faiss.IndexFlatIP(self.dimension)
        ivf = faiss.IndexIVFPQ(
            quantizer, self.dimension, nlist, m, nbits, faiss.METRIC_INNER_PRODUCT
        )
        ivf.nprobe = ivfpq_nprobe(nlist)
        # the PQ k-means samples its own training set down to 256 points a centroid
        ivf.cp.min_points_per_centroid = 1  # sizes are chosen above: no FAISS warnings
        ivf.pq.cp.min_points_per_centroid = 1
        if training is not None and len(training):
            needed = max(nlist, 2**nbits)
            if len(training) < needed:  # a handful of vectors: repeat them so k-means is defined
                training = np.resize(training, (needed, self.dimension))
            ivf.train(self._check(training))
        return ivf

    def prepare(self, total: int, training: Matrix) -> None:
        """Start an empty, trained structure sized for ``total`` vectors (an IVF's lists and
        codes depend on the corpus size); fill it with :meth:`add`. ``rebuild`` uses this, and
        so can a caller that streams more vectors than fit in memory at once."""
        if self.kind in ("ivf", "ivfpq"):
            self._index = self._empty(training=training, total=total)
        else:
            self._index = self._empty()
        self.mmap_source = None
        self.needs_rebuild = False

    @staticmethod
    def training_size(total: int) -> int:
        """How many vectors IVF-PQ training needs for ``total`` vectors (a sample suffices)."""
        return min(total, max(IVFPQ_TRAIN_PER_LIST * ivfpq_nlist(total), 256 * 39), IVFPQ_MAX_TRAIN)

    @property
    def supports_incremental(self) -> bool:
        return self.kind == "flat" and not self.needs_rebuild

    @property
    def ntotal(self) -> int:
        return int(self._index.ntotal)

    def rebuild(self, ids: Ids, vectors: Matrix) -> None:
        """Replace the contents with exactly these vectors (used by approximate index types)."""
        if len(ids) != len(vectors):
            raise IndexFormatError(f"{len(ids)} ids but {len(vectors)} vectors")
        training: Matrix | None = None
        if self.kind == "ivf":
            training = vectors
        elif self.kind == "ivfpq":
            training = training_sample(vectors, self.training_size(len(vectors)))
        if training is not None:
            training = self._check(training)
        self.prepare(len(vectors), training if training is not None else vectors[:0])
        for start in range(0, len(ids), ADD_BATCH):
            end = start + ADD_BATCH
            self.add(ids[start:end], vectors[start:end])

    def rebuild_streaming(
        self, total: int, batches: Callable[[], Iterator[tuple[Ids, Matrix]]]
    ) -> None:
        """:meth:`rebuild` from batches, without holding every vector at once for ``ivfpq``.

        ``batches()`` must yield the same ``total`` vectors in the same order each time it is
        called: IVF-PQ reads them twice, once for the training sample (the rows
        :func:`training_sample` would pick from the concatenation, so the index is the one
        :meth:`rebuild` builds) and once to encode them. Memory is the sample plus one batch plus
        the codes. The other types keep raw vectors in the index anyway and are rebuilt from
        the concatenation.
        """
        if self.kind != "ivfpq":
            id_parts, vec_parts = [], []
            for ids, vecs in batches():
                id_parts.append(np.asarray(ids, dtype=np.int64))
                vec_parts.append(np.asarray(vecs, dtype=np.float32))
            if not id_parts:
                self.rebuild(np.zeros(0, np.int64), np.zeros((0, self.dimension), np.float32))
                return
            self.rebuild(np.concatenate(id_parts), np.concatenate(vec_parts))
            return
        size = self.training_size(total)
        if total <= size:
            wanted = np.arange(total)
        else:
            wanted = np.sort(np.random.default_rng(0).choice(total, size, replace=False))
        picked: list[Matrix] = []
        seen = 0
        for _, vecs in batches():
            lo, hi = np.searchsorted(wanted, [seen, seen + len(vecs)])
            if hi > lo:
                picked.append(np.asarray(vecs[wanted[lo:hi] - seen], dtype=np.float32))
            seen += len(vecs)
        if seen != total:
            raise IndexFormatError(f"expected {total} vectors to rebuild from, got {seen}")
        training = np.concatenate(picked) if picked else np.zeros((0, self.dimension), np.float32)
        self.prepare(total, self._check(training))
        del picked, training
        for ids, vecs in batches():
            for start in range(0, len(ids), ADD_BATCH):
                self.add(ids[start : start + ADD_BATCH], vecs[start : start + ADD_BATCH])

    def add(self, ids: Ids, vectors: Matrix) -> None:
        if self.mmap_source is not None:
            raise IndexFormatError("a memory-mapped vector index is read-only: rebuild it instead")
        if len(ids):
            self._index.add_with_ids(self._check(vectors), np.asarray(ids, dtype=np.int64))

    def remove(self, ids: Ids) -> None:
        if self.mmap_source is not None:
            raise IndexFormatError("a memory-mapped vector index is read-only: rebuild it instead")
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
    def search(
        self,
        queries: Matrix,
        k: int,
        allowed: Ids | None = None,
        exact: ExactVectors | None = None,
    ) -> tuple[Matrix, Ids]:
        """Top-``k`` (scores, ids) per query; ids of -1 mark empty slots. ``allowed`` restricts ids.

        For ``ivfpq``, ``exact`` (stored vectors by id) turns the PQ search into candidate
        generation: the top ``max(4k, 40)`` candidates are re-scored with their exact vectors,
        which recovers most of the recall that quantisation loses (docs/index-scale.md).
        """
        queries = self._check(queries)
        if self.kind == "ivfpq" and exact is not None and self.ntotal:
            depth = max(IVFPQ_RERANK_FACTOR * k, IVFPQ_RERANK_MIN)
            _, candidates = self._search(queries, depth, allowed)
            return _rerank(queries, candidates, min(k, self.ntotal), exact)
        return self._search(queries, k, allowed)

    def _search(self, queries: Matrix, k: int, allowed: Ids | None) -> tuple[Matrix, Ids]:
        faiss = _faiss()
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
        if self.kind in ("ivf", "ivfpq"):
            return faiss.SearchParametersIVF(sel=selector, nprobe=self._index.nprobe)
        return faiss.SearchParameters(sel=selector)

    # -- persistence ------------------------------------------------------------------------
    def save(self, path: Path) -> None:
        """Write atomically. The file is self-contained (inverted lists inline), so an index
        directory can be moved or copied; memory-mapping happens only at load time."""
        faiss = _faiss()
        with atomic_path(path) as tmp:
            if self.mmap_source is not None:
                # writing a mapped index would store an absolute path to its lists: copy the
                # (unchanged, read-only) file it was mapped from instead
                shutil.copyfile(self.mmap_source, tmp)
            else:
                faiss.write_index(self._index, str(tmp))

    @classmethod
    def load(
        cls, path: Path, dimension: int, index_type: IndexType, mmap: bool | None = None
    ) -> VectorIndex:
        """Read a vector file. ``mmap`` (default: for ``ivfpq`` and ``auto`` indexes) maps the
        inverted lists of an IVF file instead of reading them: pages load on demand and the OS
        may evict them, so an index larger than RAM can be served. The mapping is of ``path``
        itself, so nothing absolute is stored and the directory stays relocatable; on POSIX a
        mapped file stays readable after a newer generation prunes it."""
        faiss = _faiss()
        if mmap is None:
            mmap = index_type in ("ivfpq", "auto")
        flags = faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY if mmap else 0
        try:
            raw = faiss.read_index(str(path), flags)
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
        if index.kind == "ivfpq":
            raw.nprobe = ivfpq_nprobe(int(raw.nlist))
        if mmap and index.kind in ("ivf", "ivfpq") and raw.ntotal:
            index.mmap_source = Path(path)
            lists = faiss.downcast_InvertedLists(raw.invlists)
            if isinstance(lists, faiss.OnDiskInvertedLists):
                # FAISS would start 32 threads per search to pre-read the probed lists: that
                # costs ~2 ms a query (18x the search itself at 20k vectors); page faults on a
                # local file are cheaper
                lists.prefetch_nthread = 0
        return index


def _kind_of(raw) -> IndexType:  # type: ignore[no-untyped-def]
    """Which structure a loaded FAISS object is (``auto`` indexes change structure with size)."""
    faiss = _faiss()
    inner = faiss.downcast_index(raw.index) if hasattr(raw, "id_map") else faiss.downcast_index(raw)
    if isinstance(inner, faiss.IndexHNSW):
        return "hnsw"
    if isinstance(inner, faiss.IndexIVFPQ):
        return "ivfpq"
    if isinstance(inner, faiss.IndexIVF):
        return "ivf"
    return "flat"


def _rerank(queries: Matrix, candidates: Ids, k: int, exact: ExactVectors) -> tuple[Matrix, Ids]:
    """Re-score candidate ids with their exact vectors; keep the best ``k`` per query."""
    n = len(queries)
    scores_out = np.full((n, k), -np.inf, dtype=np.float32)
    ids_out = np.full((n, k), -1, dtype=np.int64)
    for row in range(n):
        found = candidates[row][candidates[row] >= 0]
        if len(found) == 0:
            continue
        vectors = np.asarray(exact(found), dtype=np.float32)
        if vectors.shape != (len(found), queries.shape[1]):
            raise IndexFormatError(
                f"exact vectors for re-ranking have shape {vectors.shape}, "
                f"expected {(len(found), queries.shape[1])}"
            )
        scores = vectors @ queries[row]
        order = np.argsort(-scores, kind="stable")[:k]
        scores_out[row, : len(order)] = scores[order]
        ids_out[row, : len(order)] = found[order]
    return scores_out, ids_out
