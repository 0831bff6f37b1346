"""pandas ``DataFrame``, ``Series`` and ``Index`` as Parquet parts.

The value becomes an Arrow table (``pa.Table.from_pandas``: the index, dtypes
including categoricals, tz-aware datetimes and nullable types are kept in
pandas' own schema metadata) and is written in the deduplicating part layout
of :mod:`materializers.arrow`. A ``Series`` is stored as a one-column frame, an
``Index`` as a frame with no columns. What Arrow does not bring back on its own
is recorded as hints in the schema and restored on load: ``object`` columns
(which pandas 3 would otherwise read back as ``str``), a ``RangeIndex`` of
column labels, a series without a name.

A frame pyarrow cannot write (a column mixing strings and numbers, duplicate
column names) is saved with the signed cloudpickle path instead, with a
``UserWarning`` saying why and how to make it Parquet-friendly.

This module imports pandas and pyarrow (``artledger[pandas]``); the registry
imports it only when a pandas value is saved or loaded.
"""

from __future__ import annotations

import threading
import warnings
import weakref
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, ClassVar, Final

from materializers._extras import require

require("pyarrow", "pandas")  # before materializers.arrow, so the message names this extra
pd = require("pandas", "pandas")

from materializers.arrow import (  # noqa: E402
    HEAD_ROWS,
    METADATA_MAX_COLUMNS,
    ParquetParts,
    hints,
    markdown_table,
    pa,
    read_parts,
    with_hints,
    write_parts,
)
from materializers.base import BaseMaterializer  # noqa: E402
from materializers.cloudpickle_materializer import (  # noqa: E402
    PICKLE_FILE,
    CloudpickleMaterializer,
)

_CONVERSION_ERRORS: Final = (pa.ArrowException, ValueError, TypeError)
OVERLAP_ROWS: Final = 100_000
"""From this many rows on, ``describe()`` for the visualizations runs on a side
thread while ``save`` encodes the parts (it costs about as much as encoding)."""

# id(value) -> (a weak reference to it, its describe() markdown being computed)
_summaries: dict[int, tuple[weakref.ref[Any], Future[str]]] = {}
_summaries_lock = threading.Lock()
_side: ThreadPoolExecutor | None = None


def _start_summary(data: Any, frame: Any) -> None:
    global _side
    key = id(data)
    with _summaries_lock:
        if _side is None:
            _side = ThreadPoolExecutor(1, thread_name_prefix="artledger-describe")
        job = _side.submit(_describe_markdown, frame.iloc[:, :METADATA_MAX_COLUMNS])
        _summaries[key] = (weakref.ref(data), job)
    weakref.finalize(data, _drop_summary, key, job)


def _drop_summary(key: int, job: Future[str]) -> None:
    with _summaries_lock:
        if key in _summaries and _summaries[key][1] is job:
            del _summaries[key]


def _take_summary(data: Any) -> Future[str] | None:
    with _summaries_lock:
        found = _summaries.pop(id(data), None)
    if found is None or found[0]() is not data:
        return None
    return found[1]


def _range(index: Any) -> list[Any] | None:
    """``[start, stop, step, name]`` of a RangeIndex with a simple name, else None."""
    if type(index) is pd.RangeIndex and (index.name is None or isinstance(index.name, str)):
        return [int(index.start), int(index.stop), int(index.step), index.name]
    return None


def _object_array(column: Any) -> Any:
    return column.to_numpy(zero_copy_only=False).astype(object, copy=False)


