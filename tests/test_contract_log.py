"""The event log passes its contract (engine.testing.log) on every KV backend."""

from __future__ import annotations

from pathlib import Path

from pg_contract import PostgresFactory
from servers_pg import pg_server  # noqa: F401 - the fixture

from engine.projections import STORE_DATABASES
from engine.storage.kv import KV, LmdbKV, MemoryKV
from engine.testing.log import LogContract


class TestLogOnMemoryKV(LogContract):
    def make_kv(self, tmp_path: Path) -> KV:
        return MemoryKV(STORE_DATABASES)


class TestLogOnLmdbKV(LogContract):
    def make_kv(self, tmp_path: Path) -> KV:
        return LmdbKV(tmp_path / "ledger", STORE_DATABASES)


class TestLogOnPostgresKV(PostgresFactory, LogContract):
    pass
