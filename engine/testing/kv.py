"""``KVContract``: what every :class:`~engine.storage.kv.KV` backend must do.

Subclass it with a ``make_kv(tmp_path)`` returning a new, empty KV declaring
the engine's databases (:data:`~engine.projections.STORE_DATABASES`); for a
``persistent`` backend, calling it again with the same ``tmp_path`` (after
the first one is closed) must reopen the same data. For a ``multi_process``
backend the subclass must be importable by a child process (a module-level
class in a test module is), which builds one and calls the hook again.
"""

from __future__ import annotations

import contextlib
import multiprocessing
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.errors import StoreError
from engine.projections.schema import STORE_DATABASES as DATABASES
from engine.storage.kv import KV, Txn

# Keys chosen to test ordering at the byte level (0x00 and 0xff edges, prefixes);
# the empty key is not among them (LMDB refuses it).
KEYS = [b"\x00", b"a", b"a\x00", b"a\xff", b"a\xff\xff", b"ab", b"b", b"\xff", b"\xff\xff"]


class _BoomError(Exception):
    pass


def _child_round_trip(contract: type[KVContract], tmp_path: Path) -> bytes | None:
    """In another process: read the parent's key, then write one back."""
    kv = contract().make_kv(tmp_path)
    try:
        with kv.snapshot() as txn:
            seen = txn.get("meta", b"parent")
        kv.write(lambda t: t.put("meta", b"child", b"hello from the child"))
        return seen
    finally:
        kv.close()


