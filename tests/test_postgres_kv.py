"""PostgresKV beyond the shared contracts: writes serialised across processes,
a server that goes away and comes back, bounded waits, long scans, and no
password in any message. Runs on the session's throwaway cluster."""

from __future__ import annotations

import multiprocessing
import socket
import subprocess
import sys
import threading
import time
import traceback

import pytest
import servers_pg
from servers_pg import PgServer

from engine.errors import LogServerUnavailableError, StoreError
from engine.storage.kv import Txn
from engine.storage.kv.postgres import PAGE, PostgresKV

pg_server = servers_pg.pg_server  # the fixture, for this module
DBS = ("events", "meta", "chunks")


def _increment(txn: Txn) -> int:
    n = int(txn.get("meta", b"counter") or b"0") + 1
    txn.put("meta", b"counter", b"%d" % n)
    return n


def _count_up(dsn: str, times: int) -> list[int]:
    """In another process: read-increment-write the counter ``times`` times."""
    kv = PostgresKV(dsn, DBS)
    try:
        return [kv.write(_increment) for _ in range(times)]
    finally:
        kv.close()


def _counter(kv: PostgresKV) -> int:
    with kv.snapshot() as txn:
        return int(txn.get("meta", b"counter") or b"0")


@pytest.fixture
def dsn(pg_server: PgServer) -> str:
    return pg_server.new_database("pgkv")


def test_writes_from_two_processes_are_serialised(dsn: str) -> None:
    kv = PostgresKV(dsn, DBS)
    try:
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(2) as pool:
            runs = [pool.apply_async(_count_up, (dsn, 200)) for _ in range(2)]
            seen = [n for r in runs for n in r.get(timeout=120)]
        assert sorted(seen) == list(range(1, 401)), "every increment saw the one before"
        assert _counter(kv) == 400
    finally:
        kv.close()


