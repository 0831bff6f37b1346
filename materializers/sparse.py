"""scipy.sparse matrices and arrays as their numpy components, no pickle.

* CSR and CSC (``csr_matrix``, ``csc_matrix``, ``csr_array``, ``csc_array``)
  -> ``data.npy``, ``indices.npy``, ``indptr.npy``;
* COO (``coo_matrix``, ``coo_array``, any number of dimensions) -> ``data.npy``
  and ``coords/<axis>.npy``;
* ``sparse.json`` holds the format and the shape (a file, not ``state``, so two
  matrices with equal components but different shapes have different content
  hashes).

The components are written exactly as they are (index dtypes, explicit zeros,
duplicate and unsorted entries included) and passed back to the constructor
unchanged, so a loaded matrix has the same components as the saved one.
Other sparse formats (LIL, DOK, BSR, DIA) are not claimed: the registry falls
back for them.

This module imports scipy; the registry imports it only when a scipy.sparse
type is looked up.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar, Final

import numpy as np
import numpy.typing as npt

from engine.errors import MaterializerError

try:
    import scipy.sparse as sp
except ImportError as exc:  # a store holding sparse matrices opened without scipy
    raise MaterializerError(
        "Loading or saving scipy.sparse matrices needs scipy: pip install 'artledger[sparse]'."
    ) from exc

from materializers.base import BaseMaterializer
from materializers.numpy import _byte_blocks, _header_bytes, _read_header, _read_into

SPEC_FILE: Final = "sparse.json"
PREVIEW_MAX_NNZ: Final = 20
_COMPRESSED: Final = ("csr", "csc")
_TYPES: Final[dict[tuple[str, bool], type]] = {
    ("csr", False): sp.csr_matrix,
    ("csc", False): sp.csc_matrix,
    ("coo", False): sp.coo_matrix,
    ("csr", True): sp.csr_array,
    ("csc", True): sp.csc_array,
    ("coo", True): sp.coo_array,
}


def _coords(data: Any) -> tuple[npt.NDArray[Any], ...]:
    coords = getattr(data, "coords", None)  # scipy >= 1.13; row/col before
    return tuple(coords) if coords is not None else (data.row, data.col)


def _head_coords(data: Any, head: int) -> tuple[npt.NDArray[Any], ...]:
    """(row, column) of the first ``head`` stored entries of a CSR or CSC matrix."""
    major = np.searchsorted(data.indptr, np.arange(head), side="right") - 1
    minor = data.indices[:head]
    return (major, minor) if data.format == "csr" else (minor, major)


class SparseMaterializer(BaseMaterializer):
    """CSR, CSC and COO matrices and arrays of scipy.sparse, as ``.npy`` components."""

    ASSOCIATED_TYPES: ClassVar[tuple[type, ...]] = tuple(_TYPES.values())
    ASSOCIATED_ARTIFACT_TYPE: ClassVar[str] = "data"
    VERSION: ClassVar[int] = 1

    @classmethod
    def can_handle_type(cls, data_type: type) -> bool:
        """The six classes above exactly: a subclass would load as its base."""
        return data_type in _TYPES.values()

    def save(self, data: Any) -> None:
        fmt = data.format
        if fmt not in ("csr", "csc", "coo") or data.dtype.hasobject:
            raise MaterializerError(
                f"SparseMaterializer saves numeric CSR, CSC and COO matrices, not a {fmt} "
                f"matrix of dtype {data.dtype}; convert it (m.tocsr()) first."
            )
        spec = {"format": fmt, "shape": [int(n) for n in data.shape]}
        with self.open(SPEC_FILE, "w") as f:
            json.dump(spec, f)
        self._write("data.npy", data.data)
        if fmt in _COMPRESSED:
            self._write("indices.npy", data.indices)
            self._write("indptr.npy", data.indptr)
        else:
            for axis, index in enumerate(_coords(data)):
                self._write(f"coords/{axis}.npy", index)

    def load(self, data_type: type) -> Any:
        with self.open(SPEC_FILE) as f:
            spec = json.load(f)
        fmt, shape = spec.get("format"), spec.get("shape")
        if fmt not in ("csr", "csc", "coo") or not (
            isinstance(shape, list) and all(type(n) is int and n >= 0 for n in shape)
        ):
            raise MaterializerError(f"{SPEC_FILE} is damaged: {spec!r}")
        is_array = issubclass(data_type, sp.sparray) if isinstance(data_type, type) else False
        cls = _TYPES[(fmt, is_array)]
        data = self._read("data.npy")
        if fmt in _COMPRESSED:
            indices, indptr = self._read("indices.npy"), self._read("indptr.npy")
            out = cls((data, indices, indptr), shape=tuple(shape), copy=False)
            if out.indices.dtype != indices.dtype or out.indptr.dtype != indptr.dtype:
                out.indices, out.indptr = indices, indptr  # the constructor narrowed them
            return out
        coords = tuple(self._read(f"coords/{axis}.npy") for axis in range(len(shape)))
        out = cls((data, coords), shape=tuple(shape), copy=False)
        if any(a.dtype != b.dtype for a, b in zip(_coords(out), coords, strict=True)):
            out.coords = coords  # the constructor narrowed them
        return out

    def _write(self, name: str, array: npt.NDArray[Any]) -> None:
        array = np.ascontiguousarray(array)
        with self.open(name, "wb") as f:
            f.write(_header_bytes(array))
            for block in _byte_blocks(array, 16 << 20):
                f.write(block)

    def _read(self, name: str) -> npt.NDArray[Any]:
        with self.open(name, "rb") as f:
            shape, _, dtype = _read_header(f, name)
            if dtype.hasobject or len(shape) != 1:
                raise MaterializerError(f"{name} is not a 1-d numeric array; it is damaged.")
            array = np.empty(shape, dtype=dtype)
            if array.nbytes:
                _read_into(f, array.view(np.uint8).data, 16 << 20, name)
            if f.read(1):
                raise MaterializerError(f"{name} has bytes after the array data; it is damaged.")
        return array

    def extract_metadata(self, data: Any) -> dict[str, Any]:
        size = int(np.prod(data.shape, dtype=np.float64))
        nbytes = data.data.nbytes + sum(
            a.nbytes
            for a in ((data.indices, data.indptr) if data.format in _COMPRESSED else _coords(data))
        )
        return {
            "format": data.format,
            "shape": [int(n) for n in data.shape],
            "dtype": str(data.dtype),
            "nnz": int(data.nnz),
            "density": float(data.nnz / size) if size else 0.0,
            "bytes": int(nbytes),
        }

    def save_visualizations(self, data: Any) -> dict[str, str]:
        meta = self.metadata if self.metadata is not None else self.extract_metadata(data)
        lines = [f"# {type(data).__name__}", "", "| property | value |", "| --- | --- |"]
        lines += [f"| {key} | `{value}` |" for key, value in meta.items()]
        head = min(PREVIEW_MAX_NNZ, len(data.data))
        coords = _coords(data) if data.format == "coo" else _head_coords(data, head)
        if head:
            lines += ["", f"First {head} stored entries:", ""]
            lines += ["| index | value |", "| --- | --- |"]
            for k in range(head):
                at = ", ".join(str(int(c[k])) for c in coords)
                lines.append(f"| ({at}) | `{data.data[k]}` |")
        with self.open("summary.md", "w") as f:
            f.write("\n".join(lines) + "\n")
        return {"summary.md": "markdown"}
