"""The PostgresKV factory the contract suites share: one fresh database per
``tmp_path``, its DSN kept in ``tmp_path`` so that a reopen (and a child
process given the same ``tmp_path``) finds the same data."""

from __future__ import annotations

from pathlib import Path

import pytest
from servers_pg import PgServer, shared_server

from engine.projections import STORE_DATABASES
from engine.storage.kv import KV


class PostgresFactory:
    """Mixin: ``make_kv(tmp_path)`` on the test session's PostgreSQL cluster."""

    pg: PgServer | None = None

    @pytest.fixture(autouse=True)
    def _pg(self, pg_server: PgServer) -> None:
        self.pg = pg_server

    def make_kv(self, tmp_path: Path) -> KV:
        from engine.storage.kv.postgres import PostgresKV

        tmp_path.mkdir(parents=True, exist_ok=True)
        marker = tmp_path / "pg.dsn"
        if not marker.exists():
            server = self.pg or shared_server()
            marker.write_text(server.new_database("kv"))
        return PostgresKV(marker.read_text(), STORE_DATABASES)
