"""The read path's shortcuts answer exactly what the general code answers.

A catalog read is a small class rather than a generator context, and an LMDB
prefix scan computes its range without ``bounds()`` in the common case: the
snapshot is still released on every exit, decoding errors still become
``IntegrityError``, and prefix scans still return exactly the keys that start
with the prefix, in either order.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import Store
from engine.errors import ArtifactNotFoundError, IntegrityError
from engine.projections import STORE_DATABASES
from engine.storage.kv import KV, LmdbKV, MemoryKV, Txn

_KEYS = st.binary(min_size=0, max_size=4)


@pytest.fixture(scope="module")
def lmdb_kv(tmp_path_factory: pytest.TempPathFactory) -> LmdbKV:
    return LmdbKV(tmp_path_factory.mktemp("read-path") / "ledger", STORE_DATABASES)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(keys=st.sets(_KEYS.filter(bool), max_size=40), prefixes=st.lists(_KEYS, max_size=6))
def test_lmdb_prefix_scans_equal_a_model(
    lmdb_kv: LmdbKV, keys: set[bytes], prefixes: list[bytes]
) -> None:
    def fill(txn: Txn) -> None:
        txn.drop("meta")
        for k in keys:
            txn.put("meta", k, k[::-1])

    lmdb_kv.write(fill)
    ordered = sorted(keys)
    with lmdb_kv.snapshot() as txn:
        for prefix in [*prefixes, b"\xff", b"\x00", b"a\xff"]:
            want = [(k, k[::-1]) for k in ordered if k.startswith(prefix)]
            assert list(txn.scan("meta", prefix=prefix)) == want, prefix
            assert list(txn.scan("meta", prefix=prefix, reverse=True)) == want[::-1], prefix
            if want:  # start/stop narrowing a prefix still take the general path
                lo = want[len(want) // 2][0]
                assert [k for k, _ in txn.scan("meta", lo, prefix=prefix)] == [
                    k for k, _ in want if k >= lo
                ]


def _live_reads(kv: LmdbKV) -> int:
    return sum(
        1 for line in kv.env.readers().splitlines()[1:] if line.split() and line.split()[-1] != "-"
    )


def test_catalog_read_releases_its_snapshot_and_translates_damage(tmp_path: Path) -> None:
    with Store.open(tmp_path / "s") as store:
        store.save_artifact({"a": 1}, "cfg")
        art = store.get_artifact("cfg")
        kv = store.ledger.kv
        assert isinstance(kv, LmdbKV)
        catalog = store.catalog
        before = _live_reads(kv)
        with pytest.raises(IntegrityError, match="cannot be decoded"), catalog._read() as txn:
            assert txn.get("artifacts", art.id.encode()) is not None
            b"\xff".decode()  # a decoding error inside a read
        with pytest.raises(ArtifactNotFoundError), catalog._read():
            raise ArtifactNotFoundError("passes through unchanged")
        with pytest.raises(RuntimeError), catalog._read():
            raise RuntimeError("not a decoding error: unchanged")
        assert _live_reads(kv) == before
        # A read begun before a commit does not see it; the next read does.
        with catalog._read() as old:
            store.save_artifact({"a": 2}, "cfg")
            assert len(list(old.scan("names", prefix=b"cfg\x00"))) == 1
        assert store.get_artifact("cfg").version == 2


def test_reads_from_two_threads_see_their_own_snapshots(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "s")
    store.save_artifact({"a": 1}, "cfg")
    seen: list[int] = []
    began, committed = threading.Event(), threading.Event()

    def reader() -> None:
        with store.catalog._read() as txn:
            began.set()
            committed.wait(10)
            seen.append(len(list(txn.scan("names", prefix=b"cfg\x00"))))
        seen.append(store.get_artifact("cfg").version)

    t = threading.Thread(target=reader)
    t.start()
    began.wait(10)
    store.save_artifact({"a": 2}, "cfg")
    committed.set()
    t.join(10)
    store.close()
    assert seen == [1, 2]


@pytest.mark.parametrize("make", [MemoryKV, None], ids=["memory", "lmdb"])
def test_cache_lookup_by_prefix_ignores_longer_keys(make: object, tmp_path: Path) -> None:
    """The cache scan's prefix (key + NUL) never matches another key that
    starts with the same characters."""
    from engine.pipelines.cache import lookup

    store = Store.open(tmp_path / "s") if make is None else Store.memory()
    with store:
        kv: KV = store.ledger.kv

        def put(txn: Txn) -> None:
            txn.put("cache", b"abc1\x00" + (7).to_bytes(8, "big"), b"s-missing")

        kv.write(put)
        assert lookup(store, "abc") is None
        assert lookup(store, "abc1") is None  # the step record is missing: no hit
