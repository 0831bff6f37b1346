"""Saving bytes the store already holds: the content-defined writer follows
the cuts of a file written lately, and array statistics are reused, without
changing what is recorded."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from engine import Store
from engine.ledger import artifacts
from engine.storage.chunk_writer import ChunkWriter, RecentCuts
from engine.storage.chunks import FileEntry
from materializers.numpy import NumpyMaterializer

CHUNK = 64 << 10  # content-defined chunks of 16-64 KiB


def write(store: Store, data: bytes, sizes: list[int], itemsize: int = 8) -> FileEntry:
    session = store.ledger.chunks.session()
    got: list[FileEntry] = []
    w = session.writer("f", got.append, itemsize=itemsize, chunking="cdc")
    pos, i = 0, 0
    while pos < len(data):
        step = sizes[i % len(sizes)]
        w.write(data[pos : pos + step])
        pos, i = pos + step, i + 1
    w.close()
    session.release()
    return got[0]


def variants(data: bytes) -> dict[str, bytes]:
    mid, end = len(data) // 2, len(data) - 5000
    return {
        "same": data,
        "middle": data[:mid] + b"\x01" * 8 + data[mid + 8 :],
        "near the end": data[:end] + b"\x02" * 8 + data[end + 8 :],
        "first chunk": b"\x03" * 8 + data[8:],
        "shorter": data[: len(data) - 100_000],
        "longer": data + data[:300_000],
        "inserted": data[:mid] + b"\x04" * 16 + data[mid:],
    }


@pytest.mark.parametrize(
    "sizes", [[1 << 30], [128, 1 << 20], [100, 5000, 70000, 300000, 1 << 20], [40_000]]
)
def test_a_planned_write_records_the_chunks_cutting_would(sizes: list[int]) -> None:
    data = np.random.default_rng(8).bytes(3 << 20)
    store = Store.memory(chunk_size=CHUNK)
    chunks = store.ledger.chunks
    for name, variant in variants(data).items():
        chunks.recent = RecentCuts()
        write(store, data, sizes)  # remembered
        planned = write(store, variant, sizes)
        chunks.recent = RecentCuts()
        cut = write(store, variant, sizes)
        assert planned.chunks == cut.chunks, name
        assert (planned.size, planned.hash) == (cut.size, cut.hash) == (len(variant), cut.hash)
    store.close()


def test_a_file_written_again_is_not_cut(monkeypatch: pytest.MonkeyPatch) -> None:
    data = np.random.default_rng(9).bytes(3 << 20)
    store = Store.memory(chunk_size=CHUNK)
    write(store, data, [1 << 20])
    planned: list[int] = []
    real = ChunkWriter._write_planned

    def spy(self: ChunkWriter, mv: memoryview) -> None:
        planned.append(len(mv))
        real(self, mv)

    monkeypatch.setattr(ChunkWriter, "_write_planned", spy)
    again = write(store, data, [1 << 20])
    assert sum(planned) >= len(data) - 3 * (1 << 20) and again.size == len(data)
    store.close()


def test_recent_cuts_are_bounded() -> None:
    recent = RecentCuts()
    for k in range(RecentCuts.MAX_FILES + 5):
        digests = [bytes([k % 256, j]) * 8 for j in range(5)]
        recent.remember(8, [100] * 5, digests)
    assert len(recent._plans) == RecentCuts.MAX_FILES
    recent.remember(8, [100] * 2, [b"x" * 16] * 2)  # too few chunks: not kept
    assert recent.find(8, 100, b"x" * 16) is None


def arrays() -> dict[str, Any]:
    rng = np.random.default_rng(4)
    big = np.round(rng.standard_normal(3 << 20) * 0.02, 3).astype(np.float32)  # 12 MiB
    small = rng.standard_normal((64, 100))
    return {
        "big": big,
        "big 2-d": big.reshape(-1, 1024),
        "big as int32": big.view(np.int32),
        "big as uint8": big.view(np.uint8),
        "big strided": big[::3],
        "big fortran": np.asfortranarray(big.reshape(-1, 1024)),
        "small": small,
        "small transposed": small.T,
        "small as float32": small.view(np.float32),
        "scalar": np.float32(1.5),
    }


def test_statistics_of_a_resaved_array_equal_a_fresh_save() -> None:
    objs = arrays()
    shared = Store.memory()
    for name, obj in objs.items():
        first = shared.save_artifact(obj, name).metadata
        again = shared.save_artifact(obj, name).metadata
        fresh = Store.memory()
        alone = fresh.save_artifact(obj, name).metadata
        fresh.close()
        assert repr(first) == repr(again) == repr(alone), name  # NaN-aware, bit for bit
        assert alone["dtype"] == str(np.asarray(obj).dtype), name
        assert alone["shape"] == list(np.asarray(obj).shape), name
    # Equal bytes under another dtype or shape got their own statistics.
    meta = {name: shared.get_artifact(name).metadata for name in objs}
    assert meta["big"]["max"] != meta["big as int32"]["max"]
    assert meta["big"]["shape"] != meta["big 2-d"]["shape"]
    assert meta["big"]["mean"] != meta["big as uint8"]["mean"]
    shared.close()


def test_statistics_are_reused_only_for_the_same_content(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, tuple[int, ...]]] = []
    real = NumpyMaterializer.extract_metadata

    def counting(self: NumpyMaterializer, data: Any) -> dict[str, Any]:
        calls.append((str(np.asarray(data).dtype), np.asarray(data).shape))
        return real(self, data)

    monkeypatch.setattr(NumpyMaterializer, "extract_metadata", counting)
    big = arrays()["big"]
    store = Store.memory()
    store.save_artifact(big, "a")
    assert len(calls) == 1
    store.save_artifact(big, "a")
    store.save_artifact(big[:], "a")  # another view: same content and layout
    assert len(calls) == 1
    store.save_artifact(big.view(np.int32), "a")
    store.save_artifact(big.reshape(-1, 1024), "a")
    store.save_artifact(big + 1, "a")
    assert len(calls) == 4
    store.close()


def test_a_materializer_with_its_own_metadata_is_not_reused() -> None:
    class Stamped(NumpyMaterializer):
        SKIP_REGISTRATION = True
        count = 0

        def extract_metadata(self, data: Any) -> dict[str, Any]:
            Stamped.count += 1
            return {"n": Stamped.count}

    store = Store.memory()
    big = arrays()["big"]
    got = [store.save_artifact(big, "a", materializer=Stamped).metadata["n"] for _ in range(2)]
    assert got == [1, 2]
    store.close()


def test_the_metadata_memo_is_bounded_and_keyed_by_content(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(artifacts, "_memo", type(artifacts._memo)())
    store = Store.memory()
    for k in range(artifacts._MEMO_MAX + 10):
        store.save_artifact(np.full(8, k, dtype=np.int64), "a")
    assert len(artifacts._memo) == artifacts._MEMO_MAX
    art = store.get_artifact("a")
    key = next(reversed(artifacts._memo))
    ident, version, chash, _digests, reuse = key  # type: ignore[misc]
    assert (ident, version, chash) == (art.materializer, 1, art.content_hash)
    assert np.dtype(np.int64) in reuse and (8,) in reuse
    assert artifacts._memo[key]["max"] == artifacts._MEMO_MAX + 9
    store.close()


def test_a_save_leaves_no_watcher_on_a_shared_session() -> None:
    store = Store.memory()
    big = arrays()["big"]
    store.save_artifact(big, "a")
    session = store.ledger.chunks.session()
    p = artifacts.prepare(store.ledger, big, "a", session=session)  # all chunks known
    assert not session._watchers and not session.new
    artifacts.commit_artifacts(store.ledger, [p])
    assert store.get_artifact("a").metadata == store.get_artifact("a", 1).metadata
    store.close()
