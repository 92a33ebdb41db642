"""A PostgreSQL + pgvector store: the same chunks, filters and searches as the file index.

For teams that already run PostgreSQL and want concurrent writers, transactions and their usual
backups instead of an index directory. One store lives in one PostgreSQL *schema* (default
``ragkit``), so several stores can share a database::

    meta        key/value rows: schema_version, manifest (embedder, dimension, chunking as JSON),
                text_search_config
    files       key, source, content_hash      (incremental re-indexing, as the file index)
    documents   id, file_key, source, text, metadata jsonb
    chunks      id, document_id → documents ON DELETE CASCADE, text, start_offset, end_offset,
                source, metadata jsonb, embedding vector(dim) [HNSW, vector_ip_ops],
                tsv tsvector GENERATED from text [GIN]

Vectors are unit length (the embedder normalises them), so pgvector's negative inner product
``<#>`` orders exactly like the file index's inner-product FAISS search, and the score returned
is the same cosine. The lexical side is PostgreSQL full-text search (``ts_rank_cd`` over the
stemmed, stopword-free ``tsvector``), not BM25: scores differ from the file index's BM25, ranks
are similar, and hybrid fusion by rank (RRF) does not care about the scale.

Changes are staged in memory (like :class:`ragkit.index.Index`) and applied by :meth:`commit`
in one transaction; several processes may write at once. Row locks are taken in a fixed order
(files, then documents, each sorted) and a deadlock or serialization failure is retried, so
two writers replacing the same file simply apply one after the other: last commit wins.

psycopg is imported lazily, when a store is opened: ``import ragkit`` stays light and works
without the ``postgres`` extra.
"""

from __future__ import annotations

import importlib
import re
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import numpy as np

from ragkit.chunking import ChunkingSettings
from ragkit.embedding import Embedder, Vectors
from ragkit.errors import IndexFormatError, RagkitError
from ragkit.index.manifest import IndexCounts, IndexManifest, utc_now
from ragkit.index.staging import StagedChanges, StagingStore, check_query, new_manifest
from ragkit.index.store import filter_sql
from ragkit.schema import Chunk, Document, Hit

if TYPE_CHECKING:
    import psycopg
    from psycopg import sql


SCHEMA_VERSION = 1
DEFAULT_SCHEMA = "ragkit"
DEFAULT_TEXT_SEARCH_CONFIG = "english"
URL_SCHEMES = ("postgresql://", "postgres://")
INSTALL_HINT = "pip install 'ragkit[postgres]'"
# pgvector cannot build an HNSW index on `vector` columns wider than this
MAX_HNSW_DIMENSION = 2000
# pgvector refuses hnsw.ef_search above this
MAX_EF_SEARCH = 1000
# HNSW defaults: pgvector's own (m 16, ef_construction 64, ef_search 40) gave recall@10 of only
# 0.50-0.54 against exact search on the full Python docs + SQuAD chunks (17.9k MiniLM vectors,
# benchmarks/README.md "PostgreSQL + pgvector vs FAISS"), where FAISS's HNSW with the same
# parameters gave 0.83. A larger build beam (ef_construction 200: 2.3x the build time) and search
# beam (ef_search 200: ~1.6 ms a query, below the cost of embedding the question) lift it to
# 0.91-0.98; pgvector's graphs vary from build to build at the same parameters.
DEFAULT_HNSW_M = 16
DEFAULT_HNSW_EF_CONSTRUCTION = 200
DEFAULT_EF_SEARCH = 200
_SCHEMA_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_FILTER_COLUMNS = {"document_id": "document_id", "source": "source", "chunk_id": "id"}
_CHUNK_COLUMNS = ("id", "document_id", "text", "start_offset", "end_offset", "source", "metadata")
_RETRIES = 5


class PostgresUnavailableError(RagkitError):
    """The optional client packages (psycopg, pgvector) are not installed."""


class PostgresConnectionError(RagkitError):
    """The server cannot be reached or refused the login (the message never shows a password)."""


class PgVectorMissingError(RagkitError):
    """The server has no pgvector extension, or this user may not enable it."""


# -- lazy imports and connection strings --------------------------------------------------------
def _psycopg() -> ModuleType:
    """Import psycopg on first use, with the install command in the error if it is absent."""
    try:
        return importlib.import_module("psycopg")
    except ImportError:
        raise PostgresUnavailableError(
            f"the PostgreSQL store needs psycopg and pgvector: {INSTALL_HINT}"
        ) from None


