"""Chunk codecs and layouts: shuffled numeric chunks, content-defined chunks,
old records, and what verify, gc, export and import make of them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engine import IntegrityError, Store
from engine.storage.chunks import ChunkRecord, FileEntry
from engine.storage.codecs import CODEC_RAW, CODEC_ZSTD

N = 1 << 19  # elements: 2-4 MiB arrays, several 256 KiB chunks


def kinds() -> dict[str, Any]:
    rng = np.random.default_rng(11)
    weights = (rng.standard_normal(N).astype(np.float32).view(np.uint32) & 0xFFFF0000).view(
        np.float32
    )
    sensor = (2048 + 300 * np.sin(np.arange(N) / 500) + rng.normal(0, 20, N)).clip(0, 4095)
    return {
        "weights": weights,
        "sensor": sensor.astype(np.uint16),
        "smooth": np.sin(np.arange(N) / 1e4) * 100 + np.cumsum(rng.normal(0, 1e-3, N)),
        "decimals": np.round(rng.normal(50, 10, N), 2),
        "noise": rng.standard_normal(N),
    }


EXPECTED = {
    "weights": {4},
    "sensor": {2},
    "smooth": {8},
    "decimals": {CODEC_ZSTD},
    "noise": {CODEC_RAW},
}


def file_entry(store: Store, name: str, file: str = "data.npy") -> FileEntry:
    files = store.get_artifact(name).record()["files"]
    return FileEntry.from_record(next(f for f in files if f[0] == file))


def records(store: Store, entry: FileEntry) -> list[ChunkRecord]:
    out = []
    for digest in entry.chunks:
        rec = store.ledger.chunks.lookup(digest)
        assert rec is not None
        out.append(rec)
    return out


def codecs_of(store: Store, name: str) -> set[int]:
    recs = records(store, file_entry(store, name))
    # the first chunk also holds the .npy header; the last may be a few bytes
    return {r.codec for r in recs[1:-1]}


@pytest.fixture
def saved(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    arrays = kinds()
    with Store.open(tmp_path / "s", chunk_size=256 << 10) as s:
        for name, a in arrays.items():
            s.save_artifact(a, name)
    return tmp_path / "s", arrays


def test_numeric_arrays_get_the_codec_their_sample_picks(
    saved: tuple[Path, dict[str, Any]],
) -> None:
    root, arrays = saved
    with Store.open(root, chunk_size=256 << 10) as s:
        for name, a in arrays.items():
            assert codecs_of(s, name) == EXPECTED[name], name
            assert file_entry(s, name).itemsize == a.itemsize
            back = s.load_artifact(name)
            assert back.dtype == a.dtype and back.tobytes() == a.tobytes()
        assert s.verify().ok


def test_bytes_are_never_shuffled(store: Store) -> None:
    blob = np.sin(np.arange(N) / 1e4).tobytes()  # shuffles well, but no element size is known
    store.save_artifact(blob, "blob")
    entry = FileEntry.from_record(store.get_artifact("blob").record()["files"][0])
    assert entry.layout is None and len(entry.to_record()) == 4
    assert {r.codec for r in records(store, entry)} <= {CODEC_RAW, CODEC_ZSTD}
    assert store.load_artifact("blob") == blob


def test_a_damaged_shuffled_chunk_is_named(saved: tuple[Path, dict[str, Any]]) -> None:
    root, arrays = saved
    with Store.open(root, chunk_size=256 << 10) as s:
        entry = file_entry(s, "weights")
        digest = entry.chunks[2]
        rec = records(s, entry)[2]
        assert rec.codec == 4 and rec.loc is not None
        pack = root / "packs" / f"{rec.loc[0]}.pack"
    with open(pack, "r+b") as f:
        f.seek(rec.loc[1] + 32 + rec.loc[2] // 2)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0xFF]))
    with Store.open(root, chunk_size=256 << 10) as s:
        with pytest.raises(IntegrityError, match=digest.hex()):
            s.load_artifact("weights")
        report = s.verify()
        assert not report.ok and any(digest.hex() in p for p in report.problems)
        assert s.load_artifact("smooth").tobytes() == arrays["smooth"].tobytes()


def test_export_import_keeps_shuffled_chunks_and_layouts(
    saved: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    root, arrays = saved
    with Store.open(root, chunk_size=256 << 10) as s:
        s.export(tmp_path / "x.alx")
    with Store.open(tmp_path / "d", chunk_size=256 << 10) as d:
        Store.import_(tmp_path / "x.alx", into=d)
        for name, a in arrays.items():
            assert d.load_artifact(name).tobytes() == a.tobytes()
            assert codecs_of(d, name) == EXPECTED[name], name
            assert file_entry(d, name).itemsize == a.itemsize
        assert d.verify().ok


def test_gc_keeps_shuffled_chunks_loadable(saved: tuple[Path, dict[str, Any]]) -> None:
    root, arrays = saved
    with Store.open(root, chunk_size=256 << 10) as s:
        s.delete_artifact(s.get_artifact("noise"))
        s.gc()
        for name in ("weights", "sensor", "smooth", "decimals"):
            assert s.load_artifact(name).tobytes() == arrays[name].tobytes()
        assert s.verify().ok
