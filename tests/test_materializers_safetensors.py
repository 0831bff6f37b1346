"""The safetensors reader/writer (materializers/safetensors_io.py) against the
``safetensors`` package's numpy API: runs whether or not torch is installed."""

from __future__ import annotations

import io
import json
import struct
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import safetensors.numpy as stn

from engine.errors import MaterializerError
from materializers import safetensors_io


def _arrays() -> dict[str, npt.NDArray[Any]]:
    rng = np.random.default_rng(3)
    return {
        "weight": rng.standard_normal((4, 3)).astype(np.float32),
        "bias": rng.standard_normal(3),
        "half": rng.standard_normal(5).astype(np.float16),
        "steps": np.array(7, dtype=np.int64),  # 0-d
        "mask": np.array([True, False, True]),
        "ids": np.arange(6, dtype=np.uint16).reshape(3, 2),
        "small": np.arange(-3, 3, dtype=np.int8),
        "empty": np.zeros((0, 4), dtype=np.int32),
    }


def _assert_same(got: dict[str, Any], want: dict[str, Any]) -> None:
    assert got.keys() == want.keys()
    for key, array in want.items():
        assert got[key].dtype == array.dtype and got[key].shape == array.shape, key
        np.testing.assert_array_equal(got[key], array)


def test_written_files_load_with_safetensors() -> None:
    arrays = _arrays()
    arrays["strided"] = np.arange(12.0).reshape(3, 4).T  # not contiguous: copied in C order
    arrays["swapped"] = np.arange(3, dtype=">i4")  # big-endian: stored little-endian
    buf = io.BytesIO()
    safetensors_io.write_arrays(buf, arrays, {"format": "np"})
    raw = buf.getvalue()
    (length,) = struct.unpack("<Q", raw[:8])
    assert length % 8 == 0
    assert json.loads(raw[8 : 8 + length])["__metadata__"] == {"format": "np"}
    loaded = stn.load(raw)
    arrays["swapped"] = arrays["swapped"].astype("<i4")
    _assert_same(loaded, arrays)


def test_reads_files_safetensors_wrote() -> None:
    raw = stn.save(_arrays(), metadata={"who": "safetensors"})
    got, metadata = safetensors_io.read_arrays(io.BytesIO(raw), "x.safetensors")
    _assert_same(got, _arrays())
    assert metadata == {"who": "safetensors"}


class _NoReadinto:
    """A reader with ``read`` only."""

    def __init__(self, data: bytes) -> None:
        self._f = io.BytesIO(data)

    def read(self, n: int = -1) -> bytes:
        return self._f.read(n)


def test_reads_without_readinto() -> None:
    got, _ = safetensors_io.read_arrays(_NoReadinto(stn.save(_arrays())), "x")  # type: ignore[arg-type]
    _assert_same(got, _arrays())


def _file(header: dict[str, Any], data: bytes = b"") -> io.BytesIO:
    text = json.dumps(header).encode()
    return io.BytesIO(struct.pack("<Q", len(text)) + text + data)


@pytest.mark.parametrize(
    ("header", "data", "match"),
    [
        ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}, b"\0" * 4, "do not fit"),
        ({"a": {"dtype": "X9", "shape": [1], "data_offsets": [0, 1]}}, b"\0", "unsupported"),
        ({"a": {"dtype": "U8", "shape": [-1], "data_offsets": [0, 0]}}, b"", "bad shape"),
        ({"a": {"dtype": "U8", "shape": [2], "data_offsets": [1, 3]}}, b"\0" * 3, "starts at"),
        ({"a": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]}}, b"\0", "truncated"),
        ({"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}}, b"\0\0", "after its last"),
        ({"__metadata__": {"k": 1}}, b"", "map of strings"),
        ({"a": {"dtype": "U8"}}, b"", "not {dtype"),
    ],
)
def test_damaged_headers_are_refused(header: dict[str, Any], data: bytes, match: str) -> None:
    with pytest.raises(MaterializerError, match=match):
        safetensors_io.read_arrays(_file(header, data), "x")


def test_oversized_header_is_refused() -> None:
    f = io.BytesIO(struct.pack("<Q", 1 << 40))
    with pytest.raises(MaterializerError, match="larger than"):
        safetensors_io.read_arrays(f, "x")


def test_unsupported_numpy_dtype_is_refused() -> None:
    with pytest.raises(MaterializerError, match="no dtype"):
        safetensors_io.write_arrays(io.BytesIO(), {"c": np.zeros(2, np.complex64)})
