"""numpy arrays as plain ``.npy`` files, streamed both ways.

* ``ndarray`` -> ``data.npy``; a numpy scalar (``np.float32(1)``,
  ``np.datetime64(...)``) -> ``scalar.npy`` holding a 0-d array, loaded back
  as the scalar. Both are ordinary ``.npy`` files ``np.load`` reads.
* Saving writes the header, then the array's memory in slices of
  ``CHUNK_BYTES`` (no copy for C- or Fortran-contiguous arrays; other views
  are copied a bounded block at a time). Loading allocates the array and
  ``readinto``\\s its buffer directly: no whole-artifact bytes object.
* Arrays whose dtype holds Python objects cannot be raw bytes: they go through
  the signed cloudpickle path (``artifact.pkl``).

This module imports numpy; the registry imports it only when a numpy type is
looked up, so ``import materializers`` stays cheap.
"""

from __future__ import annotations

import ast
import functools
import html
import struct
import warnings
from collections.abc import Hashable, Iterator
from typing import IO, Any, ClassVar, Final

import numpy as np
import numpy.typing as npt

from engine.errors import MaterializerError
from materializers.base import BaseMaterializer
from materializers.cloudpickle_materializer import PICKLE_FILE, CloudpickleMaterializer

ARRAY_FILE: Final = "data.npy"
SCALAR_FILE: Final = "scalar.npy"
PREVIEW_MAX_ELEMENTS: Final = 1000
MAX_HEADER_BYTES: Final = 1 << 20


class NumpyMaterializer(BaseMaterializer):
    """``np.ndarray`` and numpy scalar types, in ``.npy`` format."""

    ASSOCIATED_TYPES: ClassVar[tuple[type, ...]] = (np.ndarray, np.generic)
    ASSOCIATED_ARTIFACT_TYPE: ClassVar[str] = "data"
    VERSION: ClassVar[int] = 1
    CHUNK_BYTES: ClassVar[int] = 16 << 20
    """Largest slice handed to a single ``write``/``readinto``."""
    CHUNKING: ClassVar[str | None] = "cdc"
    """How the engine cuts ``data.npy``: content-defined chunks, so rows inserted
    or deleted near the start of a large array store only the chunks around
    them (fixed chunks would all shift); measured to cost nothing visible on
    a raw float64 save (docs/design.md, "Chunks and packs")."""

    @classmethod
    def can_handle_type(cls, data_type: type) -> bool:
        """``ndarray`` itself (and ``np.memmap``, loaded as ``ndarray``) and
        numpy's own scalar types; other subclasses (``np.matrix``, masked
        arrays) would lose their type."""
        if issubclass(data_type, np.generic):
            return data_type.__module__ == "numpy"
        return data_type is np.ndarray or issubclass(data_type, np.memmap)

    def save(self, data: Any) -> None:
        is_scalar = isinstance(data, np.generic)
        array = np.asarray(data)
        if array.dtype.hasobject:
            CloudpickleMaterializer(self.files).save(data)
            return
        header = _header_bytes(array)  # padded to 64 bytes: elements stay aligned
        name = SCALAR_FILE if is_scalar else ARRAY_FILE
        itemsize = _shuffle_itemsize(array.dtype)
        with self.open(name, "wb", itemsize=itemsize, chunking=self.CHUNKING) as f:
            f.write(header)
            for block in _byte_blocks(array, _write_limit(f, self.CHUNK_BYTES)):
                f.write(block)

    def load(self, data_type: type) -> Any:
        names = self.files.names()
        if PICKLE_FILE in names:
            return CloudpickleMaterializer(self.files).load(data_type)
        if SCALAR_FILE in names:
            return self._read(SCALAR_FILE)[()]
        return self._read(ARRAY_FILE)

    def _read(self, name: str) -> npt.NDArray[Any]:
        with self.open(name, "rb") as f:
            shape, fortran_order, dtype = _read_header(f, name)
            if dtype.hasobject:
                raise MaterializerError(
                    f"{name} holds Python objects; artledger stores those as signed pickles "
                    "and will not load them from a .npy file."
                )
            array = np.empty(shape, dtype=dtype, order="F" if fortran_order else "C")
            if array.nbytes:
                _read_into(f, _raw_bytes(array), self.CHUNK_BYTES, name)
            if f.read(1):
                raise MaterializerError(f"{name} has bytes after the array data; it is damaged.")
        return array

    def extract_metadata(self, data: Any) -> dict[str, Any]:
        array = np.asarray(data)
        meta: dict[str, Any] = {
            "shape": list(array.shape),
            "dtype": str(array.dtype),
            "bytes": int(array.nbytes),
        }
        meta.update(_stats(array))
        return meta

    def _metadata_reuse_key(self, data: Any) -> Hashable | None:
        """The statistics are a function of the elements, their dtype and shape
        (all in ``data.npy``'s bytes) and of the memory layout numpy reduces
        over (strides and alignment can change the last bit of ``mean``); a
        subclass with its own ``extract_metadata`` gets no reuse."""
        if type(self).extract_metadata is not NumpyMaterializer.extract_metadata:
            return None
        array = np.asarray(data)
        if array.dtype.hasobject:
            return None
        return (
            type(data),
            array.dtype,
            str(array.dtype),
            array.shape,
            array.strides,
            array.ctypes.data % 64,
        )

    def save_visualizations(self, data: Any) -> dict[str, str]:
        array = np.asarray(data)
        if (
            array.ndim in (1, 2)
            and array.size <= PREVIEW_MAX_ELEMENTS
            and not array.dtype.hasobject
        ):
            rows = array if array.ndim == 2 else array[:, None]
            with self.open("preview.csv", "w") as f:
                for row in rows:
                    f.write(",".join(_csv_cell(x) for x in row) + "\n")
            with self.open("preview.html", "w") as f:
                f.write(_html_table(rows, array))
            return {"preview.csv": "csv", "preview.html": "html"}
        with self.open("summary.md", "w") as f:
            meta = self.metadata if self.metadata is not None else self.extract_metadata(data)
            f.write(_markdown_summary(array, meta))
        return {"summary.md": "markdown"}


