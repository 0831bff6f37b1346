"""A throwaway PostgreSQL 15 cluster for the tests that need a real server.

``pg_server`` (session-scoped) runs Debian's binaries as user ``postgres``
with a fresh data directory under /tmp, trust authentication, listening on
127.0.0.1 at a free port only (its unix socket inside the data directory),
fsync left on. The cluster is started once per test process (every module
that imports the fixture shares it) and stopped by pid when the session
ends, pass or fail. Tests skip when the binaries are missing.

Import it into a test module: ``from servers_pg import pg_server``.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

BIN = Path(os.environ.get("ARTLEDGER_PG_BIN", "/usr/lib/postgresql/15/bin"))
USER = "postgres"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie left for init to reap does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


class PgServer:
    """One cluster: :meth:`dsn`, :meth:`create_database`, :meth:`stop`, :meth:`start`."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.root = Path(tempfile.mkdtemp(prefix="artledger-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.pid: int | None = None
        self.startup_seconds = 0.0
        self._databases = 0
        shutil.chown(self.root, USER, USER)
        t0 = time.monotonic()
        self._as_postgres(
            BIN / "initdb",
            "-D",
            str(self.data),
            "-A",
            "trust",
            "-U",
            USER,
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",  # the cluster is thrown away; commits below still fsync
        )
        self.start()
        self.startup_seconds = time.monotonic() - t0

    def _as_postgres(self, *argv: object, timeout: float = 60) -> str:
        cmd = ["runuser", "-u", USER, "--", *map(str, argv)]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        if out.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({out.returncode}): {out.stderr}")
        return out.stdout

    def dsn(self, dbname: str = "postgres") -> str:
        """The URL of database ``dbname`` on this cluster."""
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{dbname}"

    def create_database(self, name: str) -> str:
        """Create database ``name`` (fresh) and return its DSN."""
        import psycopg

        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def new_database(self, prefix: str = "t") -> str:
        """A fresh database with a unique name; its DSN."""
        self._databases += 1
        return self.create_database(f"{prefix}_{os.getpid()}_{self._databases}")

    def start(self) -> None:
        """Start the cluster (again: same port, same data); wait until it accepts connections."""
        opts = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.data} "
            "-c fsync=on -c synchronous_commit=on -c max_connections=200 "
            "-c shared_buffers=64MB"
        )
        self._as_postgres(
            BIN / "pg_ctl", "-D", self.data, "-l", self.log, "-o", opts, "-w", "-t", "30", "start"
        )
        pidfile = self.data / "postmaster.pid"
        self.pid = int(pidfile.read_text().split()[0])

    def stop(self) -> None:
        """Stop the cluster at once (``pg_ctl stop -m immediate``; SIGKILL if that fails)."""
        pid, self.pid = self.pid, None
        if pid is None:
            return
        try:
            self._as_postgres(BIN / "pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop")
        except (RuntimeError, subprocess.TimeoutExpired):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.01)

    def destroy(self) -> None:
        """Stop the cluster and remove its files."""
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


_SERVER: PgServer | None = None
_OWNER = os.getpid()


def _cleanup() -> None:
    global _SERVER
    if _SERVER is not None and os.getpid() == _OWNER:
        server, _SERVER = _SERVER, None
        server.destroy()


atexit.register(_cleanup)


def shared_server() -> PgServer:
    """The cluster of this test process, started on first use."""
    global _SERVER
    if not (BIN / "postgres").exists() or shutil.which("runuser") is None:
        pytest.skip(f"PostgreSQL 15 is not installed ({BIN}/postgres missing) or runuser is absent")
    if os.geteuid() != 0:
        pytest.skip("starting a PostgreSQL cluster as user postgres needs root (runuser)")
    if _SERVER is None:
        _SERVER = PgServer()
    elif _SERVER.pid is None:
        _SERVER.start()  # a test stopped it and failed before starting it again
    return _SERVER


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """A running PostgreSQL 15 cluster, stopped at the end of the session."""
    yield shared_server()
    _cleanup()
