"""The safetensors file format, streamed both ways through artifact files.

A safetensors file is an 8-byte little-endian header length ``N``, ``N``
bytes of JSON (``{name: {"dtype", "shape", "data_offsets": [begin, end]},
"__metadata__": {str: str}}``, padded with spaces to a multiple of 8), then
the tensors' bytes, back to back, in offset order. It holds no code: loading
one only allocates buffers and copies bytes.

This module writes the format from byte views and reads it back into buffers
the caller allocates (so neither side holds a second copy of a large model),
and checks every header it reads (sizes, offsets, dtypes, no gaps or
overlaps). Files are the ones the ``safetensors`` package reads and writes;
the torch materializer uses this module, and numpy arrays go through
:func:`write_arrays` / :func:`read_arrays` (the ``safetensors.numpy`` API's
equivalents). numpy is the only import.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any, Final

import numpy as np
import numpy.typing as npt

from engine.errors import MaterializerError

MAX_HEADER_BYTES: Final = 100 << 20
BLOCK: Final = 16 << 20

NUMPY_DTYPES: Final[dict[str, np.dtype[Any]]] = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"),
    "U32": np.dtype("<u4"),
    "U16": np.dtype("<u2"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
"""safetensors dtype code -> numpy dtype (little-endian, as the format stores)."""

ITEMSIZES: Final[dict[str, int]] = {
    **{code: dtype.itemsize for code, dtype in NUMPY_DTYPES.items()},
    "BF16": 2,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
}
"""Every dtype code this module reads (bf16 and float8 only through torch)."""


@dataclass(frozen=True)
class TensorEntry:
    """One tensor of a safetensors header: its bytes are ``[begin, end)`` of the data."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int


@dataclass(frozen=True)
class Tensor:
    """A tensor to write: its dtype code, shape and its bytes (C order, little-endian)."""

    name: str
    dtype: str
    shape: Sequence[int]
    data: memoryview


def write(f: IO[bytes], tensors: Iterable[Tensor], metadata: Mapping[str, str] | None) -> None:
    """Write ``tensors`` (in the given order) and ``metadata`` as a safetensors file to ``f``."""
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    items = list(tensors)
    offset = 0
    for t in items:
        if t.name == "__metadata__" or t.name in header:
            raise MaterializerError(f"tensor name {t.name!r} is reserved or repeated")
        size = math.prod(t.shape) * ITEMSIZES[t.dtype]
        if t.data.nbytes != size:
            raise MaterializerError(f"tensor {t.name!r} has {t.data.nbytes} bytes, not {size}")
        header[t.name] = {
            "dtype": t.dtype,
            "shape": [int(n) for n in t.shape],
            "data_offsets": [offset, offset + size],
        }
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    f.write(struct.pack("<Q", len(text)) + text)
    for t in items:
        raw = t.data.cast("B") if t.data.ndim != 1 or t.data.format != "B" else t.data
        for start in range(0, len(raw), BLOCK):
            f.write(raw[start : start + BLOCK])


def read_header(f: IO[bytes], name: str) -> tuple[list[TensorEntry], dict[str, str]]:
    """The tensors (in offset order) and the ``__metadata__`` of the safetensors
    file ``name`` open at its start, checked; raises :class:`MaterializerError`."""
    try:
        raw = f.read(8)
        if len(raw) != 8:
            raise ValueError("shorter than its 8-byte header length")
        (length,) = struct.unpack("<Q", raw)
        if length > MAX_HEADER_BYTES:
            raise ValueError(f"a header of {length} bytes is larger than {MAX_HEADER_BYTES}")
        text = f.read(length)
        if len(text) != length:
            raise ValueError("the header is truncated")
        header = json.loads(text)
        if not isinstance(header, dict):
            raise ValueError("the header is not a JSON object")
        metadata = header.pop("__metadata__", None) or {}
        if not isinstance(metadata, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
        ):
            raise ValueError("__metadata__ is not a map of strings")
        entries = sorted((_entry(k, v) for k, v in header.items()), key=lambda e: e.begin)
        position = 0
        for e in entries:
            if e.begin != position:
                raise ValueError(f"tensor {e.name!r} starts at {e.begin}, expected {position}")
            position = e.end
        return entries, metadata
    except (ValueError, TypeError, KeyError, struct.error, UnicodeDecodeError) as exc:
        raise MaterializerError(f"{name} is not a valid safetensors file: {exc}") from exc