_HEADER_FORMATS: Final = (
    ((1, 0), "<H", "latin1"),
    ((2, 0), "<I", "latin1"),
    ((3, 0), "<I", "utf8"),
)
_HEADER_KEYS: Final = frozenset({"descr", "fortran_order", "shape"})


def _header_bytes(array: npt.NDArray[Any]) -> bytes:
    """The .npy header for ``array``, in the oldest format version that can
    hold it (3.0 only for non-latin-1 field names), padded to 64 bytes."""
    fields = np.lib.format.header_data_from_array_1_0(array)
    text = "{" + "".join(f"'{key}': {value!r}, " for key, value in sorted(fields.items())) + "}"
    for version, length_format, encoding in _HEADER_FORMATS:
        try:
            body = text.encode(encoding)
        except UnicodeEncodeError:
            continue
        prefix = len(np.lib.format.MAGIC_PREFIX) + 2 + struct.calcsize(length_format)
        padding = 64 - (prefix + len(body) + 1) % 64
        try:
            length = struct.pack(length_format, len(body) + padding + 1)
        except struct.error:  # too long for a 1.0 header
            continue
        return np.lib.format.magic(*version) + length + body + b" " * padding + b"\n"
    raise MaterializerError(f"dtype {array.dtype} has a header too large for a .npy file.")


def _read_header(f: IO[bytes], name: str) -> tuple[tuple[int, ...], bool, np.dtype[Any]]:
    """(shape, fortran_order, dtype) from a .npy header of any version."""
    try:
        version = np.lib.format.read_magic(f)
        formats = {v: (length_format, encoding) for v, length_format, encoding in _HEADER_FORMATS}
        if version not in formats:
            raise ValueError(f"unknown .npy format version {version}")
        length_format, encoding = formats[version]
        raw_length = f.read(struct.calcsize(length_format))
        (length,) = struct.unpack(length_format, raw_length)
        if length > MAX_HEADER_BYTES:
            raise ValueError(f"header of {length} bytes is larger than {MAX_HEADER_BYTES}")
        raw = f.read(length)
        if len(raw) != length:
            raise ValueError("the header is truncated")
        return _parse_header(raw.decode(encoding))
    except (ValueError, TypeError, SyntaxError, struct.error, UnicodeDecodeError) as exc:
        raise MaterializerError(f"{name} is not a valid .npy file: {exc}") from exc


@functools.lru_cache(maxsize=256)
def _parse_header(text: str) -> tuple[tuple[int, ...], bool, np.dtype[Any]]:
    """The fields of a .npy header's text (cached: a container of like arrays
    repeats the same header, and parsing it is most of a small array's load)."""
    fields = ast.literal_eval(text)
    if not isinstance(fields, dict) or fields.keys() != _HEADER_KEYS:
        raise ValueError(f"header is not a dict with keys {sorted(_HEADER_KEYS)}")
    shape, fortran_order = fields["shape"], fields["fortran_order"]
    if not (isinstance(shape, tuple) and all(type(n) is int and n >= 0 for n in shape)):
        raise ValueError(f"bad shape {shape!r}")
    if type(fortran_order) is not bool:
        raise ValueError(f"bad fortran_order {fortran_order!r}")
    return shape, fortran_order, np.lib.format.descr_to_dtype(fields["descr"])