class PandasMaterializer(ParquetParts, BaseMaterializer):
    """``pd.DataFrame``, ``pd.Series`` and ``pd.Index`` (and pandas' own Index
    subclasses) as Parquet parts (see module docs)."""

    ASSOCIATED_TYPES: ClassVar[tuple[type, ...]] = (pd.DataFrame, pd.Series, pd.Index)
    ASSOCIATED_ARTIFACT_TYPE: ClassVar[str] = "data"
    VERSION: ClassVar[int] = 1

    @classmethod
    def can_handle_type(cls, data_type: type) -> bool:
        """The exact frame and series types, and the Index classes pandas itself defines."""
        if issubclass(data_type, pd.Index):
            return data_type.__module__.partition(".")[0] == "pandas"
        return data_type in (pd.DataFrame, pd.Series)

    @staticmethod
    def _frame(data: Any) -> tuple[str, Any]:
        if isinstance(data, pd.DataFrame):
            return "frame", data
        if isinstance(data, pd.Series):
            return "series", data.to_frame()
        return "index", pd.DataFrame(index=data)

    def save(self, data: Any) -> None:
        kind, frame = self._frame(data)
        if kind == "frame" and len(frame) >= OVERLAP_ROWS and frame.shape[1]:
            _start_summary(data, frame)
        found: dict[str, Any] = {"kind": kind}
        if kind == "series" and data.name is None:
            found["unnamed"] = True
        found["object_columns"] = [
            i
            for i, dtype in enumerate(frame.dtypes)
            if dtype == object  # noqa: E721
        ]
        columns_range = _range(frame.columns)
        if columns_range is not None:
            found["columns_range"] = columns_range
        if getattr(frame.index, "freq", None) is not None:
            found["index_freq"] = frame.index.freqstr
        no_columns = frame.shape[1] == 0
        if no_columns:
            # A table without columns would lose its row count: store the index as a column.
            index_range = _range(frame.index)
            if index_range is not None:
                found["index_range"] = index_range
            elif not isinstance(frame.index, pd.MultiIndex) and frame.index.dtype == object:
                found["object_index"] = True
        try:
            table = pa.Table.from_pandas(frame, preserve_index=True if no_columns else None)
        except _CONVERSION_ERRORS as exc:
            warnings.warn(
                f"pyarrow cannot write this pandas {kind} as Parquet ({type(exc).__name__}: "
                f"{exc}); saving it with cloudpickle, which only loads under the same Python "
                "and library versions. Give each column one type (e.g. "
                "df[col] = df[col].astype(str)) and unique string column names to store it "
                "as Parquet.",
                UserWarning,
                stacklevel=2,
            )
            CloudpickleMaterializer(self.files).save(data)
            return
        write_parts(self, with_hints(table, found), type(self))

    def load(self, data_type: type) -> Any:
        if PICKLE_FILE in self.files.names():
            return CloudpickleMaterializer(self.files).load(data_type)
        table = read_parts(self)
        found = hints(table)
        frame = table.to_pandas()
        for i in found.get("object_columns", []):
            column = _object_array(table.column(i))
            frame.isetitem(i, pd.Series(column, index=frame.index, dtype=object))
        if "columns_range" in found:
            start, stop, step, name = found["columns_range"]
            frame.columns = pd.RangeIndex(start, stop, step, name=name)
        if "index_range" in found:
            start, stop, step, name = found["index_range"]
            frame.index = pd.RangeIndex(start, stop, step, name=name)
        elif found.get("object_index"):
            column = table.column(table.num_columns - 1)
            frame.index = pd.Index(_object_array(column), dtype=object, name=frame.index.name)
        if "index_freq" in found:
            frame.index = type(frame.index)(frame.index, freq=found["index_freq"])
        kind = found.get("kind", "frame")
        if kind == "series":
            series = frame.iloc[:, 0]
            if found.get("unnamed"):
                series.name = None
            return series
        if kind == "index":
            return frame.index
        return frame

    def extract_metadata(self, data: Any) -> dict[str, Any]:
        kind, frame = self._frame(data)
        if kind == "index":
            frame = data.to_frame(index=False)
        shown = frame.iloc[:, :METADATA_MAX_COLUMNS]
        nulls = shown.isna().sum()
        meta: dict[str, Any] = {
            "rows": int(frame.shape[0]),
            "columns": int(frame.shape[1]),
            "dtypes": {str(c): str(t) for c, t in zip(shown.columns, shown.dtypes, strict=True)},
            "null_counts": {str(c): int(n) for c, n in zip(shown.columns, nulls, strict=True)},
            "memory_bytes": int(data.memory_usage(deep=True).sum())
            if kind == "frame"
            else int(data.memory_usage(deep=True)),
        }
        if frame.shape[1] > METADATA_MAX_COLUMNS:
            meta["columns_shown"] = METADATA_MAX_COLUMNS
        return meta

    def save_visualizations(self, data: Any) -> dict[str, str]:
        kind, frame = self._frame(data)
        if kind == "index":
            frame = data.to_frame(index=False)
        frame = frame.iloc[:, :METADATA_MAX_COLUMNS]
        with self.open("head.csv", "w") as f:
            frame.head(HEAD_ROWS).to_csv(f, lineterminator="\n")
        job = _take_summary(data)
        with self.open("describe.md", "w") as f:
            f.write(_describe_markdown(frame) if job is None else job.result())
        return {"head.csv": "csv", "describe.md": "markdown"}


def _fmt(value: Any) -> Any:
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


def _describe_markdown(frame: Any) -> str:
    if frame.shape[1] == 0:
        return f"{frame.shape[0]} rows, no columns\n"
    try:
        described = frame.describe()
    except (ValueError, TypeError) as exc:
        return f"describe() failed: {exc}\n"
    header = ["", *[str(c) for c in described.columns]]
    rows = [
        [str(stat), *[_fmt(v) for v in values]]
        for stat, values in zip(described.index, described.itertuples(index=False), strict=True)
    ]
    return markdown_table(header, rows)
