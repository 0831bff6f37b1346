"""The store through its public API, checked through back doors where it matters."""

from __future__ import annotations

import multiprocessing as mp
import struct
from pathlib import Path

import numpy as np
import pytest

import engine
from engine import (
    ArtifactNotFoundError,
    ArtledgerError,
    IntegrityError,
    InvalidArgumentError,
    Store,
    StoreError,
    StoreFormatError,
)
from engine.ledger.artifacts import commit_artifacts, prepare
from engine.projections import PROJECTION_DBS, STORE_DATABASES
from engine.storage.kv import LmdbKV
from engine.storage.log import register_upcaster, seq_key


def dump_projections(store: Store) -> dict[str, list[tuple[bytes, bytes]]]:
    txn = store.ledger.kv.read()
    try:
        return {db: list(txn.scan(db)) for db in PROJECTION_DBS}
    finally:
        store.ledger.kv.end_read(txn)


def pack_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in (path / "packs").glob("*.pack"))


# -- round trips and versions ---------------------------------------------------------


def test_first_event_is_store_created(store: Store) -> None:
    first = next(iter(store.events()))
    assert first.seq == 1 and first.type == "store.created"
    assert store.head == 1


def test_round_trip_builtins_and_arrays(store: Store) -> None:
    value = {1: (1, 2), "s": {3, 4}, "b": b"\x00\xff", "f": [1.5, None, True]}
    a = store.save_artifact(value, "cfg")
    assert store.load_artifact("cfg") == value
    assert type(store.load_artifact("cfg")[1]) is tuple
    arr = np.arange(1_000_000, dtype=np.float32).reshape(1000, 1000)
    b = store.save_artifact(arr, "weights")
    back = b.load()
    assert back.dtype == arr.dtype and back.shape == arr.shape
    np.testing.assert_array_equal(back, arr)
    assert a.files == ["data.msgpack"]
    assert b.data_type == "numpy:ndarray"
    assert b.metadata["shape"] == [1000, 1000]
    assert b.metadata["size"] == b.size


def test_versions_tags_and_latest(store: Store) -> None:
    v1 = store.save_artifact(1, "x")
    v2 = store.save_artifact(2, "x", tags=["best"])
    labelled = store.save_artifact(3, "x", version="gold")
    assert (v1.version, v2.version, labelled.version) == (1, 2, "gold")
    assert store.load_artifact("x") == 3  # latest = newest created, whatever its label
    assert store.load_artifact("x", 1) == 1
    assert store.load_artifact("x", "2") == 2
    assert store.get_artifact("x", "gold").load() == 3
    v4 = store.save_artifact(4, "x")
    assert v4.version == 3
    assert [a.version for a in store.list_artifacts("x")] == [1, 2, "gold", 3]
    assert [a.version for a in store.list_artifacts(tag="best")] == [2]
    store.tag(v1, "best", "old")
    assert [a.version for a in store.list_artifacts(tag="best")] == [1, 2]
    store.untag(v1, "best")
    assert store.get_artifact("x", 1).tags == ["old"]
    with pytest.raises(InvalidArgumentError, match="already has version 3"):
        store.save_artifact(5, "x", version=3)


def test_missing_and_deleted(store: Store) -> None:
    with pytest.raises(ArtifactNotFoundError, match="no artifact named 'nope'"):
        store.get_artifact("nope")
    with pytest.raises(KeyError):
        store.load_artifact("nope")
    a = store.save_artifact("a", "y")
    store.save_artifact("b", "y")
    with pytest.raises(ArtifactNotFoundError, match="has no version 7"):
        store.get_artifact("y", 7)
    store.delete_artifact(store.get_artifact("y", 2))
    assert store.load_artifact("y") == "a"
    with pytest.raises(ArtifactNotFoundError, match="was deleted"):
        store.get_artifact("y", 2)
    store.delete_artifact(a)
    with pytest.raises(ArtifactNotFoundError, match="every version"):
        store.get_artifact("y")
    assert store.save_artifact("c", "y").version == 3  # versions are never reused