def _shuffle_itemsize(dtype: np.dtype[Any]) -> int:
    """The element size the engine may byte-shuffle by: a plain number's size
    (a complex number's part), 0 for structured, string and other dtypes."""
    if dtype.names is not None or dtype.kind not in "iufcmM":
        return 0
    return dtype.itemsize // 2 if dtype.kind == "c" else dtype.itemsize


def _write_limit(f: IO[bytes], limit: int) -> int:
    """The largest slice to hand ``f``: ``limit``, or without a limit for the
    engine's chunk writer, which cuts a contiguous array's memory in place
    (one call: no per-slice pause in its hashing pipeline)."""
    from engine.storage.chunk_writer import ChunkWriter

    return 1 << 62 if isinstance(getattr(f, "raw", None), ChunkWriter) else limit


def _raw_bytes(array: npt.NDArray[Any]) -> memoryview:
    """A writable byte view of a C- or Fortran-contiguous array's memory."""
    flat = array.T if not array.flags.c_contiguous else array
    return flat.reshape(-1).view(np.uint8).data


def _byte_blocks(array: npt.NDArray[Any], limit: int) -> Iterator[memoryview]:
    """The bytes of ``array`` in .npy order (its memory order when contiguous,
    else C order), as slices of at most about ``limit`` bytes."""
    if array.nbytes == 0:
        return
    if array.flags.c_contiguous or array.flags.f_contiguous:
        raw = _raw_bytes(array)
        for start in range(0, len(raw), limit):
            yield raw[start : start + limit]
        return
    row_bytes = array.nbytes // array.shape[0]
    if row_bytes >= limit:
        for row in array:
            yield from _byte_blocks(row, limit)
        return
    rows = max(1, limit // row_bytes)
    for start in range(0, array.shape[0], rows):
        block = np.ascontiguousarray(array[start : start + rows])
        yield block.reshape(-1).view(np.uint8).data


def _read_into(f: IO[bytes], target: memoryview, limit: int, name: str) -> None:
    """Fill ``target`` from ``f``: through ``readinto`` straight into the array's
    buffer (one call for the rest of it: the engine's reader decodes whole
    chunks in place and in parallel), else by bounded ``read`` slices."""
    position, total = 0, len(target)
    readinto = getattr(f, "readinto", None)
    while position < total:
        end = total if readinto is not None else min(total, position + limit)
        window = target[position:end]
        if readinto is not None:
            got = readinto(window)
        else:  # a reader without readinto: copy one bounded slice at a time
            chunk = f.read(len(window))
            got = len(chunk)
            window[:got] = chunk
        if not got:
            raise MaterializerError(
                f"{name} ends after {position} of {total} data bytes; it is truncated."
            )
        position += got


def _stats(array: npt.NDArray[Any]) -> dict[str, float]:
    kind = array.dtype.kind
    if array.size == 0 or kind not in "iuf" or array.dtype.names is not None:
        return {}
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return {
            "min": float(array.min()),
            "max": float(array.max()),
            "mean": float(array.mean(dtype=np.float64)),
        }


def _csv_cell(value: Any) -> str:
    text = str(value)
    if any(c in text for c in ',"\n\r'):
        text = '"' + text.replace('"', '""') + '"'
    return text


def _html_table(rows: npt.NDArray[Any], array: npt.NDArray[Any]) -> str:
    caption = html.escape(f"ndarray shape={array.shape} dtype={array.dtype}")
    body = "\n".join(
        "<tr>" + "".join(f"<td>{html.escape(str(x))}</td>" for x in row) + "</tr>" for row in rows
    )
    return f"<table>\n<caption>{caption}</caption>\n{body}\n</table>\n"


def _markdown_summary(array: npt.NDArray[Any], meta: dict[str, Any]) -> str:
    lines = ["| property | value |", "| --- | --- |"]
    lines += [f"| {key} | `{value}` |" for key, value in meta.items()]
    head = np.array2string(array.reshape(-1)[:10], threshold=10) if array.size else "[]"
    return "# ndarray\n\n" + "\n".join(lines) + f"\n\nFirst values: `{head}`\n"
