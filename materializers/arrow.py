"""Arrow tables as Parquet part files, laid out for deduplication.

The format (shared by the pandas and polars materializers):

* ``schema.arrow`` — the table's Arrow schema with its metadata (pandas'
  index and dtype hints, this package's own hints under ``artledger``), as an
  Arrow IPC schema message.
* ``parts/00000.parquet``, ``parts/00001.parquet``, ... — the rows, cut every
  ``ROWS_PER_PART`` rows, each an ordinary Parquet file (one row group, pages
  cut by pyarrow's content-defined chunking) with no schema metadata.

Why parts: the engine cuts each file into fixed-size chunks, so one Parquet
file that grows by appended rows, or whose row group changes size, shifts
every byte after the change and re-uses little. With parts, a frame grown by
appended rows re-uses every full part unchanged; a few changed rows rewrite
only their parts; and the metadata that changes with the row count (pandas'
RangeIndex) lives in the small ``schema.arrow``, not in each part.

Reads go through ``ParquetFile(buffer).read()`` on bytes already read from
the store: ``pq.read_table`` on a Python file object made processes abort at
exit on this kind of machine.

This module imports pyarrow; the registry imports it only when an Arrow (or
pandas, polars) value is saved or loaded.
"""

from __future__ import annotations

import functools
import json
import math
import os
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, ClassVar, Final

from engine.errors import MaterializerError
from materializers._extras import require
from materializers.base import BaseMaterializer

pa = require("pyarrow", "arrow")
pq = require("pyarrow.parquet", "arrow")

SCHEMA_FILE: Final = "schema.arrow"
PART_DIR: Final = "parts"
HINTS_KEY: Final = b"artledger"
HEAD_ROWS: Final = 10
METADATA_MAX_COLUMNS: Final = 200
READ_BLOCK: Final = 4 << 20


class ParquetParts:
    """How tables are cut and encoded; the materializers' class attributes."""

    ROWS_PER_PART: ClassVar[int] = 65536
    """Rows per part file (and its single row group)."""
    CONTENT_DEFINED_CHUNKING: ClassVar[bool | dict[str, int]] = False
    """Passed to pyarrow as ``use_content_defined_chunking``. Off: a part is
    rewritten whole when any of its rows change, and the engine's chunks have
    fixed sizes, so content-defined pages re-use nothing more (measured in
    ``bench/dataframes.py``) and cost about 20% more encoding time."""
    COMPRESSION: ClassVar[str] = "zstd"
    """Parquet's own compression (pyarrow's default level). zstd pages leave the
    engine's chunk compression nothing to do: smaller and faster than snappy plus
    the engine's zstd."""
    COMPRESSION_LEVEL: ClassVar[int | None] = None
    """The codec's level; ``None`` for pyarrow's default."""


def _workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def _ordered(jobs: Iterator[Callable[[], Any]], window: int) -> Iterator[Any]:
    """Run ``jobs`` on a few threads (pyarrow releases the GIL), yielding results in order."""
    if window <= 1:
        for job in jobs:
            yield job()
        return
    with ThreadPoolExecutor(max_workers=window) as pool:
        inflight: deque[Future[Any]] = deque()
        for job in jobs:
            if len(inflight) >= window:
                yield inflight.popleft().result()
            inflight.append(pool.submit(job))
        while inflight:
            yield inflight.popleft().result()


def write_parts(mat: BaseMaterializer, table: Any, fmt: type[ParquetParts]) -> None:
    """Write ``table`` (a ``pyarrow.Table``) as ``schema.arrow`` plus Parquet parts."""
    with mat.open(SCHEMA_FILE, "wb") as f:
        f.write(memoryview(table.schema.serialize()))
    bare = table.replace_schema_metadata(None)
    step = max(1, int(fmt.ROWS_PER_PART))
    # Dictionary pages pay off for strings; for numbers, each part would try one,
    # overflow it and fall back to plain pages, at twice the encoding time.
    dictionary = [f.name for f in bare.schema if _dictionary_friendly(f.type)]
    starts = range(0, table.num_rows, step) if table.num_rows else range(1)

    def encode(start: int) -> Any:
        sink = pa.BufferOutputStream()
        pq.write_table(
            bare.slice(start, step),
            sink,
            row_group_size=step,
            compression=fmt.COMPRESSION,
            compression_level=fmt.COMPRESSION_LEVEL,
            use_dictionary=dictionary,
            use_content_defined_chunking=fmt.CONTENT_DEFINED_CHUNKING,
            # Parts are always read whole: min/max statistics would cost ~10% of the
            # encoding time and never be used.
            write_statistics=False,
        )
        return sink.getvalue()

    jobs = (functools.partial(encode, start) for start in starts)
    for i, buf in enumerate(_ordered(jobs, _workers())):
        with mat.open(f"{PART_DIR}/{i:05d}.parquet", "wb") as f:
            f.write(memoryview(buf))