def _entry(key: str, value: Any) -> TensorEntry:
    if not isinstance(value, dict) or set(value) != {"dtype", "shape", "data_offsets"}:
        raise ValueError(f"entry {key!r} is not {{dtype, shape, data_offsets}}")
    dtype, shape, offsets = value["dtype"], value["shape"], value["data_offsets"]
    if dtype not in ITEMSIZES:
        raise ValueError(f"tensor {key!r} has an unsupported dtype {dtype!r}")
    if not (isinstance(shape, list) and all(type(n) is int and n >= 0 for n in shape)):
        raise ValueError(f"tensor {key!r} has a bad shape {shape!r}")
    if not (
        isinstance(offsets, list) and len(offsets) == 2 and all(type(n) is int for n in offsets)
    ):
        raise ValueError(f"tensor {key!r} has bad data_offsets {offsets!r}")
    begin, end = offsets
    if not 0 <= begin <= end or end - begin != math.prod(shape) * ITEMSIZES[dtype]:
        raise ValueError(f"tensor {key!r}: data_offsets {offsets} do not fit {dtype}{shape}")
    return TensorEntry(key, dtype, tuple(shape), begin, end)


def read_data(
    f: IO[bytes],
    entries: Sequence[TensorEntry],
    target: Callable[[TensorEntry], memoryview],
    name: str,
) -> None:
    """Read the tensors' bytes, in offset order, into ``target(entry)`` (a
    writable byte view of exactly ``end - begin`` bytes), then check the file ends."""
    readinto = getattr(f, "readinto", None)
    for e in entries:
        view = target(e)
        got = 0
        while got < len(view):
            if readinto is not None:
                n = readinto(view[got:])
            else:
                chunk = f.read(min(BLOCK, len(view) - got))
                n = len(chunk)
                view[got : got + n] = chunk
            if not n:
                raise MaterializerError(f"{name} is truncated inside tensor {e.name!r}")
            got += n
    if f.read(1):
        raise MaterializerError(f"{name} has bytes after its last tensor; it is damaged.")


def code_of(dtype: np.dtype[Any]) -> str:
    """The safetensors dtype code of a numpy dtype; raises for one the format lacks."""
    for code, known in NUMPY_DTYPES.items():
        if known == dtype.newbyteorder("<") and dtype.kind == known.kind:
            return code
    raise MaterializerError(f"safetensors has no dtype for numpy {dtype}")


def write_arrays(
    f: IO[bytes], arrays: Mapping[str, npt.NDArray[Any]], metadata: Mapping[str, str] | None = None
) -> None:
    """Write numpy arrays as a safetensors file (``safetensors.numpy.save``'s format)."""
    tensors = []
    for key, array in arrays.items():
        code = code_of(array.dtype)
        little = np.asarray(array, dtype=NUMPY_DTYPES[code], order="C")
        tensors.append(Tensor(key, code, little.shape, little.reshape(-1).view(np.uint8).data))
    write(f, tensors, metadata)


def read_arrays(f: IO[bytes], name: str) -> tuple[dict[str, npt.NDArray[Any]], dict[str, str]]:
    """Read a safetensors file of numpy dtypes back as arrays, plus its metadata."""
    entries, metadata = read_header(f, name)
    out: dict[str, npt.NDArray[Any]] = {}
    for e in entries:
        if e.dtype not in NUMPY_DTYPES:
            raise MaterializerError(f"{name}: tensor {e.name!r} is {e.dtype}, which numpy lacks")
        out[e.name] = np.empty(e.shape, dtype=NUMPY_DTYPES[e.dtype])
    read_data(f, entries, lambda e: out[e.name].reshape(-1).view(np.uint8).data, name)
    return {e.name: out[e.name] for e in entries}, metadata
