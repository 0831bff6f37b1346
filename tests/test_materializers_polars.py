"""polars DataFrames through the real store, as Parquet parts."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest

from engine import Store

pl = pytest.importorskip("polars")
pytest.importorskip("pyarrow")


def _frame() -> Any:
    return pl.DataFrame(
        {
            "a": [1, 2, None],
            "s": ["x", "y", None],
            "c": pl.Series(["u", "v", "u"], dtype=pl.Categorical),
            "e": pl.Series(["lo", "hi", "lo"], dtype=pl.Enum(["lo", "hi"])),
            "t": pl.datetime_range(
                pl.datetime(2024, 3, 30),
                pl.datetime(2024, 4, 1),
                "1d",
                time_zone="Europe/Paris",
                eager=True,
            ),
            "l": [[1], [2, 3], []],
            "st": [{"x": 1}, {"x": 2}, None],
            "f32": pl.Series([0.5, None, 1.5], dtype=pl.Float32),
            "u8": pl.Series([1, 2, 3], dtype=pl.UInt8),
        }
    )


def test_round_trip_keeps_dtypes(store: Store) -> None:
    df = _frame()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        art = store.save_artifact(df, "pl")
        back = store.load_artifact("pl")
    assert art.materializer == "materializers.polars:PolarsMaterializer"
    assert type(back) is pl.DataFrame
    assert back.schema == df.schema
    assert back.equals(df)


def test_empty_and_multi_part(store: Store) -> None:
    from materializers.polars import PolarsMaterializer

    empty = pl.DataFrame({"a": pl.Series([], dtype=pl.Int64), "s": pl.Series([], dtype=pl.String)})
    store.save_artifact(empty, "e")
    back = store.load_artifact("e")
    assert back.schema == empty.schema and back.height == 0
    rows = 2 * PolarsMaterializer.ROWS_PER_PART + 5
    big = pl.DataFrame({"i": range(rows), "s": [str(i % 7) for i in range(rows)]})
    art = store.save_artifact(big, "big")
    assert sum(n.startswith("parts/") for n in art.files) == 3
    assert store.load_artifact("big").equals(big)


def test_metadata_and_visualizations(store: Store) -> None:
    df = _frame()
    art = store.save_artifact(df, "pl")
    meta = art.metadata
    assert (meta["rows"], meta["columns"]) == (3, 9)
    assert meta["dtypes"]["a"] == "Int64" and meta["dtypes"]["u8"] == "UInt8"
    assert meta["null_counts"]["a"] == 1 and meta["null_counts"]["c"] == 0
    assert meta["memory_bytes"] == df.estimated_size()
    vis = {name: (kind, data.decode()) for name, kind, data in art.visualizations}
    assert vis["head.csv"][0] == "csv"
    assert vis["head.csv"][1].splitlines()[0] == "a,s,c,e,t,l,st,f32,u8"
    assert vis["describe.md"][0] == "markdown"
    assert vis["describe.md"][1].splitlines()[0].startswith("| statistic | a |")


def test_export_import_stays_trusted(tmp_path: Path) -> None:
    df = _frame()
    with Store.open(tmp_path / "src") as src:
        src.save_artifact(df, "pl")
        src.export(tmp_path / "x.alx")
    with Store.open(tmp_path / "dst") as dst:
        Store.import_(tmp_path / "x.alx", into=dst)
        assert dst.load_artifact("pl").equals(df)