def test_writes_from_threads_are_serialised(dsn: str) -> None:
    kv = PostgresKV(dsn, DBS)
    try:
        threads = [
            threading.Thread(target=lambda: [kv.write(_increment) for _ in range(50)])
            for _ in range(4)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert _counter(kv) == 200
    finally:
        kv.close()


def test_a_stopped_server_fails_writes_fast_and_a_restart_recovers(
    pg_server: PgServer, dsn: str
) -> None:
    kv = PostgresKV(dsn, DBS, timeout=3)
    try:
        kv.write(_increment)
        pg_server.stop()
        try:
            t0 = time.monotonic()
            with pytest.raises(LogServerUnavailableError) as info:
                kv.write(_increment)
            assert time.monotonic() - t0 < 3 + 2
            message = str(info.value)
            assert "unreachable" in message and "nothing was written" in message, message
            assert f"127.0.0.1:{pg_server.port}/" in message, message
            with pytest.raises(LogServerUnavailableError), kv.snapshot() as txn:
                txn.get("meta", b"counter")
        finally:
            pg_server.start()
        assert _counter(kv) == 1, "the failed write left nothing"
        assert kv.write(_increment) == 2
    finally:
        kv.close()


def test_a_connection_dropped_inside_a_write_is_a_clear_error(
    pg_server: PgServer, dsn: str
) -> None:
    import psycopg

    kv = PostgresKV(dsn, DBS)
    try:

        def fn(txn: Txn) -> None:
            txn.put("meta", b"lost", b"1")
            txn.get("meta", b"counter")  # sends the put
            pid = txn.conn.info.backend_pid  # type: ignore[attr-defined]
            with psycopg.connect(pg_server.dsn(), autocommit=True) as other:
                other.execute("SELECT pg_terminate_backend(%s)", (pid,))
            txn.get("meta", b"counter")

        with pytest.raises(LogServerUnavailableError, match="nothing was written"):
            kv.write(fn)
        with kv.snapshot() as txn:
            assert txn.get("meta", b"lost") is None
        kv.write(_increment)
        assert _counter(kv) == 1
    finally:
        kv.close()


def test_the_write_lock_wait_is_bounded(dsn: str) -> None:
    holder = PostgresKV(dsn, DBS)
    waiter = PostgresKV(dsn, DBS, timeout=1)
    try:
        held = threading.Event()
        release = threading.Event()

        def hold(txn: Txn) -> None:
            held.set()
            release.wait(30)

        t = threading.Thread(target=holder.write, args=(hold,))
        t.start()
        try:
            assert held.wait(10)
            t0 = time.monotonic()
            with pytest.raises(StoreError, match="timed out after 1 s"):
                waiter.write(_increment)
            assert time.monotonic() - t0 < 3
        finally:
            release.set()
            t.join()
        assert waiter.write(_increment) == 1
    finally:
        waiter.close()
        holder.close()


def test_long_scans_stream_in_key_order(dsn: str) -> None:
    kv = PostgresKV(dsn, DBS)
    n = PAGE * 2 + 500
    keys = [b"k%06d" % i for i in range(n)]
    try:
        kv.write(lambda t: [t.put("events", k, k[::-1]) for k in keys])
        kv.write(lambda t: t.put("events", b"l", b"after the prefix"))
        with kv.snapshot() as txn:
            got = [k for k, _ in txn.scan("events", prefix=b"k")]
            assert got == keys
            back = list(txn.scan("events", b"k000100", b"k020200", reverse=True))
            assert [k for k, _ in back] == keys[100:20200][::-1]
            assert all(v == k[::-1] for k, v in back)
            # other reads in the same transaction while a scan is under way
            for i, (k, _) in enumerate(txn.scan("events", prefix=b"k")):
                if i % 5000 == 0:
                    assert txn.get("events", k) == k[::-1]
            assert txn.count("events") == n + 1
    finally:
        kv.close()


def test_scans_of_large_values_page_by_size(dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.storage.kv import postgres

    monkeypatch.setattr(postgres, "PAGE_BYTES", 1 << 20)
    kv = PostgresKV(dsn, DBS)
    value = b"x" * (100 << 10)
    try:
        kv.write(lambda t: [t.put("chunks", b"%04d" % i, value) for i in range(300)])
        with kv.snapshot() as txn:
            assert [k for k, _ in txn.scan("chunks")] == [b"%04d" % i for i in range(300)]
            got = [k for k, _ in txn.scan("chunks", b"0010", b"0290", reverse=True)]
            assert got == [b"%04d" % i for i in range(289, 9, -1)]
    finally:
        kv.close()


def test_a_write_sees_its_buffered_puts(dsn: str) -> None:
    kv = PostgresKV(dsn, DBS)
    try:

        def fn(txn: Txn) -> tuple[object, ...]:
            for i in range(5000):  # more than one batch
                txn.put("chunks", b"%05d" % i, b"x")
            txn.put("chunks", b"00001", b"y")
            deleted = txn.delete("chunks", b"00002"), txn.delete("chunks", b"00002")
            txn.put("meta", b"m", b"1")
            txn.drop("meta")
            return txn.get("chunks", b"00001"), deleted, txn.count("chunks"), txn.count("meta")

        assert kv.write(fn) == (b"y", (True, False), 4999, 0)
        with kv.snapshot() as txn:
            assert txn.get("chunks", b"00001") == b"y" and txn.get("meta", b"m") is None
    finally:
        kv.close()


def test_a_password_never_appears_in_a_message(pg_server: PgServer) -> None:
    secret = "pw-Zq81-never-shown"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dsns = [
        f"postgresql://postgres:{secret}@127.0.0.1:{port}/nowhere",
        f"host=127.0.0.1 port={port} user=postgres password={secret} dbname=nowhere",
        f"postgresql://postgres:{secret}@127.0.0.1:{pg_server.port}/no_such_database",
    ]
    for dsn in dsns:
        with pytest.raises(LogServerUnavailableError) as info:
            PostgresKV(dsn, DBS, timeout=2)
        text = "".join(traceback.format_exception(info.value))
        assert secret not in text, text
        assert "postgresql://127.0.0.1:" in str(info.value)
    with pytest.raises(StoreError) as bad:
        PostgresKV(f"postgresql://postgres:{secret}@[bad", DBS)
    assert secret not in "".join(traceback.format_exception(bad.value))


def test_importing_engine_does_not_import_psycopg() -> None:
    code = "import sys, engine, engine.storage.kv; print('psycopg' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stdout + out.stderr


def test_the_cluster_is_local_and_durable(pg_server: PgServer) -> None:
    import psycopg

    with psycopg.connect(pg_server.dsn()) as conn:
        settings = {
            name: conn.execute(f"SHOW {name}").fetchone()
            for name in ("fsync", "synchronous_commit", "listen_addresses")
        }
    assert settings == {
        "fsync": ("on",),
        "synchronous_commit": ("on",),
        "listen_addresses": ("127.0.0.1",),
    }


def test_closed_kv_says_so(dsn: str) -> None:
    kv = PostgresKV(dsn, DBS)
    kv.close()
    with pytest.raises(StoreError, match="closed"):
        kv.write(_increment)