def _register_vector(conn: psycopg.Connection[Any]) -> None:
    try:
        module = importlib.import_module("pgvector.psycopg")
    except ImportError:
        raise PostgresUnavailableError(
            f"the PostgreSQL store needs the pgvector client package: {INSTALL_HINT}"
        ) from None
    module.register_vector(conn)


def is_postgres_url(target: object) -> bool:
    """Whether ``target`` names a PostgreSQL store (``postgresql://`` or ``postgres://``)."""
    return isinstance(target, str) and target.lower().startswith(URL_SCHEMES)


def split_target(target: str) -> tuple[str, str]:
    """``(conninfo, schema)`` from a URL whose optional ``schema=`` query parameter names the store.

    libpq rejects query parameters it does not know, so ragkit's own one is taken out here.
    """
    if not is_postgres_url(target):
        return target, DEFAULT_SCHEMA
    parts = urlsplit(target)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schemas = [v for k, v in query if k == "schema"]
    rest = [(k, v) for k, v in query if k != "schema"]
    conninfo = urlunsplit(parts._replace(query=urlencode(rest)))
    return conninfo, schemas[-1] if schemas else DEFAULT_SCHEMA


def redact(conninfo: str) -> str:
    """A connection string fit for messages and configs: user, host, port, database; no password."""
    try:
        params = _psycopg().conninfo.conninfo_to_dict(conninfo)
    except Exception:
        return "<unparseable connection string>"
    user = f"{params['user']}@" if params.get("user") else ""
    host = str(params.get("host") or params.get("hostaddr") or "")
    if "/" in host or "," in host:  # a socket directory or several hosts: keep it readable
        host = host.replace("/", "%2F")
    port = f":{params['port']}" if params.get("port") else ""
    dbname = f"/{params['dbname']}" if params.get("dbname") else ""
    return f"postgresql://{user}{host}{port}{dbname}"


def _check_schema(schema: str) -> str:
    if not _SCHEMA_NAME.match(schema):
        raise RagkitError(
            f"store schema must be a plain identifier (letters, digits, '_'), got {schema!r}"
        )
    return schema


def connect(conninfo: str, connect_timeout: int = 10) -> psycopg.Connection[Any]:
    """An autocommit connection, with errors that name the server but never the password."""
    pg = _psycopg()
    try:
        params = pg.conninfo.conninfo_to_dict(conninfo)
    except pg.Error:
        raise PostgresConnectionError(
            "invalid PostgreSQL connection string (not shown: it may hold a password)"
        ) from None
    extra: dict[str, Any] = {"application_name": "ragkit"}
    if "connect_timeout" not in params:
        extra["connect_timeout"] = connect_timeout
    try:
        conn: psycopg.Connection[Any] = pg.connect(conninfo, autocommit=True, **extra)
    except pg.Error as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        password = params.get("password")
        if password:
            reason = reason.replace(str(password), "***")
        raise PostgresConnectionError(
            f"cannot connect to PostgreSQL at {redact(conninfo)}: {reason}"
        ) from None
    return conn


def _ensure_pgvector(conn: psycopg.Connection[Any], where: str) -> str:
    """Enable pgvector in this database if needed; returns its version."""
    pg = _psycopg()
    row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
    if row is not None:
        return str(row[0])
    available = conn.execute(
        "SELECT 1 FROM pg_available_extensions WHERE name = 'vector'"
    ).fetchone()
    if available is None:
        raise PgVectorMissingError(
            f"the PostgreSQL server at {where} has no pgvector extension: install it on the "
            "server (e.g. the postgresql-NN-pgvector package) — see docs/postgres.md"
        )
    try:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    except pg.errors.InsufficientPrivilege:
        raise PgVectorMissingError(
            f"pgvector is installed on {where} but not enabled in this database, and this user "
            "may not enable it: ask an administrator to run CREATE EXTENSION vector"
        ) from None
    except pg.errors.UniqueViolation:  # another process created it at the same moment
        pass
    row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
    return str(row[0]) if row else "0"


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", version)[:3])


# -- filters ------------------------------------------------------------------------------------
def _json_scalar(value: Any) -> Any:
    """SQLite's json_extract reads JSON booleans as 0/1; compare the same way here."""
    return int(value) if isinstance(value, bool) else value