def test_metadata_and_errors_leave_store_unchanged(store: Store) -> None:
    a = store.save_artifact([1, 2], "m", metadata={"source": "unit"})
    store.log_metadata(a, {"accuracy": 0.93})
    meta = store.get_artifact("m").metadata
    assert meta["source"] == "unit" and meta["accuracy"] == 0.93 and meta["length"] == 2
    head = store.head
    with pytest.raises(InvalidArgumentError):
        store.save_artifact(1, "")
    with pytest.raises(InvalidArgumentError):
        store.log_metadata(a, {"bad": object()})
    with pytest.raises(InvalidArgumentError):
        store.save_artifact(1, "m", metadata={"bad": object()})
    assert store.head == head


def test_events_range_is_exclusive(store: Store) -> None:
    for i in range(5):
        store.save_artifact(i, "n")
    assert [e.seq for e in store.events(2, 4)] == [2, 3]
    assert [e.type for e in store.events(2)] == ["artifact.written"] * 5
    assert list(store.events(100)) == []


# -- dedup and compression --------------------------------------------------------------


def test_same_array_twice_is_stored_once(disk_store: Store) -> None:
    arr = np.random.default_rng(1).random(4 << 20)  # 32 MiB
    disk_store.save_artifact(arr, "a")
    before = pack_bytes(disk_store.path)  # type: ignore[arg-type]
    stored = disk_store.stats()["stored_bytes"]
    disk_store.save_artifact(arr, "a")
    assert pack_bytes(disk_store.path) - before < 2 << 20  # type: ignore[arg-type]
    assert disk_store.stats()["stored_bytes"] - stored < 2 << 20


def test_appended_rows_reuse_chunks(store: Store) -> None:
    base = np.random.default_rng(2).random((4096, 512))  # 16 MiB
    store.save_artifact(base, "table")
    s1 = store.stats()["stored_bytes"]
    grown = np.concatenate([base, np.random.default_rng(3).random((64, 512))])
    store.save_artifact(grown, "table")
    growth = store.stats()["stored_bytes"] - s1
    assert growth < 2 << 20, growth


def test_zeros_compress(store: Store) -> None:
    store.save_artifact(np.zeros(8 << 20), "zeros")  # 64 MiB
    assert store.stats()["stored_bytes"] < 4 << 20


def test_random_data_is_stored_raw(store: Store) -> None:
    from engine.storage.chunks import CODEC_RAW, ChunkRecord

    store.save_artifact(np.random.default_rng(4).random(1 << 18), "noise")
    txn = store.ledger.kv.read()
    codecs = [ChunkRecord.unpack(v).codec for _, v in txn.scan("chunks")]
    store.ledger.kv.end_read(txn)
    assert codecs.count(CODEC_RAW) >= len(codecs) - 1


# -- projections ---------------------------------------------------------------------------


def test_rebuild_reproduces_projections(store: Store) -> None:
    a = store.save_artifact({"k": 1}, "a", tags=["t"])
    store.save_artifact(np.ones(10), "b")
    store.tag(a, "u")
    store.untag(a, "t")
    store.log_metadata(a, {"m": 1})
    store.delete_artifact(store.get_artifact("b"))
    before = dump_projections(store)
    assert store.rebuild() == store.head
    assert dump_projections(store) == before
    assert store.verify().ok


def test_as_of_shows_the_past(store: Store) -> None:
    store.save_artifact(1, "h")
    seq = store.head
    a = store.save_artifact(2, "h")
    store.tag(a, "new")
    past = store.as_of(seq)
    assert [x.version for x in past.list_artifacts("h")] == [1]
    assert past.load_artifact("h") == 1 if hasattr(past, "load_artifact") else True
    assert past.get_artifact("h").load() == 1
    assert past.head == seq
    assert [e.seq for e in past.events()][-1] == seq
    assert store.get_artifact("h").tags == ["new"]
    with pytest.raises(InvalidArgumentError):
        store.as_of(store.head + 5)


