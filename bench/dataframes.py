"""Scenario 11: pandas DataFrames — dedup when a frame grows, save/load speed, CSV writes."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import (
    Context,
    MiB,
    Result,
    Row,
    fsync_path,
    median_time,
    new_path,
    pickle_load,
    pickle_save,
)

TITLE = "DataFrames"
ABOUT = (
    "A pandas DataFrame of N rows (int64 id, int64 user, float64 value, a low-cardinality "
    "categorical, a tz-aware timestamp, a short string per row) saved, then saved again with "
    "1% more rows appended: new stored bytes as a share of the first save, for the Parquet-part "
    "layout (ROWS_PER_PART rows per part), the same with content-defined pages, one Parquet "
    "file with and without content-defined chunking, and cloudpickle. Then save/load time "
    "against `df.to_parquet` + fsync / `pd.read_parquet` and against cloudpickle + fsync / "
    "load, and `df.to_csv(f)` through `self.open(name, 'w')` against a plain file, all in the "
    "same run."
)
PARAMS: dict[str, dict[str, Any]] = {
    "tiny": {"rows": 20_000, "part_rows": 2048, "chunk": 64 << 10, "csv_rows": 20_000},
    "small": {"rows": 200_000, "part_rows": 16384, "chunk": 1 << 20, "csv_rows": 100_000},
    "full": {"rows": 1_000_000, "part_rows": 65536, "chunk": 4 << 20, "csv_rows": 200_000},
}


def make_frame(rows: int, start: int = 0, seed: int = 11) -> Any:
    """The benchmark frame: rows ``start`` .. ``start + rows`` (deterministic)."""
    import pandas as pd

    rng = np.random.default_rng(seed + start)
    ids = np.arange(start, start + rows, dtype=np.int64)
    return pd.DataFrame(
        {
            "id": ids,
            "user": rng.integers(0, 50_000, rows),
            "value": rng.random(rows),
            "country": pd.Categorical(rng.choice(["de", "fr", "us", "jp", "br"], rows)),
            "ts": pd.Timestamp("2024-01-01", tz="UTC") + pd.to_timedelta(ids, unit="s"),
            "label": [f"item-{i % 9973}" for i in ids],
        },
        index=pd.RangeIndex(start, start + rows),
    )


def _variants(part_rows: int) -> dict[str, Any]:
    """Materializer classes for the layouts compared (not registered for any type)."""
    from materializers.cloudpickle_materializer import CloudpickleMaterializer
    from materializers.pandas import PandasMaterializer

    def variant(name: str, rows: int, cdc: bool) -> type:
        attrs = {"SKIP_REGISTRATION": True, "ROWS_PER_PART": rows}
        attrs["CONTENT_DEFINED_CHUNKING"] = cdc
        return type(name, (PandasMaterializer,), attrs)

    return {
        f"parts of {part_rows:,} rows (the default layout)": variant("Parts", part_rows, False),
        f"parts of {part_rows:,} rows + CDC": variant("PartsCdc", part_rows, True),
        "one Parquet file + CDC": variant("OneFileCdc", 1 << 40, True),
        "one plain Parquet file": variant("OneFile", 1 << 40, False),
        "cloudpickle": CloudpickleMaterializer,
    }


def _new_bytes(store_dir: Path, chunk: int, cls: type, first: Any, grown: Any) -> tuple[int, int]:
    from engine import Store

    with Store.open(store_dir, chunk_size=chunk) as s:
        s.save_artifact(first, "df", materializer=cls)
        a = s.stats()["stored_bytes"]
        s.save_artifact(grown, "df", materializer=cls)
        b = s.stats()["stored_bytes"]
        back = s.load_artifact("df")
        assert back.shape == grown.shape
    return a, b - a


def _to_parquet(df: Any, path: Path) -> None:
    df.to_parquet(path)
    fsync_path(path)


def _cloudpickle_save(obj: Any, path: Path) -> None:
    import cloudpickle

    pickle_save(obj, path, cloudpickle.dump)


def _dedup(ctx: Context, res: Result, tmp: Path, p: dict[str, Any]) -> None:
    import pandas as pd

    rows = p["rows"]
    first = make_frame(rows)
    grown = pd.concat([first, make_frame(max(1, rows // 100), start=rows)])
    plain_share = None
    for i, (label, cls) in enumerate(_variants(p["part_rows"]).items()):
        ctx.log(f"dataframes: dedup, {label}")
        base, new = _new_bytes(tmp / f"dedup{i}", p["chunk"], cls, first, grown)
        share = 100.0 * new / base
        if label == "one plain Parquet file":
            plain_share = share
        if i == 0:
            row = Row(
                f"{rows:,} rows + 1% appended: new stored bytes, share of the first save",
                share,
                "%",
                goal=("ours<=", 10.0),
                note=f"first save {base / MiB:.2f} MiB stored, second +{new / MiB:.2f} MiB",
            )
            first_row = row
        else:
            res.notes.append(
                f"Dedup, {label}: +{share:.1f}% ({new / MiB:.2f} MiB new after "
                f"{base / MiB:.2f} MiB)."
            )
    first_row.baseline, first_row.baseline_name = plain_share, "one plain Parquet file"
    res.add(first_row)


def _interleaved(
    jobs: list[tuple[Callable[[Any], Any], Callable[[], Any] | None]], repeats: int
) -> list[float]:
    """Median wall time of each ``fn(setup())``, the jobs taking turns in every repeat."""
    times: list[list[float]] = [[] for _ in jobs]
    for _ in range(max(1, repeats)):
        for (fn, setup), out in zip(jobs, times, strict=True):
            out.append(median_time(fn, 1, setup))
    return [statistics.median(t) for t in times]


def _speed(ctx: Context, res: Result, tmp: Path, p: dict[str, Any]) -> None:
    import pandas as pd

    from engine import Store

    df = make_frame(p["rows"])
    stores: list[Any] = []

    def fresh() -> Any:
        if stores:
            stores[-1].close()
        stores.append(Store.open(tmp / f"speed{len(stores)}"))
        return stores[-1]

    ctx.log("dataframes: save/load speed")
    # Interleaved (ours, then each baseline, in every repeat): the machine's load
    # drifts, and a baseline timed a few seconds later may see a different machine.
    save, pq_save, pk_save = _interleaved(
        [
            (lambda st: st.save_artifact(df, "df"), fresh),
            (lambda _: _to_parquet(df, new_path(tmp, "df.parquet")), None),
            (lambda _: _cloudpickle_save(df, new_path(tmp, "df.pkl")), None),
        ],
        ctx.repeats,
    )
    s = stores[-1]
    pd.testing.assert_frame_equal(s.load_artifact("df"), df)
    df.to_parquet(tmp / "df.parquet")
    _cloudpickle_save(df, tmp / "df.pkl")
    load, pq_load, pk_load = _interleaved(
        [
            (lambda _: s.load_artifact("df"), None),
            (lambda _: pd.read_parquet(tmp / "df.parquet"), None),
            (lambda _: pickle_load(tmp / "df.pkl"), None),
        ],
        ctx.repeats,
    )
    s.close()
    n = f"{p['rows']:,}-row DataFrame"
    goal = ("ratio>=", 0.8)
    res.add(Row(f"{n}: save", save * 1e3, "ms", pq_save * 1e3, "to_parquet+fsync", goal=goal))
    res.add(Row(f"{n}: load", load * 1e3, "ms", pq_load * 1e3, "pd.read_parquet", goal=goal))
    res.add(Row(f"{n}: save", save * 1e3, "ms", pk_save * 1e3, "cloudpickle+fsync"))
    res.add(Row(f"{n}: load", load * 1e3, "ms", pk_load * 1e3, "pickle.load"))


class _Csv:
    """A frame to be written as CSV text by :class:`_CsvMaterializer`."""

    def __init__(self, frame: Any) -> None:
        self.frame = frame
        self.seconds = 0.0


def _csv_materializer() -> type:
    from materializers import BaseMaterializer

    class CsvText(BaseMaterializer):
        SKIP_REGISTRATION = True

        def save(self, data: _Csv) -> None:
            t = time.perf_counter()
            with self.open("data.csv", "w") as f:
                data.frame.to_csv(f)
            data.seconds = time.perf_counter() - t

    return CsvText


def _csv(ctx: Context, res: Result, tmp: Path, p: dict[str, Any]) -> None:
    from engine import Store

    df = make_frame(p["csv_rows"])
    cls = _csv_materializer()
    ctx.log("dataframes: to_csv through self.open")
    ours, plain = [], []
    with Store.open(tmp / "csv") as s:
        for _ in range(max(3, ctx.repeats * 2)):  # interleaved: the machine's load drifts
            job = _Csv(df)
            s.save_artifact(job, "csv", materializer=cls)
            ours.append(job.seconds)
            t = time.perf_counter()
            with open(new_path(tmp, "df.csv"), "w", encoding="utf-8", newline="\n") as f:
                df.to_csv(f)
            plain.append(time.perf_counter() - t)
        assert s.get_artifact("csv").files == ["data.csv"]
    res.add(
        Row(
            f"df.to_csv(f) of {p['csv_rows']:,} rows through self.open(name, 'w')",
            statistics.median(ours) * 1e3,
            "ms",
            statistics.median(plain) * 1e3,
            "the same call on a plain file",
            goal=("ratio>=", 1 / 1.2),
            goal_text="≤ 1.2x the plain file",
        )
    )


def run(ctx: Context) -> Result:
    res = Result("dataframes", TITLE, ABOUT)
    try:
        import pandas  # noqa: F401
        import pyarrow  # noqa: F401
    except ImportError as exc:
        res.skipped = f"{exc.name} is not installed (pip install 'artledger[pandas]')"
        return res
    p = PARAMS[ctx.size]
    with ctx.tempdir("dataframes") as tmp:
        _dedup(ctx, res, tmp, p)
        _speed(ctx, res, tmp, p)
        _csv(ctx, res, tmp, p)
    res.notes.append(
        "Saves include metadata (rows, dtypes, null counts, memory size) and the head.csv / "
        "describe.md visualizations; loads are from the page cache."
    )
    return res
