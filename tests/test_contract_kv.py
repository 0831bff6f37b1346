"""Every KV backend passes the KV contract (engine.testing.kv)."""

from __future__ import annotations

from pathlib import Path

from pg_contract import PostgresFactory
from servers_pg import pg_server  # noqa: F401 - the fixture

from engine.errors import StoreError
from engine.projections import STORE_DATABASES
from engine.storage.kv import KV, LmdbKV, MemoryKV
from engine.testing.kv import KVContract


class TestMemoryKV(KVContract):
    def make_kv(self, tmp_path: Path) -> KV:
        return MemoryKV(STORE_DATABASES)


class TestLmdbKV(KVContract):
    def make_kv(self, tmp_path: Path) -> KV:
        return LmdbKV(tmp_path / "ledger", STORE_DATABASES)


class TestPostgresKV(PostgresFactory, KVContract):
    pass


def test_lmdb_kv_writes_named_lmdb_databases(tmp_path: Path) -> None:
    """The back door: what LmdbKV wrote is in LMDB's named databases."""
    import lmdb

    kv = LmdbKV(tmp_path / "ledger", STORE_DATABASES)
    kv.write(lambda t: (t.put("meta", b"k", b"v"), t.put("chunks", b"c", b"d")))
    kv.close()
    env = lmdb.open(str(tmp_path / "ledger"), max_dbs=64, readonly=True, lock=False)
    try:
        with env.begin() as txn:
            assert txn.get(b"k", db=env.open_db(b"meta", txn=txn, create=False)) == b"v"
            assert txn.get(b"c", db=env.open_db(b"chunks", txn=txn, create=False)) == b"d"
    finally:
        env.close()


def test_declared_databases(tmp_path: Path) -> None:
    """A KV built with its own list of databases has exactly those."""
    for kv in (MemoryKV(["one", "two"]), LmdbKV(tmp_path / "l", ["one", "two"])):
        try:
            assert kv.databases == ("one", "two")
            kv.write(lambda t: t.put("two", b"k", b"v"))
            with kv.snapshot() as txn:
                assert txn.get("two", b"k") == b"v"
                try:
                    txn.get("meta", b"k")
                except StoreError as e:
                    assert "'meta'" in str(e) and "one, two" in str(e)
                else:
                    raise AssertionError("an undeclared database was accepted")
        finally:
            kv.close()
