"""The temporal index: ``as_of`` views read the projections as they stood, without folding.

Views read ``history`` (every projection write, stamped with its event); these
tests check them against a fresh fold of the log prefix at every point of a
small store with keys holding NULs, deletes and rewrites, then the ways a store
can be without the index (older stores), with a damaged one, and the batched
fold that rebuild uses.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from engine import Store, pipeline, step
from engine.errors import StoreError
from engine.projections import fold
from engine.projections.asof import AsOfKV
from engine.projections.batch import BatchTxn
from engine.projections.schema import LIVE_DBS, SEQ_KEYED_DBS, STORE_DATABASES
from engine.projections.temporal import (
    HISTORY,
    TEMPORAL_META,
    TemporalTxn,
    bound,
    entry_key,
    escape,
    stem_key,
)
from engine.query.history import HistoricalView, folded
from engine.query.pages import advance
from engine.storage.kv import MemoryKV


@step
def tm_double(x: int) -> int:
    return 2 * x


@pipeline
def tm_pipe(x: int = 1) -> None:
    tm_double(x=x)


def _grow(store: Store) -> None:
    """A little of everything (keys hold NULs: name NUL seq), rewrites, deletes."""
    a = store.save_artifact({"x": 1}, name="a", tags=["best"])
    store.save_artifact([1, 2], name="a/b")
    store.save_artifact("ü", name="ünï", version="gold")
    store.tag(a, "prod")
    store.run(tm_pipe, x=3)
    store.log_metadata(a, {"loss": 0.5})
    b = store.save_artifact({"x": 2}, name="a")
    store.untag(a, "best")
    run = store.run(tm_pipe, x=4)
    store.delete_artifact(b)
    store.delete_run(run.id)
    store.save_artifact({"x": 3}, name="a", tags=["best"])
    store.run(tm_pipe, x=4)


def _same_projections(view: HistoricalView, fresh: MemoryKV) -> None:
    with view.kv.snapshot() as txn, fresh.snapshot() as ftxn:
        for db in LIVE_DBS:
            want = list(ftxn.scan(db))
            assert list(txn.scan(db)) == want, db
            assert list(txn.scan(db, reverse=True)) == want[::-1], db
            for key, value in want:
                assert txn.get(db, key) == value
            assert txn.count(db) == len(want)
            # Prefix and range scans map onto the history in the same order.
            for key, _ in want[:: max(1, len(want) // 5)]:
                for p in (key[:1], key[: len(key) // 2], key):
                    assert list(txn.scan(db, prefix=p)) == list(ftxn.scan(db, prefix=p))
                    assert list(txn.scan(db, prefix=p, reverse=True)) == list(
                        ftxn.scan(db, prefix=p, reverse=True)
                    )
                assert list(txn.scan(db, start=key)) == list(ftxn.scan(db, start=key))
                assert list(txn.scan(db, stop=key, reverse=True)) == list(
                    ftxn.scan(db, stop=key, reverse=True)
                )


@pytest.mark.parametrize("backend", ["lmdb", "memory"])
def test_every_point_equals_a_fresh_fold(backend: str, tmp_path: Path) -> None:
    store = Store.open(tmp_path / "s") if backend == "lmdb" else Store.memory()
    with store:
        _grow(store)
        for seq in range(store.head + 1):
            view = store.as_of(seq)
            assert view.indexed
            fresh = folded(store, seq)
            _same_projections(view, fresh)
            plain = HistoricalView(store, seq, fresh)
            assert [a.record() for a in view.list_artifacts(include_deleted=True)] == [
                a.record() for a in plain.list_artifacts(include_deleted=True)
            ]
            assert [r.id for r in view.list_runs()] == [r.id for r in plain.list_runs()]
            assert view.stats() == plain.stats()


def test_views_answer_queries_and_refuse_writes(tmp_path: Path) -> None:
    with Store.open(tmp_path / "s") as store:
        first = store.save_artifact({"x": 1}, name="a")
        store.save_artifact({"x": 2}, name="a")
        view = store.as_of(first.seq)
        assert view.get_artifact("a").version == 1
        assert view.load_artifact("a") == {"x": 1}
        assert store.get_artifact("a").version == 2
        later = advance(view, store.head)  # the dashboard's way forward
        assert later.indexed and later.get_artifact("a").version == 2
        with pytest.raises(Exception, match="read-only"):
            view.save_artifact(1, name="b")
        with view.kv.snapshot() as txn, pytest.raises(Exception, match="read-only"):
            txn.put("artifacts", b"x", b"y")


def test_a_store_without_the_index_folds_until_rebuilt(tmp_path: Path) -> None:
    """A store made before the index (no ``meta temporal``): views fold the log,
    verify does not ask for a history it never had, and rebuild adds it."""
    with Store.open(tmp_path / "s") as store:
        _grow(store)

        def make_old(txn):  # type: ignore[no-untyped-def]
            txn.delete("meta", TEMPORAL_META)
            txn.drop(HISTORY)

        store.ledger.kv.write(make_old)
        mid = store.head // 2
        view = store.as_of(mid)
        assert not view.indexed
        assert store.verify().ok
        before = [a.record() for a in view.list_artifacts(include_deleted=True)]
        store.rebuild()
        again = store.as_of(mid)
        assert again.indexed
        assert [a.record() for a in again.list_artifacts(include_deleted=True)] == before
        assert store.verify().ok


def test_verify_finds_a_tampered_history_entry(tmp_path: Path) -> None:
    with Store.open(tmp_path / "s") as store:
        _grow(store)
        with store.ledger.kv.snapshot() as txn:
            key, value = next(iter(txn.scan(HISTORY)))
        store.ledger.kv.write(lambda txn: txn.put(HISTORY, key, value + b"x"))
        report = store.verify()
        assert not report.ok
        assert any("'history'" in p for p in report.problems)
        store.rebuild()
        assert store.verify().ok


def test_rebuild_and_the_live_path_write_the_same_bytes(tmp_path: Path) -> None:
    """The batched fold (rebuild, flushing every few events here) writes exactly
    what the live path wrote one event at a time, history included."""
    with Store.open(tmp_path / "s") as store:
        _grow(store)
        with store.ledger.kv.snapshot() as txn:
            live = {db: list(txn.scan(db)) for db in (*LIVE_DBS, HISTORY)}
            fresh = MemoryKV(STORE_DATABASES)
            w = fresh.unsafe_writer()
            fold(w, store.ledger.log.read(txn), flush_every=3)
        for db, items in live.items():
            assert list(w.scan(db)) == items, db
        store.rebuild()
        with store.ledger.kv.snapshot() as txn:
            assert {db: list(txn.scan(db)) for db in live} == live


def test_the_key_encoding_keeps_order_and_prefixes() -> None:
    keys = sorted([b"", b"a", b"a\x00", b"a\x00\x00", b"a\x00b", b"a\x01", b"ab", b"\x00", b"\xff"])
    encoded = [entry_key(b"\x01", k, 7) for k in keys]
    assert encoded == sorted(encoded)
    for k in keys:
        assert stem_key(entry_key(b"\x01", k, 7)[:-8]) == k
        assert escape(k).replace(b"\x00\xff", b"\x00") == k
        for other in keys:
            if other.startswith(k):
                assert entry_key(b"\x01", other, 1).startswith(bound(b"\x01", k))
            elif other > k:
                assert entry_key(b"\x01", other, 1) > bound(b"\x01", k)
            else:
                assert entry_key(b"\x01", other, 2**63) < bound(b"\x01", k)


def test_as_of_kv_is_read_only() -> None:
    kv = AsOfKV(MemoryKV(STORE_DATABASES), 0)
    with pytest.raises(Exception, match="read-only"):
        kv.write(lambda txn: None)


def test_seq_keyed_writes_must_carry_their_events_seq() -> None:
    """What ``as_of`` relies on for the seq-keyed projections (their history
    holds only deletes): a key ends with the seq of the event that wrote it.
    Both writers refuse a write that breaks it."""
    kv = MemoryKV(STORE_DATABASES)
    w = kv.unsafe_writer()
    for db in SEQ_KEYED_DBS:
        good = b"group\x00" + (7).to_bytes(8, "big")
        TemporalTxn(w, 7).put(db, good, b"v")
        batch = BatchTxn(w)
        batch.at(7)
        batch.put(db, good, b"v")
        with pytest.raises(StoreError, match="seq-keyed"):
            TemporalTxn(w, 8).put(db, good, b"v")
        batch.at(8)
        with pytest.raises(StoreError, match="seq-keyed"):
            batch.put(db, good, b"v")
