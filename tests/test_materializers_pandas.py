"""pandas DataFrame / Series / Index through the real store, as Parquet parts."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engine import Store

pd = pytest.importorskip("pandas")
pytest.importorskip("pyarrow")

from materializers.pandas import (  # noqa: E402
    OVERLAP_ROWS,
    PandasMaterializer,
    _describe_markdown,
)

FRAMES: dict[str, Any] = {
    "basic": lambda: pd.DataFrame({"a": [1, 2, 3], "b": [1.5, None, 3.0], "s": ["x", None, "z"]}),
    "object strings": lambda: pd.DataFrame({"o": pd.Series(["x", None, "z"], dtype=object)}),
    "categorical": lambda: pd.DataFrame(
        {"c": pd.Categorical(["a", "b", "a"], categories=["b", "a", "q"], ordered=True)}
    ),
    "tz datetimes, named index": lambda: pd.DataFrame(
        {"t": pd.date_range("2024-03-30", periods=3, tz="Europe/Paris")},
        index=pd.Index([5, 6, 7], name="k"),
    ),
    "nullable": lambda: pd.DataFrame(
        {
            "i": pd.array([1, None, 3], dtype="Int64"),
            "b": pd.array([True, None, False], dtype="boolean"),
            "s": pd.array(["a", None, "c"], dtype="string"),
            "f": pd.array([0.5, None, 1.5], dtype="Float32"),
        }
    ),
    "integer column labels": lambda: pd.DataFrame({0: [1, 2], 1: [3, 4]}),
    "multiindex rows": lambda: pd.DataFrame(
        {"v": [1, 2, 3, 4]},
        index=pd.MultiIndex.from_tuples([("a", 1), ("a", 2), ("b", 1), ("b", 2)], names=["x", "y"]),
    ),
    "multiindex columns": lambda: pd.DataFrame(
        [[1, 2], [3, 4]], columns=pd.MultiIndex.from_tuples([("a", "x"), ("a", "y")])
    ),
    "range index with step": lambda: pd.DataFrame(
        {"a": [1, 2, 3]}, index=pd.RangeIndex(10, 16, 2, name="r")
    ),
    "empty": lambda: pd.DataFrame({"a": pd.Series([], dtype="int64")}),
    "no columns": lambda: pd.DataFrame(index=pd.RangeIndex(5)),
    "no columns, string index": lambda: pd.DataFrame(index=pd.Index(["a", "b"], name="n")),
    "timedelta, small ints, float32": lambda: pd.DataFrame(
        {
            "d": pd.to_timedelta([1, 2, 3], unit="s"),
            "u": np.array([1, 2, 3], dtype="uint8"),
            "f": np.array([1, 2, 3], dtype="float32"),
        }
    ),
    "datetime index with freq": lambda: pd.DataFrame(
        {"a": [1, 2, 3]}, index=pd.date_range("2024-01-01", periods=3, freq="h", tz="UTC")
    ),
    "millisecond timestamps": lambda: pd.DataFrame(
        {"t": pd.Series(pd.to_datetime(["2024-01-01", "2025-06-01"])).astype("datetime64[ms]")}
    ),
    "periods and intervals": lambda: pd.DataFrame(
        {"p": pd.period_range("2024-01", periods=3, freq="M"), "i": pd.interval_range(0, 3)}
    ),
    "bytes": lambda: pd.DataFrame({"b": [b"x", b"\x00y"]}),
}


def _strict_frame_equal(a: Any, b: Any) -> None:
    pd.testing.assert_frame_equal(
        a, b, check_exact=True, check_freq=True, check_column_type=True, check_index_type=True
    )


@pytest.mark.parametrize("case", list(FRAMES))
def test_dataframe_round_trip_is_exact(store: Store, case: str) -> None:
    df = FRAMES[case]()
    art = store.save_artifact(df, "df")
    assert art.materializer == "materializers.pandas:PandasMaterializer"
    assert not any(n.endswith(".pkl") for n in art.files)
    _strict_frame_equal(df, store.load_artifact("df"))


def test_large_frame_spans_several_parts(store: Store) -> None:
    rows = 3 * PandasMaterializer.ROWS_PER_PART + 17
    df = pd.DataFrame({"x": np.arange(rows), "y": np.random.default_rng(1).random(rows)})
    art = store.save_artifact(df, "big")
    parts = [n for n in art.files if n.startswith("parts/")]
    assert parts == [f"parts/{i:05d}.parquet" for i in range(4)]
    _strict_frame_equal(df, store.load_artifact("big"))
    # describe() ran on a side thread while the parts were written (rows >= OVERLAP_ROWS)
    assert rows >= OVERLAP_ROWS
    vis = {name: data.decode() for name, _, data in art.visualizations}
    assert vis["describe.md"] == _describe_markdown(df)
    assert "| count | 196625 | 196625 |" in vis["describe.md"]


SERIES: dict[str, Any] = {
    "named": lambda: pd.Series([1, 2, 3], name="x"),
    "unnamed with nulls": lambda: pd.Series([1.0, None]),
    "integer name": lambda: pd.Series([1], name=5),
    "categorical, string index": lambda: pd.Series(
        pd.Categorical(["a", "b"]), name="c", index=pd.Index(["p", "q"], name="i")
    ),
    "tz datetimes": lambda: pd.Series(pd.date_range("2024-01-01", periods=2, tz="US/Eastern")),
    "object": lambda: pd.Series(["a", None], dtype=object, name="o"),
}


@pytest.mark.parametrize("case", list(SERIES))
def test_series_round_trip_is_exact(store: Store, case: str) -> None:
    s = SERIES[case]()
    store.save_artifact(s, "s")
    back = store.load_artifact("s")
    assert type(back) is pd.Series
    pd.testing.assert_series_equal(s, back, check_exact=True, check_index_type=True)


INDEXES: dict[str, Any] = {
    "int": lambda: pd.Index([1, 2, 3], name="n"),
    "range": lambda: pd.RangeIndex(3, 9, name="r"),
    "strings": lambda: pd.Index(["a", "b"]),
    "object": lambda: pd.Index(["a", None], dtype=object),
    "datetime tz with freq": lambda: pd.date_range("2024-01-01", periods=3, tz="UTC", name="t"),
    "multi": lambda: pd.MultiIndex.from_tuples([("a", 1), ("b", 2)], names=["x", "y"]),
    "categorical": lambda: pd.CategoricalIndex(["a", "b", "a"]),
}


@pytest.mark.parametrize("case", list(INDEXES))
def test_index_round_trip_is_exact(store: Store, case: str) -> None:
    idx = INDEXES[case]()
    store.save_artifact(idx, "i")
    back = store.load_artifact("i")
    assert type(back) is type(idx)
    pd.testing.assert_index_equal(idx, back, exact=True, check_exact=True)
    if hasattr(idx, "freq"):
        assert back.freq == idx.freq


def test_metadata_and_visualizations(store: Store) -> None:
    df = pd.DataFrame(
        {"a": [1, 2, 3, 4], "b": [1.5, None, 3.0, None], "s": ["x", "y,z", None, "w"]}
    )
    art = store.save_artifact(df, "df")
    meta = art.metadata
    assert meta["rows"] == 4 and meta["columns"] == 3
    assert meta["dtypes"] == {"a": "int64", "b": "float64", "s": str(df["s"].dtype)}
    assert meta["null_counts"] == {"a": 0, "b": 2, "s": 1}
    assert meta["memory_bytes"] == int(df.memory_usage(deep=True).sum())
    vis = {name: (kind, data) for name, kind, data in art.visualizations}
    assert vis["head.csv"][0] == "csv"
    assert vis["head.csv"][1].decode().splitlines()[:3] == [",a,b,s", "0,1,1.5,x", '1,2,,"y,z"']
    kind, md = vis["describe.md"]
    assert kind == "markdown"
    lines = md.decode().splitlines()
    assert lines[0] == "|  | a | b |" and lines[1].startswith("| --- |")
    assert "| mean | 2.5 | 2.25 |" in lines


def test_series_and_index_metadata(store: Store) -> None:
    art = store.save_artifact(pd.Series([1.0, None, 3.0], name="v"), "s")
    assert (art.metadata["rows"], art.metadata["columns"]) == (3, 1)
    assert art.metadata["null_counts"] == {"v": 1}
    art = store.save_artifact(pd.Index(["a", "b"], name="n"), "i")
    assert art.metadata["rows"] == 2 and art.metadata["dtypes"] == {"n": "str"}


def test_unwritable_frame_falls_back_with_a_clear_warning(store: Store) -> None:
    mixed = pd.DataFrame({"m": pd.Series([1, "a", 2.0], dtype=object)})
    with pytest.warns(UserWarning, match=r"pyarrow cannot write.*cloudpickle.*astype\(str\)"):
        art = store.save_artifact(mixed, "mixed")
    assert "artifact.pkl" in art.files
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _strict_frame_equal(mixed, store.load_artifact("mixed"))


def test_frames_do_not_warn(store: Store) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        store.save_artifact(FRAMES["nullable"](), "n")
        store.save_artifact(SERIES["named"](), "s")
        store.save_artifact(INDEXES["range"](), "i")


def test_appended_rows_reuse_the_stored_parts(tmp_path: Path) -> None:
    rows = 8 * 4096 + 100

    class SmallParts(PandasMaterializer):
        SKIP_REGISTRATION = True
        ROWS_PER_PART = 4096

    def frame(n: int, start: int = 0) -> Any:
        rng = np.random.default_rng(start)
        return pd.DataFrame(
            {"v": rng.random(n), "k": rng.integers(0, 9, n)}, index=pd.RangeIndex(start, start + n)
        )

    first = frame(rows)
    grown = pd.concat([first, frame(rows // 100, start=rows)])
    with Store.open(tmp_path / "s", chunk_size=64 << 10) as s:
        s.save_artifact(first, "df", materializer=SmallParts)
        base = s.stats()["stored_bytes"]
        s.save_artifact(grown, "df", materializer=SmallParts)
        new = s.stats()["stored_bytes"] - base
        _strict_frame_equal(grown, s.load_artifact("df"))
    assert new <= 0.10 * base, (new, base)


def test_export_import_stays_trusted(tmp_path: Path) -> None:
    df = FRAMES["categorical"]()
    with Store.open(tmp_path / "src") as src:
        src.save_artifact(df, "df")
        src.export(tmp_path / "x.alx")
    with Store.open(tmp_path / "dst") as dst:
        Store.import_(tmp_path / "x.alx", into=dst)
        _strict_frame_equal(df, dst.load_artifact("df"))


def test_missing_pandas_names_the_extra(tmp_path: Path) -> None:
    with Store.open(tmp_path / "s") as s:
        s.save_artifact(pd.DataFrame({"a": [1]}), "df")
    code = textwrap.dedent(
        f"""
        import sys
        sys.modules["pandas"] = None  # as if pandas were not installed
        from engine import Store
        with Store.open({str(tmp_path / "s")!r}) as s:
            try:
                s.load_artifact("df")
            except Exception as exc:
                print(type(exc).__name__, exc)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert "MaterializerError" in out.stdout
    assert "pip install 'artledger[pandas]'" in out.stdout