def _dictionary_friendly(t: Any) -> bool:
    return bool(
        pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or pa.types.is_binary(t)
        or pa.types.is_large_binary(t)
        or pa.types.is_dictionary(t)
        or getattr(pa.types, "is_string_view", lambda _: False)(t)
    )


def _read_all(mat: BaseMaterializer, name: str) -> bytearray:
    size = mat.files.size(name)
    buf = bytearray(size)
    view = memoryview(buf)
    with mat.open(name, "rb") as f:
        done = 0
        readinto = getattr(f, "readinto", None)
        while done < size:
            if readinto is not None:
                n = readinto(view[done:])
            else:
                chunk = f.read(min(READ_BLOCK, size - done))
                n = len(chunk)
                view[done : done + n] = chunk
            if not n:
                raise MaterializerError(f"{name} ends after {done} of {size} bytes")
            done += n
    return buf


def read_parts(mat: BaseMaterializer) -> Any:
    """The ``pyarrow.Table`` written by :func:`write_parts`, schema metadata included."""
    names = mat.files.names()
    if SCHEMA_FILE not in names:
        raise MaterializerError(f"the artifact has no {SCHEMA_FILE}; it is not a Parquet table")
    try:
        schema = pa.ipc.read_schema(pa.py_buffer(bytes(_read_all(mat, SCHEMA_FILE))))
    except (pa.ArrowInvalid, OSError) as exc:
        raise MaterializerError(f"{SCHEMA_FILE} is not an Arrow schema: {exc}") from exc
    parts = sorted(n for n in names if n.startswith(PART_DIR + "/") and n.endswith(".parquet"))

    def decode(name: str, data: bytearray) -> Any:
        try:
            # Parts decode in parallel on our pool; Arrow's own pool stays idle
            # (its threads running at interpreter exit have aborted processes).
            return pq.ParquetFile(pa.BufferReader(pa.py_buffer(data))).read(use_threads=False)
        except (pa.ArrowException, OSError) as exc:
            raise MaterializerError(f"{name} is not a readable Parquet file: {exc}") from exc

    def jobs() -> Iterator[Callable[[], Any]]:
        for name in parts:  # read here, in the calling thread; decode on the pool
            data = _read_all(mat, name)
            yield functools.partial(decode, name, data)

    tables = list(_ordered(jobs(), _workers() if len(parts) > 1 else 1))
    bare = schema.remove_metadata()
    if not tables:
        return bare.empty_table().replace_schema_metadata(schema.metadata)
    try:
        table = pa.concat_tables(tables)
        # str(): Parquet names list items "element"; schema equality overlooks that.
        if str(table.schema) != str(bare):
            table = table.cast(bare)
    except (pa.ArrowException, ValueError) as exc:
        raise MaterializerError(f"the Parquet parts do not match {SCHEMA_FILE}: {exc}") from exc
    return table.replace_schema_metadata(schema.metadata)


def hints(table_or_schema: Any) -> dict[str, Any]:
    """This package's hints stored in a schema's metadata (``{}`` if none)."""
    meta = table_or_schema.schema.metadata if hasattr(table_or_schema, "schema") else None
    raw = (meta or {}).get(HINTS_KEY)
    return dict(json.loads(raw)) if raw else {}


def with_hints(table: Any, values: dict[str, Any]) -> Any:
    """``table`` with ``values`` added to its schema metadata as this package's hints."""
    meta = dict(table.schema.metadata or {})
    meta[HINTS_KEY] = json.dumps(values).encode()
    return table.replace_schema_metadata(meta)


# -- metadata and visualizations shared by the tabular materializers ----------------


