"""polars ``DataFrame`` as Parquet parts.

``df.to_arrow()`` is written in the deduplicating part layout of
:mod:`materializers.arrow`; loading reads the Arrow table back and hands it to
``pl.from_arrow``, so dtypes (categoricals and enums, tz-aware datetimes,
nested lists and structs) come back as they were.

This module imports polars and pyarrow (``artledger[polars]``); the registry
imports it only when a polars value is saved or loaded.
"""

from __future__ import annotations

from typing import Any, ClassVar

from materializers._extras import require

require("pyarrow", "polars")  # before materializers.arrow, so the message names this extra
pl = require("polars", "polars")

from materializers.arrow import (  # noqa: E402
    HEAD_ROWS,
    METADATA_MAX_COLUMNS,
    ParquetParts,
    csv_text,
    markdown_table,
    read_parts,
    write_parts,
)
from materializers.base import BaseMaterializer  # noqa: E402


class PolarsMaterializer(ParquetParts, BaseMaterializer):
    """``pl.DataFrame`` as Parquet parts (see module docs)."""

    ASSOCIATED_TYPES: ClassVar[tuple[type, ...]] = (pl.DataFrame,)
    ASSOCIATED_ARTIFACT_TYPE: ClassVar[str] = "data"
    VERSION: ClassVar[int] = 1

    @classmethod
    def can_handle_type(cls, data_type: type) -> bool:
        return data_type is pl.DataFrame

    def save(self, data: Any) -> None:
        write_parts(self, data.to_arrow(), type(self))

    def load(self, data_type: type) -> Any:
        return pl.from_arrow(read_parts(self), rechunk=False)

    def extract_metadata(self, data: Any) -> dict[str, Any]:
        shown = data.columns[:METADATA_MAX_COLUMNS]
        nulls = data.select(shown).null_count().row(0) if shown else ()
        meta: dict[str, Any] = {
            "rows": int(data.height),
            "columns": int(data.width),
            "dtypes": {name: str(data.schema[name]) for name in shown},
            "null_counts": {name: int(n) for name, n in zip(shown, nulls, strict=True)},
            "memory_bytes": int(data.estimated_size()),
        }
        if data.width > METADATA_MAX_COLUMNS:
            meta["columns_shown"] = METADATA_MAX_COLUMNS
        return meta

    def save_visualizations(self, data: Any) -> dict[str, str]:
        frame = data.select(data.columns[:METADATA_MAX_COLUMNS])
        with self.open("head.csv", "w") as f:
            f.write(csv_text(frame.columns, [list(r) for r in frame.head(HEAD_ROWS).rows()]))
        with self.open("describe.md", "w") as f:
            if frame.width:
                described = frame.describe()
                f.write(markdown_table(described.columns, [list(r) for r in described.rows()]))
            else:
                f.write(f"{frame.height} rows, no columns\n")
        return {"head.csv": "csv", "describe.md": "markdown"}
