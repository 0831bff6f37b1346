"""Many writer processes at once, and readers that must always see a consistent snapshot.

8 processes each save 500 artifacts (to a shared name and to their own) and
run a pipeline, all at the same time, while a reader process keeps checking
that every name's versions are gapless ``1..n`` and load, and that the log
is gapless. Afterwards everything is there, versions per name are gapless,
the log is gapless and the hash chain verifies.
"""

from __future__ import annotations

import io
import multiprocessing as mp
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engine import Store, failpoints, pipeline, step
from engine.storage.chunks import FileEntry

WRITERS = 8
PER_WRITER = 500
RUNS_PER_WRITER = 5


@step
def produce(worker: int, i: int) -> np.ndarray:
    return np.full(64, worker * 1000 + i, dtype=np.int64)


@step
def summarise(arr: np.ndarray) -> int:
    return int(arr.sum())


@pipeline(enable_cache=False)
def conc_pipe(worker: int = 0, i: int = 0) -> None:
    summarise(produce(worker=worker, i=i))


def _writer(path: str, worker: int, start: Any) -> None:
    start.wait()
    with Store.open(path) as s:
        for i in range(PER_WRITER):
            s.save_artifact({"w": worker, "i": i}, "shared")
            if i % 2:
                s.save_artifact(np.full(100, worker * 1000 + i), f"own{worker}")
            if i % (PER_WRITER // RUNS_PER_WRITER) == 0:
                run = s.run(conc_pipe, worker=worker, i=i)
                assert run.status == "completed"


def _reader(path: str, stop: Any, result: Any) -> None:
    """Check snapshots until told to stop; put (snapshots checked, problems)."""
    problems: list[str] = []
    checked = 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with Store.open(path) as s:
            while not stop.is_set() or checked == 0:
                view = s.as_of(s.head) if checked % 10 == 9 else s
                arts = view.list_artifacts()
                by_name: dict[str, list[Any]] = {}
                for a in arts:
                    by_name.setdefault(a.name, []).append(a.version)
                for name, versions in by_name.items():
                    if versions != list(range(1, len(versions) + 1)):
                        problems.append(f"{name}: versions {versions[:5]}... not gapless")
                for a in arts[-20:]:
                    a.load()
                if arts:
                    latest = view.get_artifact("shared") if "shared" in by_name else None
                    if latest is not None and latest.version < len(by_name["shared"]):
                        problems.append("latest 'shared' is older than the listing")
                seqs = [e.seq for e in s.events(max(1, s.head - 50))]
                if seqs != list(range(seqs[0], seqs[0] + len(seqs))):
                    problems.append("the log has a gap")
                checked += 1
    result.put((checked, problems[:10]))


@pytest.mark.slow
def test_eight_writers_and_a_reader(tmp_path: Path) -> None:
    path = str(tmp_path / "s")
    Store.open(path).close()
    ctx = mp.get_context("spawn")
    start = ctx.Event()
    stop = ctx.Event()
    result = ctx.Queue()
    reader = ctx.Process(target=_reader, args=(path, stop, result))
    reader.start()
    writers = [ctx.Process(target=_writer, args=(path, w, start)) for w in range(WRITERS)]
    for p in writers:
        p.start()
    t0 = time.monotonic()
    start.set()
    for p in writers:
        p.join(600)
        assert p.exitcode == 0
    elapsed = time.monotonic() - t0
    stop.set()
    checked, problems = result.get(timeout=120)
    reader.join(60)
    assert reader.exitcode == 0
    assert problems == []
    assert checked > 0
    with Store.open(path) as s:
        shared = s.list_artifacts("shared")
        assert [a.version for a in shared] == list(range(1, WRITERS * PER_WRITER + 1))
        seen = {(v["w"], v["i"]) for v in (a.load() for a in shared)}
        assert seen == {(w, i) for w in range(WRITERS) for i in range(PER_WRITER)}
        for w in range(WRITERS):
            own = s.list_artifacts(f"own{w}")
            assert [a.version for a in own] == list(range(1, PER_WRITER // 2 + 1))
            assert [int(a.load()[0]) for a in own] == [
                w * 1000 + i for i in range(1, PER_WRITER, 2)
            ]
        runs = s.list_runs("conc_pipe")
        assert len(runs) == WRITERS * RUNS_PER_WRITER
        assert all(r.status == "completed" for r in runs)
        sums = sorted(r.steps["summarise"].output.load() for r in runs)
        assert sums == sorted(
            64 * (w * 1000 + i)
            for w in range(WRITERS)
            for i in range(0, PER_WRITER, PER_WRITER // RUNS_PER_WRITER)
        )
        produced = s.list_artifacts("conc_pipe.produce.output")
        assert [a.version for a in produced] == list(range(1, len(runs) + 1))
        assert [e.seq for e in s.events()] == list(range(1, s.head + 1))
        report = s.verify()
        assert report.ok, report.problems
    print(f"{WRITERS} writers x {PER_WRITER} artifacts: {elapsed:.1f} s; reader {checked} checks")


def test_reader_keeps_reading_while_gc_moves_its_chunks(tmp_path: Path) -> None:
    """A reader resolved an artifact's chunks; gc then compacts their pack
    segment (moving the chunks, deleting the file) before the bytes are read.
    The read still succeeds, from the chunks' new place."""
    keep = np.random.default_rng(1).random(20_000)
    with Store.open(tmp_path / "s", chunk_size=64 << 10) as s:
        art = s.save_artifact(keep, "keep")
        s.delete_artifact(s.save_artifact(np.random.default_rng(2).random(200_000), "big"))
        segments = set(s.ledger.container_state())
        entry = FileEntry.from_record(art.record()["files"][0])
        reader = s.ledger.chunks.open_file(entry, "artifact keep:1")  # chunk locations resolved
        report = s.gc()
        assert report.segments_compacted == 1
        assert not segments & set(s.ledger.container_state())  # the old segment is gone
        data = reader.read()
        assert np.array_equal(np.load(io.BytesIO(data)), keep)
        np.testing.assert_array_equal(s.load_artifact("keep"), keep)


def test_two_gcs_compacting_the_same_segment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process's gc moves the chunks and deletes the segment this gc
    chose to compact, between this gc's scan and its copy: no false
    IntegrityError, nothing lost."""
    path = tmp_path / "s"
    keep = np.random.default_rng(1).random(20_000)
    with Store.open(path, chunk_size=64 << 10) as s0:
        s0.save_artifact(keep, "keep")
        s0.delete_artifact(s0.save_artifact(np.random.default_rng(2).random(200_000), "big"))
    first, second = Store.open(path, chunk_size=64 << 10), Store.open(path, chunk_size=64 << 10)
    real_hit = failpoints.hit
    raced: list[str] = []

    def hit(name: str) -> None:
        if name == "gc.before_compact_copy" and not raced:
            raced.append(name)
            first.gc()  # runs to completion inside second's gc
        real_hit(name)

    monkeypatch.setattr(failpoints, "hit", hit)
    try:
        second.gc()
        assert raced
        for s in (first, second):
            np.testing.assert_array_equal(s.load_artifact("keep"), keep)
            assert s.verify().ok
    finally:
        first.close()
        second.close()


def _open_fresh(path: str, out: Any) -> None:
    with Store.open(path) as s:
        s.save_artifact(1, "x")
        out.put(s.store_id)


def test_first_opens_racing(tmp_path: Path) -> None:
    """Several processes create the same store at once: one store, one secret."""
    path = str(tmp_path / "s")
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_open_fresh, args=(path, out)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    assert len({out.get(timeout=10) for _ in procs}) == 1
    with Store.open(path) as s:
        assert [a.version for a in s.list_artifacts("x")] == [1, 2, 3, 4]
        assert s.verify().ok


def test_ledger_directory_with_only_a_lock_file_opens(tmp_path: Path) -> None:
    """A process killed between LMDB creating lock.mdb and data.mdb."""
    (tmp_path / "s" / "ledger").mkdir(parents=True)
    (tmp_path / "s" / "ledger" / "lock.mdb").write_bytes(b"")
    with Store.open(tmp_path / "s") as s:
        s.save_artifact(1, "x")
        assert s.verify().ok


def test_open_during_segment_rollover_keeps_the_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A save large enough to roll over to a new pack segment; another store
    opens (and recovers packs) while the save is still writing chunks."""
    import engine.storage.blobs.packs

    monkeypatch.setattr(engine.storage.blobs.packs, "SEGMENT_LIMIT", 256 << 10)
    path = tmp_path / "s"
    arr = np.random.default_rng(1).random(100_000)  # 800 KB: rolls over three times
    real_hit = failpoints.hit
    writes = [0]

    def hit(name: str) -> None:
        if name == "blob.after_write":
            writes[0] += 1
            if writes[0] == 8:  # the first segment was retired a few chunks ago
                Store.open(path, chunk_size=64 << 10).close()
        real_hit(name)

    with Store.open(path, chunk_size=64 << 10) as s:
        monkeypatch.setattr(failpoints, "hit", hit)
        s.save_artifact(arr, "big")
        monkeypatch.setattr(failpoints, "hit", real_hit)
        report = s.verify()
        assert report.ok, report.problems[:2]
        np.testing.assert_array_equal(s.load_artifact("big"), arr)
