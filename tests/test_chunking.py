"""Chunk codecs and layouts: shuffled numeric chunks, content-defined chunks,
old records, and what verify, gc, export and import make of them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engine import IntegrityError, Store
from engine.storage.chunks import ChunkRecord, FileEntry
from engine.storage.codecs import CODEC_RAW, CODEC_ZSTD, SHUFFLE_MIN_CHUNK

N = 1 << 19  # elements: 1-4 MiB arrays
CHUNK = 1 << 20  # content-defined chunks of 64 KiB to 1 MiB, 256 KiB on average


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


def codecs_of(store: Store, name: str, file: str = "data.npy") -> set[int]:
    recs = records(store, file_entry(store, name, file))
    # the first chunk also holds the .npy header; small chunks are never shuffled
    return {r.codec for r in recs[1:] if r.raw_len >= SHUFFLE_MIN_CHUNK}


@pytest.fixture
def saved(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    arrays = kinds()
    with Store.open(tmp_path / "s", chunk_size=CHUNK) as s:
        for name, a in arrays.items():
            s.save_artifact(a, name)
    return tmp_path / "s", arrays


def test_numeric_arrays_get_the_codec_their_sample_picks(
    saved: tuple[Path, dict[str, Any]],
) -> None:
    root, arrays = saved
    with Store.open(root, chunk_size=CHUNK) as s:
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
    assert entry.layout == {"cut": "cdc"} and entry.itemsize == 0
    assert {r.codec for r in records(store, entry)} <= {CODEC_RAW, CODEC_ZSTD}
    assert store.load_artifact("blob") == blob


def test_a_damaged_shuffled_chunk_is_named(saved: tuple[Path, dict[str, Any]]) -> None:
    root, arrays = saved
    with Store.open(root, chunk_size=CHUNK) as s:
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
    with Store.open(root, chunk_size=CHUNK) as s:
        with pytest.raises(IntegrityError, match=digest.hex()):
            s.load_artifact("weights")
        report = s.verify()
        assert not report.ok and any(digest.hex() in p for p in report.problems)
        assert s.load_artifact("smooth").tobytes() == arrays["smooth"].tobytes()


def test_export_import_keeps_shuffled_chunks_and_layouts(
    saved: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    root, arrays = saved
    with Store.open(root, chunk_size=CHUNK) as s:
        s.export(tmp_path / "x.alx")
    with Store.open(tmp_path / "d", chunk_size=CHUNK) as d:
        Store.import_(tmp_path / "x.alx", into=d)
        for name, a in arrays.items():
            assert d.load_artifact(name).tobytes() == a.tobytes()
            assert codecs_of(d, name) == EXPECTED[name], name
            assert file_entry(d, name).itemsize == a.itemsize
            assert file_entry(d, name).cut == "cdc"
        assert d.verify().ok
    with Store.open(tmp_path / "e", chunk_size=4 << 20) as e:  # another chunk size
        Store.import_(tmp_path / "x.alx", into=e)
        for name, a in arrays.items():
            assert e.load_artifact(name).tobytes() == a.tobytes()
        assert e.verify().ok


def test_gc_keeps_shuffled_chunks_loadable(saved: tuple[Path, dict[str, Any]]) -> None:
    root, arrays = saved
    with Store.open(root, chunk_size=CHUNK) as s:
        s.delete_artifact(s.get_artifact("noise"))
        s.gc()
        for name in ("weights", "sensor", "smooth", "decimals"):
            assert s.load_artifact(name).tobytes() == arrays[name].tobytes()
        assert s.verify().ok


# -- content-defined chunks ----------------------------------------------------------------


def new_bytes(store: Store, save: Any) -> int:
    before = store.stats()["stored_bytes"]
    save()
    return int(store.stats()["stored_bytes"] - before)


@pytest.mark.parametrize("edit", ["insert", "delete"])
def test_rows_inserted_or_deleted_near_the_start_store_little(edit: str, tmp_path: Path) -> None:
    rows = np.random.default_rng(3).random((1 << 18, 8))  # 16 MiB, incompressible
    edited = (
        np.concatenate([rows[:100], np.random.default_rng(4).random((3, 8)), rows[100:]])
        if edit == "insert"
        else np.delete(rows, [50, 51, 52], axis=0)
    )
    with Store.open(tmp_path / "s", chunk_size=1 << 20) as s:
        s.save_artifact(rows, "table")
        added = new_bytes(s, lambda: s.save_artifact(edited, "table"))
        assert added <= 0.05 * edited.nbytes, added
        assert file_entry(s, "table").cut == "cdc"
        assert s.load_artifact("table", version=1).tobytes() == rows.tobytes()
        assert s.load_artifact("table").tobytes() == edited.tobytes()
        assert s.verify().ok


def test_bytes_with_an_insertion_store_little(store: Store) -> None:
    blob = np.random.default_rng(5).bytes(12 << 20)
    store.save_artifact(blob, "blob")
    edited = blob[:1000] + b"inserted" + blob[1000:]
    added = new_bytes(store, lambda: store.save_artifact(edited, "blob"))
    assert added <= 0.05 * len(edited)
    assert store.load_artifact("blob") == edited


def test_boundaries_do_not_depend_on_how_the_file_was_written() -> None:
    data = np.random.default_rng(6).bytes(3 << 20)
    store = Store.memory(chunk_size=64 << 10)
    entries = []
    for sizes in ([len(data)], [1, 100, 5000, 70000, 300000, 1 << 20], [4096]):
        session = store.ledger.chunks.session()
        got: list[FileEntry] = []
        w = session.writer("f", got.append, itemsize=8, chunking="cdc")
        pos, i = 0, 0
        while pos < len(data):
            w.write(data[pos : pos + sizes[i % len(sizes)]])
            pos += sizes[i % len(sizes)]
            i += 1
        w.close()
        entries.append(got[0])
        lengths = [session.new[d].raw_len for d in dict.fromkeys(got[0].chunks)]
        assert all(n % 8 == 0 for n in lengths[:-1]) and max(lengths) <= 64 << 10
    assert entries[0].chunks == entries[1].chunks == entries[2].chunks
    assert entries[0].layout == {"itemsize": 8, "cut": "cdc"}


def test_a_fixed_chunk_store_still_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Files saved as every store before layouts saved them (fixed chunks, raw or
    zstd, four-element manifest entries) load byte-exact beside new ones."""
    from materializers.builtins import BuiltinsMaterializer

    arrays = kinds()
    with Store.open(tmp_path / "s", chunk_size=CHUNK) as s, monkeypatch.context() as m:
        m.setattr(BuiltinsMaterializer, "CHUNKING", None)
        for name, a in arrays.items():
            s.save_artifact(a.tobytes(), name)
        records = [f for n in arrays for f in s.get_artifact(n).record()["files"]]
        assert all(len(f) == 4 for f in records)  # the old manifest form
        assert codecs_of(s, "smooth", "data.bin") <= {CODEC_RAW, CODEC_ZSTD}
    with Store.open(tmp_path / "s", chunk_size=CHUNK) as s:
        for name, a in arrays.items():
            assert s.load_artifact(name) == a.tobytes()
            s.save_artifact(a, name)  # now a .npy, content-defined
            assert s.load_artifact(name).tobytes() == a.tobytes()
        assert s.verify().ok


