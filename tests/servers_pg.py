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
import os
import shutil
from collections.abc import Iterator

import pytest

from bench.servers import BIN, PgServer

__all__ = ["PgServer", "pg_server", "shared_server"]

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