class KVContract(ABC):
    """The KV contract as pytest tests; subclass per backend with :meth:`make_kv`."""

    @abstractmethod
    def make_kv(self, tmp_path: Path) -> KV:
        """A new KV (empty on the first call for ``tmp_path``)."""

    # -- helpers ---------------------------------------------------------------
    def open_kv(self, tmp_path: Path) -> KV:
        """:meth:`make_kv`, closed again after the test."""
        kv = self.make_kv(tmp_path)
        self.__dict__.setdefault("_opened", []).append(kv)
        return kv

    def teardown_method(self, method: Any) -> None:
        for kv in reversed(self.__dict__.pop("_opened", [])):
            kv.close()

    def filled(self, tmp_path: Path, db: str = "meta") -> KV:
        kv = self.open_kv(tmp_path)

        def fill(txn: Txn) -> None:
            for i, k in enumerate(reversed(KEYS)):
                txn.put(db, k, b"v%d" % i)

        kv.write(fill)
        return kv

    @staticmethod
    def read_all(kv: KV, db: str) -> list[tuple[bytes, bytes]]:
        with kv.snapshot() as txn:
            return list(txn.scan(db))

    # -- declaration and flags --------------------------------------------------
    def test_declares_the_engine_databases(self, tmp_path: Path) -> None:
        kv = self.open_kv(tmp_path)
        assert set(DATABASES) <= set(kv.databases)
        assert isinstance(kv.persistent, bool)
        assert isinstance(kv.multi_process, bool)
        assert not kv.multi_process or kv.persistent, "another process needs the data to outlive us"

    def test_unknown_database_is_an_error_naming_it(self, tmp_path: Path) -> None:
        kv = self.open_kv(tmp_path)
        attempts: list[Callable[[Txn], object]] = [
            lambda t: t.get("no_such_db", b"k"),
            lambda t: t.put("no_such_db", b"k", b"v"),
            lambda t: t.delete("no_such_db", b"k"),
            lambda t: list(t.scan("no_such_db")),
            lambda t: t.drop("no_such_db"),
            lambda t: t.count("no_such_db"),
        ]
        for attempt in attempts:
            try:
                kv.write(attempt)
            except StoreError as e:
                assert "no_such_db" in str(e)
            else:
                raise AssertionError("an undeclared database was accepted")
        with kv.snapshot() as txn:
            for read in (attempts[0], attempts[3], attempts[5]):
                try:
                    read(txn)
                except StoreError as e:
                    assert "no_such_db" in str(e)
                else:
                    raise AssertionError("an undeclared database was accepted")
        assert "no_such_db" not in kv.databases

    # -- get / put / delete -----------------------------------------------------
    def test_get_put_delete(self, tmp_path: Path) -> None:
        kv = self.open_kv(tmp_path)
        with kv.snapshot() as txn:
            assert txn.get("meta", b"k") is None
        kv.write(lambda t: t.put("meta", b"k", b"one"))
        kv.write(lambda t: t.put("meta", b"k", b"two"))
        with kv.snapshot() as txn:
            assert txn.get("meta", b"k") == b"two"
            assert txn.get("events", b"k") is None, "databases are separate"
        assert kv.write(lambda t: t.delete("meta", b"k")) is True
        assert kv.write(lambda t: t.delete("meta", b"k")) is False
        with kv.snapshot() as txn:
            assert txn.get("meta", b"k") is None

    def test_write_returns_and_sees_its_own_changes(self, tmp_path: Path) -> None:
        kv = self.open_kv(tmp_path)

        def fn(txn: Txn) -> tuple[bytes | None, int, list[bytes]]:
            txn.put("meta", b"b", b"2")
            txn.put("meta", b"a", b"1")
            txn.delete("meta", b"b")
            return txn.get("meta", b"a"), txn.count("meta"), [k for k, _ in txn.scan("meta")]

        assert kv.write(fn) == (b"1", 1, [b"a"])

    def test_values_round_trip_as_bytes(self, tmp_path: Path) -> None:
        kv = self.open_kv(tmp_path)
        big = bytes(range(256)) * 4096
        kv.write(lambda t: (t.put("meta", b"empty", b""), t.put("meta", b"big", big)))
        with kv.snapshot() as txn:
            assert txn.get("meta", b"empty") == b""
            got = txn.get("meta", b"big")
            assert type(got) is bytes and got == big

    # -- scan ---------------------------------------------------------------------
    def test_scan_in_byte_order(self, tmp_path: Path) -> None:
        kv = self.filled(tmp_path)
        with kv.snapshot() as txn:
            assert [k for k, _ in txn.scan("meta")] == sorted(KEYS)
            assert [k for k, _ in txn.scan("meta", reverse=True)] == sorted(KEYS, reverse=True)
            assert dict(txn.scan("meta"))[b"\xff\xff"] == b"v0"

    def test_scan_bounds(self, tmp_path: Path) -> None:
        kv = self.filled(tmp_path)
        ordered = sorted(KEYS)
        cases = [(b"a", b"b"), (b"a\x00", None), (None, b"a"), (b"0", b"az"), (b"b", b"b")]
        with kv.snapshot() as txn:
            for start, stop in cases:
                want = [
                    k
                    for k in ordered
                    if (start is None or k >= start) and (stop is None or k < stop)
                ]
                assert [k for k, _ in txn.scan("meta", start, stop)] == want, (start, stop)
                got = [k for k, _ in txn.scan("meta", start, stop, reverse=True)]
                assert got == want[::-1], (start, stop, "reverse")

    def test_scan_prefix(self, tmp_path: Path) -> None:
        kv = self.filled(tmp_path)
        ordered = sorted(KEYS)
        with kv.snapshot() as txn:
            for prefix in (b"a", b"a\xff", b"\xff", b"\xff\xff", b"zz", b"\x00"):
                want = [k for k in ordered if k.startswith(prefix)]
                assert [k for k, _ in txn.scan("meta", prefix=prefix)] == want, prefix
                got = [k for k, _ in txn.scan("meta", prefix=prefix, reverse=True)]
                assert got == want[::-1], (prefix, "reverse")
            # start/stop narrow a prefix further
            assert [k for k, _ in txn.scan("meta", b"a\x01", prefix=b"a")] == [
                b"ab",
                b"a\xff",
                b"a\xff\xff",
            ]
            assert [k for k, _ in txn.scan("meta", None, b"a\xff", prefix=b"a")] == [
                b"a",
                b"a\x00",
                b"ab",
            ]

    def test_last_below(self, tmp_path: Path) -> None:
        kv = self.filled(tmp_path)
        with kv.snapshot() as txn:
            pairs = list(txn.scan("meta"))
            for stop in [*KEYS, b"", b"a\x01", b"\xff\xff\xff"]:
                for start in [b"", *KEYS]:
                    below = [p for p in pairs if start <= p[0] < stop]
                    want = below[-1] if below else None
                    assert txn.last_below("meta", stop, start) == want, (stop, start)
            assert txn.last_below("chunks", b"z", b"") is None

    def test_put_many_in_key_order(self, tmp_path: Path) -> None:
        kv = self.open_kv(tmp_path)
        items = [(k, b"v" + k) for k in sorted(KEYS)]
        kv.write(lambda t: t.put_many("chunks", items))  # into an empty database
        assert self.read_all(kv, "chunks") == items
        more = [(b"a\x00\x00", b"1"), (b"ab", b"2"), (b"c", b"3")]
        kv.write(lambda t: t.put_many("chunks", more))  # among existing keys, replacing one
        assert self.read_all(kv, "chunks") == sorted(dict(items + more).items())

    def test_scan_of_an_empty_database(self, tmp_path: Path) -> None:
        kv = self.open_kv(tmp_path)
        with kv.snapshot() as txn:
            assert list(txn.scan("meta")) == []
            assert list(txn.scan("meta", reverse=True)) == []
            assert list(txn.scan("meta", b"a", b"b", prefix=b"a")) == []

    # -- drop / count -------------------------------------------------------------
    def test_count_and_drop(self, tmp_path: Path) -> None:
        kv = self.filled(tmp_path)
        kv.write(lambda t: t.put("events", b"x", b"y"))
        with kv.snapshot() as txn:
            assert txn.count("meta") == len(KEYS)
            assert txn.count("chunks") == 0
        kv.write(lambda t: t.drop("meta"))
        with kv.snapshot() as txn:
            assert txn.count("meta") == 0
            assert list(txn.scan("meta")) == []
            assert txn.get("events", b"x") == b"y", "drop empties one database only"
        kv.write(lambda t: t.put("meta", b"again", b"1"))
        assert self.read_all(kv, "meta") == [(b"again", b"1")]

    # -- atomicity and isolation -----------------------------------------------------
    def test_a_failed_write_changes_nothing(self, tmp_path: Path) -> None:
        kv = self.filled(tmp_path)
        kv.write(lambda t: t.put("events", b"e", b"1"))
        before = self.read_all(kv, "meta"), self.read_all(kv, "events")

        def fn(txn: Txn) -> None:
            txn.put("meta", b"a", b"changed")
            txn.put("meta", b"new", b"added")
            txn.delete("meta", b"b")
            txn.drop("events")
            txn.put("events", b"f", b"2")
            raise _BoomError

        try:
            kv.write(fn)
        except _BoomError:
            pass
        else:
            raise AssertionError("the write's exception was swallowed")
        assert (self.read_all(kv, "meta"), self.read_all(kv, "events")) == before
        kv.write(lambda t: t.put("meta", b"after", b"ok"))
        assert len(self.read_all(kv, "meta")) == len(KEYS) + 1

    def test_a_failed_write_while_a_snapshot_is_open(self, tmp_path: Path) -> None:
        kv = self.filled(tmp_path)
        before = self.read_all(kv, "meta")

        def fn(txn: Txn) -> None:
            txn.put("meta", b"a", b"changed")
            txn.drop("meta")
            raise _BoomError

        with kv.snapshot() as txn:
            with contextlib.suppress(_BoomError):
                kv.write(fn)
            assert list(txn.scan("meta")) == before
        assert self.read_all(kv, "meta") == before

    def test_a_snapshot_does_not_see_later_writes(self, tmp_path: Path) -> None:
        kv = self.filled(tmp_path)
        kv.write(lambda t: t.put("events", b"e", b"old"))
        meta = self.read_all(kv, "meta")
        with kv.snapshot() as txn:
            kv.write(lambda t: t.put("events", b"e", b"new"))
            kv.write(lambda t: (t.put("meta", b"added", b"x"), t.delete("meta", b"a")))
            kv.write(lambda t: t.drop("chunks"))
            assert txn.get("events", b"e") == b"old"
            assert list(txn.scan("meta")) == meta
            assert txn.count("meta") == len(KEYS)
            with kv.snapshot() as later:
                assert later.get("events", b"e") == b"new"
                assert later.get("meta", b"added") == b"x"
        with kv.snapshot() as txn:
            assert txn.get("events", b"e") == b"new"
            assert txn.count("meta") == len(KEYS)

    def test_many_snapshots_at_once(self, tmp_path: Path) -> None:
        kv = self.open_kv(tmp_path)
        seen: list[Txn] = []
        snaps = []
        for i in range(5):
            value = b"%d" % i
            kv.write(lambda t: t.put("meta", b"n", value))  # noqa: B023 - run at once
            snap = kv.snapshot()
            snaps.append(snap)
            seen.append(snap.__enter__())
        try:
            assert [t.get("meta", b"n") for t in seen] == [b"%d" % i for i in range(5)]
        finally:
            for snap in reversed(snaps):
                snap.__exit__(None, None, None)

    def test_a_snapshot_is_released(self, tmp_path: Path) -> None:
        kv = self.open_kv(tmp_path)
        for i in range(1000):  # more than any reader table holds, if not released
            with kv.snapshot() as txn:
                txn.get("meta", b"k")
            if i % 100 == 0:
                value = b"%d" % i
                kv.write(lambda t: t.put("meta", b"k", value))  # noqa: B023 - run at once
        try:
            with kv.snapshot() as txn:
                raise _BoomError
        except _BoomError:
            pass
        kv.write(lambda t: t.put("meta", b"k", b"last"))
        with kv.snapshot() as txn:
            assert txn.get("meta", b"k") == b"last"

    # -- capability flags ---------------------------------------------------------
    def test_persistent_means_a_reopen_reads_it_back(self, tmp_path: Path) -> None:
        kv = self.make_kv(tmp_path)
        try:
            kv.write(lambda t: (t.put("meta", b"k", b"kept"), t.put("chunks", b"c", b"d")))
        finally:
            kv.close()
        again = self.open_kv(tmp_path)
        with again.snapshot() as txn:
            if kv.persistent:
                assert txn.get("meta", b"k") == b"kept"
                assert txn.get("chunks", b"c") == b"d"
            else:
                assert txn.count("meta") == 0, "a new non-persistent KV starts empty"

    def test_multi_process_means_another_process_shares_it(self, tmp_path: Path) -> None:
        kv = self.open_kv(tmp_path)
        if not kv.multi_process:
            import pytest

            pytest.skip(f"{type(kv).__name__} is not multi_process")
        kv.write(lambda t: t.put("meta", b"parent", b"hello from the parent"))
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(1) as pool:
            seen = pool.apply(_child_round_trip, (type(self), tmp_path))
        assert seen == b"hello from the parent"
        with kv.snapshot() as txn:
            assert txn.get("meta", b"child") == b"hello from the child"