@pytest.mark.parametrize("edit", ["insert", "delete"])
def test_a_parquet_file_with_rows_inserted_or_deleted_stores_little(
    edit: str, tmp_path: Path
) -> None:
    """A Parquet file written with content-defined pages (pyarrow's
    ``use_content_defined_chunking``), saved as bytes: its pages after the edit
    are the same bytes, and content-defined chunks find them again."""
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    import io

    rng = np.random.default_rng(8)
    cols = {f"f{i}": rng.random(1 << 20) for i in range(3)}
    cols["n"] = rng.integers(0, 1 << 40, 1 << 20)
    if edit == "insert":
        changed = {k: np.insert(v, 100, v[:3]) for k, v in cols.items()}
    else:
        changed = {k: np.delete(v, [50, 51, 52]) for k, v in cols.items()}

    def parquet(columns: dict[str, Any]) -> bytes:
        buf = io.BytesIO()
        pages = {"min_chunk_size": 64 << 10, "max_chunk_size": 256 << 10}
        pq.write_table(
            pa.table(columns), buf, use_dictionary=False, use_content_defined_chunking=pages
        )
        return buf.getvalue()

    first, second = parquet(cols), parquet(changed)
    with Store.open(tmp_path / "s", chunk_size=256 << 10) as s:
        s.save_artifact(first, "table.parquet")
        added = new_bytes(s, lambda: s.save_artifact(second, "table.parquet"))
        assert added <= 0.05 * len(second), added / len(second)
        assert s.load_artifact("table.parquet") == second


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ({"cut": "rolling"}, "unknown chunking"),
        ({"itemsize": 10**6}, "absurd element size"),
        ({"shuffle": True}, "unknown or malformed field"),
        ([1, 2], "layout is not a map"),
    ],
)
def test_a_stream_with_a_bad_layout_is_refused(layout: Any, message: str, tmp_path: Path) -> None:
    from streams import build_stream, edit_artifact, read_frames

    from engine import ImportValidationError

    with Store.open(tmp_path / "s", chunk_size=CHUNK) as s:
        s.save_artifact(np.arange(1000.0), "a")
        s.export(tmp_path / "x.alx")

    def bad(env: dict[str, Any]) -> None:
        env["data"]["files"][0][4] = layout

    frames = edit_artifact(read_frames((tmp_path / "x.alx").read_bytes()), "a", bad)
    (tmp_path / "y.alx").write_bytes(build_stream(frames))
    with Store.open(tmp_path / "d") as d, pytest.raises(ImportValidationError, match=message):
        Store.import_(tmp_path / "y.alx", into=d)