def test_text_writes_through_open_are_buffered_and_exact(store: Store) -> None:
    from materializers import BaseMaterializer

    class Csv:
        def __init__(self, frame: Any) -> None:
            self.frame = frame

    class CsvText(BaseMaterializer):
        SKIP_REGISTRATION = True

        def save(self, data: Csv) -> None:
            with self.open("data.csv", "w") as f:
                data.frame.to_csv(f)

        def load(self, data_type: type) -> str:
            with self.open("data.csv", "rb") as f:
                return f.read().decode()

    df = pd.DataFrame({"a": np.arange(50_000), "s": ["x,y", "é"] * 25_000})
    store.save_artifact(Csv(df), "csv", materializer=CsvText)
    assert store.load_artifact("csv") == df.to_csv(lineterminator="\n")


def test_engine_write_handles_are_buffered(store: Store) -> None:
    import io

    from engine.storage.files import WRITE_BUFFER, WriteFiles

    session = store.ledger.chunks.session()
    with session:
        files = WriteFiles(session, b"key")
        with files.open_write("x.bin") as f:
            assert isinstance(f, io.BufferedWriter)
            for i in range(10_000):
                f.write(i.to_bytes(4, "big"))
        assert files.entries["x.bin"].size == 40_000 and WRITE_BUFFER >= 64 << 10