def _column_text(value: Any) -> str:
    """SQLite compares a number with a TEXT column as text; do the same."""
    return str(int(value)) if isinstance(value, bool) else str(value)


def filter_clause(
    schema: str, filters: Mapping[str, Any] | None
) -> tuple[sql.Composable, list[Any]]:
    """The WHERE clause (over ``chunks``) meaning exactly what :func:`ragkit.index.store.filter_sql`
    means in SQLite, so a filter selects the same chunks in either store.

    Metadata values are read with ``<schema>.sql_value(metadata -> key)``: JSON booleans become
    0/1, JSON null and missing keys become SQL NULL, as ``json_extract`` does. ``$ne`` therefore
    matches chunks without the key; ``$in`` / ``$nin`` never match them; ``None`` is never equal
    to anything; a ``None`` inside ``$nin`` matches nothing (SQL ``NOT IN`` with a NULL).
    """
    from psycopg import sql
    from psycopg.types.json import Jsonb

    filter_sql(filters)  # the same validation and error messages as the file index
    if not filters:
        return sql.SQL("TRUE"), []
    value_fn = sql.Identifier(schema, "sql_value")
    clauses: list[sql.Composable] = []
    params: list[Any] = []
    for key, condition in filters.items():
        op, value = "$eq", condition
        if isinstance(condition, Mapping):
            op, value = next(iter(condition.items()))
        elif isinstance(condition, list | tuple | set | frozenset):
            op = "$in"
        column = _FILTER_COLUMNS.get(key)
        expr: sql.Composable
        if column is not None:
            expr, expr_params, array_type = sql.Identifier(column), [], sql.SQL("text[]")
        else:
            expr = sql.SQL("{}(metadata -> %s)").format(value_fn)
            expr_params, array_type = [key], sql.SQL("jsonb[]")

        def convert(v: Any, is_column: bool = column is not None) -> Any:
            return _column_text(v) if is_column else Jsonb(_json_scalar(v))

        if op in ("$eq", "$ne"):
            if value is None:
                clauses.append(
                    sql.SQL("FALSE") if op == "$eq" else sql.SQL("{} IS NOT NULL").format(expr)
                )
                params.extend(expr_params if op == "$ne" else [])
                continue
            operator = sql.SQL("=" if op == "$eq" else "IS DISTINCT FROM")
            clauses.append(sql.SQL("{} {} %s").format(expr, operator))
            params.extend([*expr_params, convert(value)])
        else:  # $in / $nin (filter_sql rejected anything else)
            values = list(value)
            if op == "$nin" and any(v is None for v in values):
                clauses.append(sql.SQL("FALSE"))
                continue
            values = [v for v in values if v is not None]
            if not values:
                clauses.append(sql.SQL("FALSE" if op == "$in" else "TRUE"))
                continue
            template = "{} = ANY(%s::{})" if op == "$in" else "NOT ({} = ANY(%s::{}))"
            clauses.append(sql.SQL(template).format(expr, array_type))
            params.extend([*expr_params, [convert(v) for v in values]])
    return sql.SQL(" AND ").join(clauses), params


# -- the store ----------------------------------------------------------------------------------
class PgFiles:
    """The ``files`` table as :class:`ragkit.index.FileRecords` (what the ingest loop reads of a
    store: content hashes for incremental re-indexing), like :class:`ragkit.index.ChunkStore`."""

    def __init__(self, index: PgVectorIndex) -> None:
        self._index = index

    def file_hash(self, key: str) -> str | None:
        row = self._index._fetchone("SELECT content_hash FROM {files} WHERE key = %s", [key])
        return str(row[0]) if row else None

    def file_keys(self) -> list[str]:
        return [str(r[0]) for r in self._index._fetchall("SELECT key FROM {files} ORDER BY key")]

    def documents_of_file(self, key: str) -> list[str]:
        rows = self._index._fetchall(
            "SELECT id FROM {documents} WHERE file_key = %s ORDER BY id", [key]
        )
        return [str(r[0]) for r in rows]

    def chunks_of_document(self, document_id: str) -> list[Chunk]:
        return self._index.chunks_of_document(document_id)

    def counts(self) -> tuple[int, int, int]:
        counts = self._index.counts()
        return counts.files, counts.documents, counts.chunks