def table_metadata(table: Any) -> dict[str, Any]:
    """Rows, columns, dtypes, null counts and memory size of an Arrow table."""
    fields = list(table.schema)[:METADATA_MAX_COLUMNS]
    meta: dict[str, Any] = {
        "rows": int(table.num_rows),
        "columns": int(table.num_columns),
        "dtypes": {f.name: str(f.type) for f in fields},
        "null_counts": {f.name: int(table.column(i).null_count) for i, f in enumerate(fields)},
        "memory_bytes": int(table.nbytes),
    }
    if table.num_columns > METADATA_MAX_COLUMNS:
        meta["columns_shown"] = METADATA_MAX_COLUMNS
    return meta


def cell(value: Any) -> str:
    """One value as text for a CSV or markdown cell."""
    if value is None:
        return ""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return str(value)


def csv_text(header: list[str], rows: list[list[Any]]) -> str:
    """RFC 4180 CSV text (quoted where needed, ``\\n`` line ends)."""

    def quote(value: Any) -> str:
        text = cell(value)
        if any(c in text for c in ',"\n\r'):
            text = '"' + text.replace('"', '""') + '"'
        return text

    lines = [",".join(quote(h) for h in header)]
    lines += [",".join(quote(v) for v in row) for row in rows]
    return "\n".join(lines) + "\n"


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    """A GitHub-flavoured markdown table."""

    def esc(value: Any) -> str:
        return cell(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(esc(h) for h in header) + " |"]
    lines.append("|" + "|".join(" --- " for _ in header) + "|")
    lines += ["| " + " | ".join(esc(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def arrow_describe(table: Any) -> tuple[list[str], list[list[Any]]]:
    """``describe()``-like statistics of an Arrow table: one row per statistic."""
    pc = require("pyarrow.compute", "arrow")
    stats = ["count", "null_count", "mean", "min", "max"]
    header = ["statistic", *[f.name for f in table.schema][:METADATA_MAX_COLUMNS]]
    rows: list[list[Any]] = [[s] for s in stats]
    for i, field in enumerate(list(table.schema)[:METADATA_MAX_COLUMNS]):
        col = table.column(i)
        numeric = pa.types.is_integer(field.type) or pa.types.is_floating(field.type)
        orderable = numeric or pa.types.is_temporal(field.type) or pa.types.is_string(field.type)
        values: dict[str, Any] = {
            "count": len(col) - col.null_count,
            "null_count": col.null_count,
            "mean": pc.mean(col).as_py() if numeric and len(col) else None,
        }
        if orderable and len(col) > col.null_count:
            mm = pc.min_max(col).as_py()
            values["min"], values["max"] = mm["min"], mm["max"]
        for row, stat in zip(rows, stats, strict=True):
            row.append(values.get(stat))
    return header, rows


class ArrowMaterializer(ParquetParts, BaseMaterializer):
    """``pyarrow.Table`` and ``pyarrow.RecordBatch`` as Parquet parts (see module docs)."""

    ASSOCIATED_TYPES: ClassVar[tuple[type, ...]] = (pa.Table, pa.RecordBatch)
    ASSOCIATED_ARTIFACT_TYPE: ClassVar[str] = "data"
    VERSION: ClassVar[int] = 1

    @classmethod
    def can_handle_type(cls, data_type: type) -> bool:
        return data_type in (pa.Table, pa.RecordBatch)

    @staticmethod
    def _table(data: Any) -> Any:
        return pa.Table.from_batches([data]) if isinstance(data, pa.RecordBatch) else data

    def save(self, data: Any) -> None:
        write_parts(self, self._table(data), type(self))

    def load(self, data_type: type) -> Any:
        table = read_parts(self)
        if data_type is not pa.Table:  # a RecordBatch
            table = table.combine_chunks()
            arrays = [
                pa.concat_arrays(c.chunks) if c.num_chunks else pa.array([], c.type)
                for c in table.columns
            ]
            return pa.RecordBatch.from_arrays(arrays, schema=table.schema)
        return table

    def extract_metadata(self, data: Any) -> dict[str, Any]:
        return table_metadata(self._table(data))

    def save_visualizations(self, data: Any) -> dict[str, str]:
        table = self._table(data)
        head = table.slice(0, HEAD_ROWS)
        columns = [head.column(i).to_pylist() for i in range(head.num_columns)]
        rows = [list(row) for row in zip(*columns, strict=True)] if columns else []
        with self.open("head.csv", "w") as f:
            f.write(csv_text([f.name for f in table.schema], rows))
        header, stats = arrow_describe(table)
        with self.open("describe.md", "w") as f:
            f.write(markdown_table(header, stats))
        return {"head.csv": "csv", "describe.md": "markdown"}
