"""pyarrow Tables and RecordBatches through the real store, as Parquet parts."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest

from engine import Store

pa = pytest.importorskip("pyarrow")


def _table() -> Any:
    return pa.table(
        {
            "a": pa.array([1, 2, None], pa.int32()),
            "s": ["x", "y,z", None],
            "n": [[1], [2, 3], None],
            "d": pa.array(["p", "q", "p"]).dictionary_encode(),
            "t": pa.array([0, 1, 2], pa.timestamp("ms", tz="Asia/Tokyo")),
            "dec": pa.array([1, 2, 3], pa.decimal128(10, 2)),
            "ls": pa.array(["a", "b", "c"], pa.large_string()),
        },
        metadata={"source": "unit test"},
    )


def test_table_round_trip(store: Store) -> None:
    table = _table()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        art = store.save_artifact(table, "t")
        back = store.load_artifact("t")
    assert art.materializer == "materializers.arrow:ArrowMaterializer"
    assert back.equals(table, check_metadata=True)


def test_record_batch_round_trip(store: Store) -> None:
    batch = _table().to_batches()[0]
    store.save_artifact(batch, "b")
    back = store.load_artifact("b")
    assert type(back) is pa.RecordBatch and back.equals(batch)
    empty = batch.slice(0, 0)
    store.save_artifact(empty, "e")
    back = store.load_artifact("e")
    assert type(back) is pa.RecordBatch and back.num_rows == 0 and back.schema == empty.schema


def test_chunked_multi_part_table(store: Store) -> None:
    from materializers.arrow import ArrowMaterializer

    rows = ArrowMaterializer.ROWS_PER_PART + 3
    table = pa.concat_tables([pa.table({"i": range(rows)}), pa.table({"i": range(5)})])
    art = store.save_artifact(table, "t")
    assert [n for n in art.files if n.startswith("parts/")] == [
        "parts/00000.parquet",
        "parts/00001.parquet",
    ]
    assert store.load_artifact("t").equals(table)


def test_metadata_and_visualizations(store: Store) -> None:
    table = _table()
    art = store.save_artifact(table, "t")
    meta = art.metadata
    assert (meta["rows"], meta["columns"]) == (3, 7)
    assert meta["dtypes"]["a"] == "int32" and meta["dtypes"]["n"] == "list<item: int64>"
    assert meta["null_counts"] == {"a": 1, "s": 1, "n": 1, "d": 0, "t": 0, "dec": 0, "ls": 0}
    assert meta["memory_bytes"] == table.nbytes
    vis = {name: (kind, data.decode()) for name, kind, data in art.visualizations}
    head = vis["head.csv"][1].splitlines()
    assert head[0] == "a,s,n,d,t,dec,ls" and head[2].startswith('2,"y,z","[2, 3]",q,')
    md = vis["describe.md"][1].splitlines()
    assert md[0] == "| statistic | a | s | n | d | t | dec | ls |"
    assert "| mean | 1.5 |" in vis["describe.md"][1]


def test_damaged_part_is_an_error(tmp_path: Path) -> None:
    from engine.errors import MaterializerError
    from materializers.arrow import read_parts

    class Files:
        state: dict[str, Any] = {}

        def __init__(self, blobs: dict[str, bytes]) -> None:
            self.blobs = blobs

        def names(self) -> list[str]:
            return sorted(self.blobs)

        def size(self, name: str) -> int:
            return len(self.blobs[name])

        def open_read(self, name: str) -> Any:
            import io

            return io.BytesIO(self.blobs[name])

    from materializers.arrow import ArrowMaterializer

    schema = pa.schema([("a", pa.int64())])
    files = Files({"schema.arrow": schema.serialize().to_pybytes(), "parts/00000.parquet": b"x"})
    with pytest.raises(MaterializerError, match="not a readable Parquet file"):
        read_parts(ArrowMaterializer(files))  # type: ignore[arg-type]


def test_reading_does_not_abort_at_exit(tmp_path: Path) -> None:
    with Store.open(tmp_path / "s") as s:
        s.save_artifact(pa.table({"i": range(200_000), "s": ["x"] * 200_000}), "t")
    code = (
        "from engine import Store\n"
        f"s = Store.open({str(tmp_path / 's')!r})\n"
        "assert s.load_artifact('t').num_rows == 200_000\n"
    )
    for _ in range(5):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
        assert out.returncode == 0, out.stderr.decode()[-2000:]