def test_upcaster_reads_old_schema(disk_store: Store) -> None:
    from engine.storage import log

    def write_old(txn: object) -> None:
        disk_store.ledger.log.append(txn, [("test.legacy", {"old_name": 5})])  # type: ignore[arg-type]

    disk_store.ledger.kv.write(write_old)
    try:

        @register_upcaster("test.legacy", 1)
        def _v1_to_v2(data: dict[str, object]) -> dict[str, object]:
            return {"new_name": data["old_name"]}

        ev = list(disk_store.events())[-1]
        assert ev.type == "test.legacy" and ev.data == {"new_name": 5}
    finally:
        log.SCHEMA_VERSIONS.pop("test.legacy", None)
        log._UPCASTERS.pop(("test.legacy", 1), None)


# -- durability, reopen, damage ---------------------------------------------------------


def test_reopen_keeps_everything(tmp_path: Path) -> None:
    with Store.open(tmp_path / "s") as s:
        s.save_artifact(np.arange(100), "a")
        s.save_artifact("text", "b", tags=["x"])
        head = s.head
    with Store.open(tmp_path / "s") as s:
        assert s.head == head
        np.testing.assert_array_equal(s.load_artifact("a"), np.arange(100))
        assert s.list_artifacts(tag="x")[0].load() == "text"
        assert s.verify().ok


def test_flipped_pack_byte_names_the_artifact(tmp_path: Path) -> None:
    with Store.open(tmp_path / "s", chunk_size=64 << 10) as s:
        s.save_artifact(np.random.default_rng(5).random(100_000), "victim")
        s.save_artifact(np.random.default_rng(6).random(100_000), "bystander")
        victim = s.get_artifact("victim")
        from engine.storage.chunks import ChunkRecord

        txn = s.ledger.kv.read()
        rec = ChunkRecord.unpack(txn.get("chunks", victim.record()["files"][0][3][1]))
        s.ledger.kv.end_read(txn)
        assert rec.loc is not None
        pack = tmp_path / "s" / "packs" / f"{rec.loc[0]}.pack"
        with open(pack, "r+b") as f:
            f.seek(rec.loc[1] + 100)
            b = f.read(1)
            f.seek(rec.loc[1] + 100)
            f.write(bytes([b[0] ^ 0xFF]))
    with Store.open(tmp_path / "s") as s:
        with pytest.raises(IntegrityError, match="victim:1"):
            s.load_artifact("victim")
        assert s.load_artifact("bystander").shape == (100_000,)
        report = s.verify()
        assert not report.ok
        assert any("victim:1" in p for p in report.problems)


def test_torn_pack_tail_is_truncated_on_open(tmp_path: Path) -> None:
    with Store.open(tmp_path / "s") as s:
        s.save_artifact(np.arange(10_000), "a")
        ends = s.ledger.container_state()
    name, end = next(iter(ends.items()))
    pack = tmp_path / "s" / "packs" / f"{name}.pack"
    with open(pack, "ab") as f:
        f.write(b"half-written chunk")
    with Store.open(tmp_path / "s") as s:
        assert pack.stat().st_size == end
        assert s.verify().ok
        np.testing.assert_array_equal(s.load_artifact("a"), np.arange(10_000))


def test_tampered_event_breaks_the_chain(tmp_path: Path) -> None:
    with Store.open(tmp_path / "s") as s:
        for i in range(3):
            s.save_artifact(i, "e")

        def tamper(txn: object) -> None:
            raw = txn.get("events", seq_key(2))  # type: ignore[attr-defined]
            txn.put("events", seq_key(2), raw.replace(b"\x01", b"\x02", 1))  # type: ignore[attr-defined]

        s.ledger.kv.write(tamper)
        report = s.verify()
        assert not report.ok
        assert any("event 3" in p and "chain" in p for p in report.problems)


def test_gc_frees_deleted_bytes(disk_store: Store) -> None:
    big = np.random.default_rng(7).random(1 << 20)
    a = disk_store.save_artifact(big, "big")
    disk_store.save_artifact(np.arange(1000), "keep")
    before = pack_bytes(disk_store.path)  # type: ignore[arg-type]
    dry = disk_store.gc(dry_run=True)
    assert dry.chunks_reclaimed == 0
    disk_store.delete_artifact(a)
    dry = disk_store.gc(dry_run=True)
    assert dry.bytes_reclaimed >= 8 << 20
    report = disk_store.gc()
    assert report.bytes_reclaimed >= 8 << 20
    assert pack_bytes(disk_store.path) < before - (7 << 20)  # type: ignore[arg-type]
    np.testing.assert_array_equal(disk_store.load_artifact("keep"), np.arange(1000))
    assert [e.type for e in disk_store.events()][-1] == "gc.completed"
    assert disk_store.verify().ok