class PgVectorIndex(StagingStore):
    """Chunks in PostgreSQL with pgvector: the file index's interface, a database's guarantees.

    Implements :class:`~ragkit.index.contract.VectorStore`, as :class:`ragkit.index.Index`
    does (staging and validation are :class:`~ragkit.index.staging.StagingStore`'s), so the
    retrievers, the ingest loop, the server and the CLI work on either. Open with :meth:`open`,
    :meth:`create` or :meth:`open_or_create`.
    """

    noun = "store"

    def __init__(
        self,
        conn: psycopg.Connection[Any],
        conninfo: str,
        schema: str,
        manifest: IndexManifest,
        embedder: Embedder,
        text_search_config: str,
        pgvector_version: str,
    ) -> None:
        super().__init__(manifest, embedder)
        self.conn = conn
        self.schema = schema
        self.text_search_config = text_search_config
        self.pgvector_version = pgvector_version
        self.store = PgFiles(self)
        # HNSW candidate list per query (pgvector's default is 40: see DEFAULT_EF_SEARCH);
        # raised to k for larger k
        self.ef_search = DEFAULT_EF_SEARCH
        # True: rank every chunk exactly (a sequential scan of the chunks table: recall 1,
        # ~45 ms at 18k chunks, linear in the store's size) instead of walking the HNSW graph
        self.exact_search = False
        self._conninfo = conninfo
        self._session_ef: int | None = None
        self._lock = threading.RLock()  # one connection: one statement at a time
        if _version_tuple(pgvector_version) >= (0, 8):
            # filtered HNSW scans keep walking the graph until k rows pass the filter
            conn.execute("SELECT set_config('hnsw.iterative_scan', 'strict_order', false)")

    # -- opening ----------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        conninfo: str,
        embedder: Embedder | str | None = None,
        chunking: ChunkingSettings | None = None,
        schema: str | None = None,
        text_search_config: str = DEFAULT_TEXT_SEARCH_CONFIG,
        hnsw_m: int = DEFAULT_HNSW_M,
        hnsw_ef_construction: int = DEFAULT_HNSW_EF_CONSTRUCTION,
    ) -> PgVectorIndex:
        """Create the store's schema and tables (refuses if a ragkit store is already there).

        ``conninfo`` is a libpq connection string or a ``postgresql://`` URL, whose optional
        ``schema=`` query parameter names the PostgreSQL schema (default ``ragkit``).
        """
        conninfo, url_schema = split_target(conninfo)
        schema = _check_schema(schema or url_schema)
        embedder, manifest = new_manifest(embedder, "hnsw", chunking)
        if manifest.dimension > MAX_HNSW_DIMENSION:
            raise IndexFormatError(
                f"embedder {embedder.name!r} gives {manifest.dimension} dimensions; pgvector's "
                f"HNSW index supports at most {MAX_HNSW_DIMENSION}"
            )
        if not (2 <= hnsw_m <= 100 and 4 <= hnsw_ef_construction <= 1000):
            raise RagkitError("hnsw_m must be in [2, 100] and hnsw_ef_construction in [4, 1000]")
        conn = connect(conninfo)
        try:
            version = _ensure_pgvector(conn, redact(conninfo))
            _register_vector(conn)
            _create_tables(
                conn,
                schema,
                manifest,
                text_search_config,
                hnsw_m,
                hnsw_ef_construction,
                redact(conninfo),
            )
        except BaseException:
            conn.close()
            raise
        return cls(conn, conninfo, schema, manifest, embedder, text_search_config, version)

    @classmethod
    def open(
        cls, conninfo: str, embedder: Embedder | str | None = None, schema: str | None = None
    ) -> PgVectorIndex:
        """Open an existing store; ``embedder`` defaults to the one recorded in it, and another
        embedder (or one of another dimension or backend) is refused, as by the file index."""
        conninfo, url_schema = split_target(conninfo)
        schema = _check_schema(schema or url_schema)
        conn = connect(conninfo)
        try:
            version = _ensure_pgvector(conn, redact(conninfo))
            _register_vector(conn)
            manifest, text_config = _read_meta(conn, schema, redact(conninfo))
            embedder = cls._resolve_embedder(manifest, embedder, _describe(conninfo, schema))
        except BaseException:
            conn.close()
            raise
        return cls(conn, conninfo, schema, manifest, embedder, text_config, version)

    @classmethod
    def open_or_create(
        cls,
        conninfo: str,
        embedder: Embedder | str | None = None,
        chunking: ChunkingSettings | None = None,
        schema: str | None = None,
    ) -> PgVectorIndex:
        """Open the store if the schema holds one (checking ``chunking``), else create it."""
        plain, url_schema = split_target(conninfo)
        schema = _check_schema(schema or url_schema)
        if store_exists(plain, schema):
            index = cls.open(plain, embedder, schema)
            try:
                cls._check_chunking(index.manifest, chunking, index.directory, "another schema")
            except IndexFormatError:
                index.close()
                raise
            return index
        return cls.create(plain, embedder, chunking, schema)

    @classmethod
    def drop(cls, conninfo: str, schema: str | None = None) -> bool:
        """Delete a store and everything in its schema; refuses schemas that are not a ragkit
        store. Returns whether there was one."""
        plain, url_schema = split_target(conninfo)
        schema = _check_schema(schema or url_schema)
        if not store_exists(plain, schema):
            return False
        from psycopg import sql

        with connect(plain) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
        return True

    @property
    def directory(self) -> str:
        """Where the store is, without the password: what configs and messages record."""
        return _describe(self._conninfo, self.schema)

    def close(self) -> None:
        self.conn.close()

    # -- SQL helpers --------------------------------------------------------------------------
    def _tables(self) -> dict[str, sql.Composable]:
        from psycopg import sql

        return {
            name: sql.Identifier(self.schema, name)
            for name in ("meta", "files", "documents", "chunks")
        }

    def _sql(self, template: str, **parts: sql.Composable) -> sql.Composed:
        """A statement with ``{files}``-style table names filled in as quoted identifiers."""
        from psycopg import sql

        return sql.SQL(template).format(**self._tables(), **parts)

    def _fetchall(self, template: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return list(self.conn.execute(self._sql(template), params).fetchall())

    def _fetchone(self, template: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        with self._lock:
            row = self.conn.execute(self._sql(template), params).fetchone()
        return tuple(row) if row is not None else None

    # -- writing ----------------------------------------------------------------------------
    # Staging is StagingStore's. A replaced or deleted file's documents are found at commit
    # (as they are then, not as they were when staged); a staged document replaces the one
    # with its id by an upsert.
    def commit(self) -> int:
        """Apply staged changes in one transaction; returns the number of chunks written.

        A deadlock or serialization failure with another writer rolls back and retries.
        """
        if not self._pending:
            return 0
        pg = _psycopg()
        pending = self._pending
        for attempt in range(_RETRIES):
            try:
                with self._lock, self.conn.transaction():
                    self._apply(pending)
                break
            except (pg.errors.DeadlockDetected, pg.errors.SerializationFailure):
                if attempt == _RETRIES - 1:
                    raise RagkitError(
                        f"could not commit to {self.directory}: conflicting writers kept "
                        f"deadlocking ({_RETRIES} attempts)"
                    ) from None
                time.sleep(0.05 * (attempt + 1))
        self._pending = StagedChanges()
        return len(pending.chunks)

    def _apply(self, pending: StagedChanges) -> None:
        from psycopg.types.json import Jsonb

        cur = self.conn.cursor()
        replaced_files = sorted(pending.files)
        # 1. lock the files' rows (fixed order): a concurrent writer of the same file waits here
        if replaced_files:
            cur.executemany(
                self._sql(
                    "INSERT INTO {files} (key, source, content_hash) VALUES (%s, %s, %s) "
                    "ON CONFLICT (key) DO UPDATE SET source = EXCLUDED.source, "
                    "content_hash = EXCLUDED.content_hash"
                ),
                [(key, *pending.files[key]) for key in replaced_files],
            )
        dropped_files = sorted(pending.delete_files)
        if replaced_files or dropped_files:
            # documents of replaced / deleted files, as committed now (chunks cascade)
            cur.execute(
                self._sql("DELETE FROM {documents} WHERE file_key = ANY(%s)"),
                [replaced_files + dropped_files],
            )
        if dropped_files:
            cur.execute(self._sql("DELETE FROM {files} WHERE key = ANY(%s)"), [dropped_files])
        if pending.delete_documents:
            cur.execute(
                self._sql("DELETE FROM {documents} WHERE id = ANY(%s)"),
                [sorted(pending.delete_documents)],
            )
        if not pending.documents:
            return
        documents = sorted(pending.documents, key=lambda item: item[0].id)
        # 2. upsert documents (row locks in id order), then swap their chunks
        cur.executemany(
            self._sql(
                "INSERT INTO {documents} (id, file_key, source, text, metadata) "
                "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (id) DO UPDATE SET "
                "file_key = EXCLUDED.file_key, source = EXCLUDED.source, text = EXCLUDED.text, "
                "metadata = EXCLUDED.metadata"
            ),
            [(d.id, key, d.source, d.text, Jsonb(d.metadata)) for d, key in documents],
        )
        cur.execute(
            self._sql("DELETE FROM {chunks} WHERE document_id = ANY(%s)"),
            [[d.id for d, _ in documents]],
        )
        vectors = pending.stacked_vectors(self.manifest.dimension)
        columns = ", ".join((*_CHUNK_COLUMNS, "embedding"))
        with cur.copy(self._sql(f"COPY {{chunks}} ({columns}) FROM STDIN (FORMAT BINARY)")) as copy:
            copy.set_types(["text", "text", "text", "int4", "int4", "text", "jsonb", "vector"])
            for chunk, vector in zip(pending.chunks, vectors, strict=True):
                copy.write_row(
                    (
                        chunk.id,
                        chunk.document_id,
                        chunk.text,
                        chunk.start,
                        chunk.end,
                        chunk.source,
                        Jsonb(chunk.metadata),
                        vector,
                    )
                )

    # -- reading ----------------------------------------------------------------------------
    def search_vector(
        self, vector: Vectors, k: int = 5, filters: Mapping[str, Any] | None = None
    ) -> list[Hit]:
        """Search by vector (HNSW, inner product = cosine); one statement, so one consistent
        snapshot even while others write."""
        query = self._query_vector(vector, k)
        where, params = filter_clause(self.schema, filters)
        # exact: ordering by an expression the HNSW index cannot serve forces a full scan in
        # every plan (a session setting such as enable_indexscan would not reach statements
        # whose plans psycopg has already prepared)
        order = "(embedding <#> %s) + 0" if self.exact_search else "embedding <#> %s"
        statement = self._sql(
            "SELECT id, document_id, text, start_offset, end_offset, source, metadata, "
            "embedding <#> %s AS distance FROM {chunks} WHERE {where} "
            f"ORDER BY {order} LIMIT %s",
            where=where,
        )
        with self._lock:
            self._set_ef_search(min(MAX_EF_SEARCH, max(self.ef_search, k)))
            rows = self.conn.execute(statement, [query, *params, query, k]).fetchall()
        return _hits(rows, "dense", negate=True)

    def search_lexical(
        self, query: str, k: int = 5, filters: Mapping[str, Any] | None = None
    ) -> list[Hit]:
        """Full-text search: chunks sharing any stemmed, non-stopword term with the query,
        ranked by ``ts_rank_cd`` (cover density, normalised by log length).

        Terms are OR-ed, like BM25 (``websearch_to_tsquery`` would AND them and return nothing
        for most natural-language questions). A query of stopwords only finds nothing.
        """
        check_query(query, k)
        where, params = filter_clause(self.schema, filters)
        # Each lexeme is quoted in tsquery syntax ('' for a quote, \\ for a backslash) and the
        # quoted lexemes are joined by |: the query text never becomes tsquery operators.
        statement = self._sql(
            "WITH lexemes AS ("
            "  SELECT unnest(tsvector_to_array(to_tsvector(%s::regconfig, %s))) AS lexeme"
            "), q AS ("
            "  SELECT string_agg("
            "    '''' || replace(replace(lexeme, '\\', '\\\\'), '''', '''''') || '''', ' | '"
            "  )::tsquery AS query FROM lexemes"
            ") "
            "SELECT id, document_id, text, start_offset, end_offset, source, metadata, "
            "ts_rank_cd(tsv, q.query, 1) AS score "
            "FROM {chunks}, q WHERE q.query IS NOT NULL AND tsv @@ q.query AND {where} "
            "ORDER BY score DESC, id LIMIT %s",
            where=where,
        )
        with self._lock:
            rows = self.conn.execute(
                statement, [self.text_search_config, query, *params, k]
            ).fetchall()
        return _hits(rows, "bm25", negate=False)

    def _set_ef_search(self, ef: int) -> None:
        if ef != self._session_ef:
            self.conn.execute("SELECT set_config('hnsw.ef_search', %s, false)", [str(ef)])
            self._session_ef = ef

    def vectors_of(self, chunk_ids: Sequence[str]) -> dict[str, Vectors]:
        """Stored embeddings of chunks (for MMR and other re-ranking without re-embedding)."""
        rows = self._fetchall(
            "SELECT id, embedding FROM {chunks} WHERE id = ANY(%s)", [list(chunk_ids)]
        )
        return {str(cid): _as_array(vec) for cid, vec in rows}

    def document(self, document_id: str) -> Document | None:
        row = self._fetchone(
            "SELECT id, source, text, metadata FROM {documents} WHERE id = %s", [document_id]
        )
        if row is None:
            return None
        return Document(id=row[0], source=row[1], text=row[2], metadata=row[3])

    def chunk(self, chunk_id: str) -> Chunk | None:
        row = self._fetchone(
            "SELECT id, document_id, text, start_offset, end_offset, source, metadata "
            "FROM {chunks} WHERE id = %s",
            [chunk_id],
        )
        return _row_to_chunk(row) if row else None

    def chunks_of_document(self, document_id: str) -> list[Chunk]:
        rows = self._fetchall(
            "SELECT id, document_id, text, start_offset, end_offset, source, metadata "
            "FROM {chunks} WHERE document_id = %s ORDER BY start_offset",
            [document_id],
        )
        return [_row_to_chunk(r) for r in rows]

    def iter_chunks(self, batch: int = 2000) -> Iterator[tuple[Chunk, Vectors]]:
        """Every chunk with its vector, in id order (export, comparisons, re-indexing)."""
        last = ""
        while True:
            rows = self._fetchall(
                "SELECT id, document_id, text, start_offset, end_offset, source, metadata, "
                "embedding FROM {chunks} WHERE id > %s ORDER BY id LIMIT %s",
                [last, batch],
            )
            if not rows:
                return
            for row in rows:
                yield _row_to_chunk(row), _as_array(row[7])
            last = rows[-1][0]

    def counts(self) -> IndexCounts:
        row = self._fetchone(
            "SELECT (SELECT count(*) FROM {files}), (SELECT count(*) FROM {documents}), "
            "(SELECT count(*) FROM {chunks})"
        )
        assert row is not None
        return IndexCounts(files=int(row[0]), documents=int(row[1]), chunks=int(row[2]))


# -- module helpers -----------------------------------------------------------------------------
def _describe(conninfo: str, schema: str) -> str:
    return f"{redact(conninfo)}?schema={schema}"


def _as_array(value: Any) -> np.ndarray:
    """A stored embedding as float32 numpy (pgvector's loader may give its ``Vector`` type)."""
    to_numpy = getattr(value, "to_numpy", None)
    return np.asarray(to_numpy() if to_numpy is not None else value, dtype=np.float32)


def _row_to_chunk(row: Sequence[Any]) -> Chunk:
    return Chunk(
        id=row[0],
        document_id=row[1],
        text=row[2],
        start=row[3],
        end=row[4],
        source=row[5],
        metadata=row[6],
    )


def _hits(rows: Sequence[Sequence[Any]], retriever: str, negate: bool) -> list[Hit]:
    return [
        Hit(
            chunk=_row_to_chunk(row),
            score=-float(row[7]) if negate else float(row[7]),
            rank=rank,
            retriever=retriever,
        )
        for rank, row in enumerate(rows)
    ]


def store_exists(conninfo: str, schema: str = DEFAULT_SCHEMA) -> bool:
    """Whether ``schema`` holds a ragkit store (its ``meta`` table)."""
    plain, _ = split_target(conninfo)
    with connect(plain) as conn:
        row = conn.execute(
            "SELECT to_regclass(%s) IS NOT NULL", [f'"{_check_schema(schema)}".meta']
        ).fetchone()
    return bool(row and row[0])


def _read_meta(conn: psycopg.Connection[Any], schema: str, where: str) -> tuple[IndexManifest, str]:
    from psycopg import sql

    exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", [f'"{schema}".meta']).fetchone()
    if not exists or not exists[0]:
        raise IndexFormatError(
            f"no ragkit store in schema {schema!r} of {where} (create one with ragkit index)"
        )
    rows = conn.execute(
        sql.SQL("SELECT key, value FROM {}").format(sql.Identifier(schema, "meta"))
    ).fetchall()
    meta = {str(k): str(v) for k, v in rows}
    version = meta.get("schema_version")
    if version != str(SCHEMA_VERSION):
        raise IndexFormatError(
            f"store in schema {schema!r} of {where} has schema version {version!r}; "
            f"this ragkit reads version {SCHEMA_VERSION}"
        )
    try:
        manifest = IndexManifest.model_validate_json(meta["manifest"])
    except (KeyError, ValueError) as exc:
        raise IndexFormatError(
            f"store in schema {schema!r} of {where} has an unreadable manifest: "
            f"{str(exc).splitlines()[0]}"
        ) from None
    return manifest, meta.get("text_search_config", DEFAULT_TEXT_SEARCH_CONFIG)


def _create_tables(
    conn: psycopg.Connection[Any],
    schema: str,
    manifest: IndexManifest,
    text_search_config: str,
    hnsw_m: int,
    hnsw_ef_construction: int,
    where: str,
) -> None:
    from psycopg import sql

    s = sql.Identifier(schema)
    config = conn.execute(
        "SELECT 1 FROM pg_ts_config WHERE cfgname = %s", [text_search_config]
    ).fetchone()
    if config is None:
        raise RagkitError(f"unknown PostgreSQL text search configuration {text_search_config!r}")
    with conn.transaction():
        # one creator at a time per schema; a second one then sees the first one's store
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [f"ragkit-store:{schema}"])
        exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", [f'"{schema}".meta']).fetchone()
        if exists and exists[0]:
            raise IndexFormatError(f"a ragkit store already exists in schema {schema!r} of {where}")
        statements = [
            sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(s),
            sql.SQL("CREATE TABLE {} (key text PRIMARY KEY, value text NOT NULL)").format(
                sql.Identifier(schema, "meta")
            ),
            sql.SQL(
                "CREATE TABLE {} (key text PRIMARY KEY, source text NOT NULL, "
                "content_hash text NOT NULL)"
            ).format(sql.Identifier(schema, "files")),
            sql.SQL(
                "CREATE TABLE {} (id text PRIMARY KEY, file_key text, source text NOT NULL, "
                "text text NOT NULL, metadata jsonb NOT NULL DEFAULT '{{}}')"
            ).format(sql.Identifier(schema, "documents")),
            sql.SQL("CREATE INDEX ON {} (file_key)").format(sql.Identifier(schema, "documents")),
            sql.SQL(
                "CREATE TABLE {chunks} (id text PRIMARY KEY, "
                "document_id text NOT NULL REFERENCES {documents} (id) ON DELETE CASCADE, "
                "text text NOT NULL, start_offset integer NOT NULL, end_offset integer NOT NULL, "
                "source text NOT NULL, metadata jsonb NOT NULL DEFAULT '{{}}', "
                "embedding vector({dim}) NOT NULL, "
                "tsv tsvector GENERATED ALWAYS AS (to_tsvector({config}::regconfig, text)) STORED)"
            ).format(
                chunks=sql.Identifier(schema, "chunks"),
                documents=sql.Identifier(schema, "documents"),
                dim=sql.Literal(int(manifest.dimension)),
                config=sql.Literal(text_search_config),
            ),
            sql.SQL("CREATE INDEX ON {} (document_id)").format(sql.Identifier(schema, "chunks")),
            sql.SQL(
                "CREATE INDEX ON {} USING hnsw (embedding vector_ip_ops) "
                "WITH (m = {}, ef_construction = {})"
            ).format(
                sql.Identifier(schema, "chunks"),
                sql.Literal(int(hnsw_m)),
                sql.Literal(int(hnsw_ef_construction)),
            ),
            sql.SQL("CREATE INDEX ON {} USING gin (tsv)").format(sql.Identifier(schema, "chunks")),
            # json_extract's view of a JSON value: booleans as 0/1, null as SQL NULL
            sql.SQL(
                "CREATE FUNCTION {} (j jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE "
                "PARALLEL SAFE AS $$ SELECT CASE jsonb_typeof(j) "
                "WHEN 'boolean' THEN to_jsonb(j::boolean::int) WHEN 'null' THEN NULL "
                "ELSE j END $$"
            ).format(sql.Identifier(schema, "sql_value")),
        ]
        for statement in statements:
            conn.execute(statement)
        meta = sql.Identifier(schema, "meta")
        manifest.created_at = manifest.updated_at = utc_now()
        for key, value in (
            ("schema_version", str(SCHEMA_VERSION)),
            ("manifest", manifest.model_dump_json()),
            ("text_search_config", text_search_config),
        ):
            conn.execute(
                sql.SQL("INSERT INTO {} (key, value) VALUES (%s, %s)").format(meta), [key, value]
            )