# -- bad input ---------------------------------------------------------------------------


def test_store_path_that_is_a_file(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("hello")
    with pytest.raises(StoreError, match="is a file"):
        Store.open(f)
    assert f.read_text() == "hello"


def test_newer_format_is_refused(tmp_path: Path) -> None:
    Store.open(tmp_path / "s").close()
    kv = LmdbKV(tmp_path / "s" / "ledger", STORE_DATABASES)
    kv.write(lambda txn: txn.put("meta", b"format", struct.pack(">Q", 99)))
    kv.close()
    with pytest.raises(StoreFormatError, match="newer"):
        Store.open(tmp_path / "s")
    assert isinstance(StoreFormatError("x"), ArtledgerError)


def test_closed_store_refuses_use(tmp_path: Path) -> None:
    s = Store.open(tmp_path / "s")
    s.close()
    with pytest.raises(StoreError, match="closed"):
        s.save_artifact(1, "x")


def test_default_store_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARTLEDGER_STORE", str(tmp_path / "env-store"))
    with Store.open() as s:
        assert s.path == tmp_path / "env-store"
        a = engine.save_artifact(41, "answer", store=s)
        assert engine.load_artifact("answer", store=s) == 41
        assert a.version == 1
        with engine.use_store(s):
            assert engine.load_artifact("answer") == 41


# -- growth and concurrency ---------------------------------------------------------------


def test_map_grows_by_itself(tmp_path: Path) -> None:
    with Store.open(tmp_path / "s", map_size=1 << 20) as s:
        for i in range(300):
            s.save_artifact({"i": i, "pad": "x" * 2000}, f"n{i % 7}")
        assert s.stats()["artifacts"] == 300
        assert s.verify().ok


def _writer(path: str, worker: int, n: int) -> None:
    with Store.open(path) as s:
        for i in range(n):
            s.save_artifact({"w": worker, "i": i}, "shared")
            s.save_artifact(np.full(1000, worker * 1000 + i), f"own{worker}")


def test_four_processes_lose_nothing(tmp_path: Path) -> None:
    path = str(tmp_path / "s")
    Store.open(path).close()
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, w, 25)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    with Store.open(path) as s:
        shared = s.list_artifacts("shared")
        assert [a.version for a in shared] == list(range(1, 101))
        seen = {(v["w"], v["i"]) for v in (a.load() for a in shared)}
        assert seen == {(w, i) for w in range(4) for i in range(25)}
        for w in range(4):
            arts = s.list_artifacts(f"own{w}")
            assert [int(a.load()[0]) for a in arts] == [w * 1000 + i for i in range(25)]
        assert [e.seq for e in s.events()] == list(range(1, s.head + 1))
        assert s.verify().ok


def test_store_dir_and_secret_permissions(tmp_path: Path) -> None:
    with Store.open(tmp_path / "s"):
        pass
    assert (tmp_path / "s").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "s" / "secret").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "s" / "secret").stat().st_size == 32


def test_one_batch_cannot_give_a_version_twice(store: Store) -> None:
    head = store.head
    first = prepare(store.ledger, 1, "batch", version=7)
    second = prepare(store.ledger, 2, "batch", version=7)
    with pytest.raises(InvalidArgumentError, match="already has version 7"):
        commit_artifacts(store.ledger, [first, second])
    assert store.head == head
    done = commit_artifacts(store.ledger, [prepare(store.ledger, 3, "batch")])
    assert [d["version"] for d in done] == [1]


def test_find_by_content_across_names(store: Store) -> None:
    a = store.save_artifact(np.arange(10), "one")
    b = store.save_artifact(np.arange(10), "two")
    store.save_artifact(np.arange(11), "three")
    assert a.content_hash == b.content_hash
    assert [x.name for x in store.find_by_content(a.content_hash)] == ["one", "two"]
    store.delete_artifact(a)
    assert [x.name for x in store.find_by_content(a.content_hash)] == ["two"]
