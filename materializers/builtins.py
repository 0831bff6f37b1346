"""Python's built-in types, exactly: msgpack with tagged extension types.

Plain values (``None``, ``bool``, ``int`` of any size, ``float``, ``complex``,
``str``, ``bytes``, ``bytearray`` and ``list``/``tuple``/``dict``/``set``/
``frozenset`` of them, nested) go to one file, ``data.msgpack``, so that a
tuple loads as a tuple, an ``int`` key stays an ``int``, ``True`` stays a
``bool`` and big integers stay exact. Sets are written in a canonical order
(sorted by their encoded bytes), so equal sets make equal files.

A container holding anything else (numpy arrays, user objects) is written
element by element: each element with its own materializer under
``elements/<i>/`` (non-plain dict keys under ``keys/<i>/``) and the container's
shape in ``structure.msgpack``. Such containers are never pickled as a whole.

Large binary values — ``bytes`` and ``bytearray`` of ``RAW_MIN`` bytes or more,
and every ``memoryview`` — are written as they are to ``data.bin``, straight
from the caller's buffer (no copy, no encoding: saving 2 GiB costs no more
memory than the value itself); ``files.state["raw"]`` names the type (and a
memoryview's ``format`` and ``shape``). The file name is the format marker:
values stored before this existed are in ``data.msgpack`` and load as they
always did, so ``VERSION`` (part of every cache key) did not change.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar, Final

import msgpack

from engine.errors import MaterializerError
from materializers import registry
from materializers.base import BaseMaterializer

DATA_FILE: Final = "data.msgpack"
RAW_FILE: Final = "data.bin"
RAW_MIN: Final = 1 << 20
STRUCTURE_FILE: Final = "structure.msgpack"
STRUCTURE_VERSION: Final = 1
MAX_DEPTH: Final = 100

_TUPLE, _SET, _FROZENSET, _BYTEARRAY, _BIGINT, _COMPLEX = 1, 2, 3, 4, 5, 6

_CONTAINERS: Final[frozenset[type]] = frozenset({list, tuple, dict, set, frozenset})
_INT64_MIN, _UINT64_MAX = -(2**63), 2**64 - 1


class _NotPlainError(Exception):
    """Raised inside :func:`_convert` at the first value that is not plain."""


def _convert(obj: Any, depth: int = 0) -> Any:
    """``obj`` as a tree msgpack packs natively, exact types tagged as ExtType."""
    if depth > MAX_DEPTH:
        raise MaterializerError(
            f"Value nested deeper than {MAX_DEPTH} levels (or containing itself); the "
            "built-in materializer cannot store it. Pass output_materializers= with the "
            "cloudpickle materializer or a materializer of your own."
        )
    kind = type(obj)
    if kind is str or kind is float or kind is bool or kind is bytes or obj is None:
        return obj
    if kind is int:
        if _INT64_MIN <= obj <= _UINT64_MAX:
            return obj
        length = (obj.bit_length() + 8) // 8
        return msgpack.ExtType(_BIGINT, obj.to_bytes(length, "big", signed=True))
    depth += 1
    if kind is list:
        return [_convert(item, depth) for item in obj]
    if kind is dict:
        return {_convert(k, depth): _convert(v, depth) for k, v in obj.items()}
    if kind is tuple:
        return msgpack.ExtType(_TUPLE, _pack([_convert(item, depth) for item in obj]))
    if kind is set or kind is frozenset:
        items = b"".join(sorted(_pack(_convert(item, depth)) for item in obj))
        return msgpack.ExtType(_SET if kind is set else _FROZENSET, items)
    if kind is bytearray:
        return msgpack.ExtType(_BYTEARRAY, bytes(obj))
    if kind is complex:
        return msgpack.ExtType(_COMPLEX, _pack([obj.real, obj.imag]))
    raise _NotPlainError


def _ext_hook(code: int, data: bytes) -> Any:
    if code == _TUPLE:
        return tuple(_unpack(data))
    if code in (_SET, _FROZENSET):
        items = _unpack_stream(data)
        return set(items) if code == _SET else frozenset(items)
    if code == _BYTEARRAY:
        return bytearray(data)
    if code == _BIGINT:
        return int.from_bytes(data, "big", signed=True)
    if code == _COMPLEX:
        real, imag = _unpack(data)
        return complex(real, imag)
    return msgpack.ExtType(code, data)


_PACK_OPTIONS: Final[dict[str, Any]] = {
    "strict_types": True,
    "use_bin_type": True,
    "unicode_errors": "surrogatepass",
}
_UNPACK_OPTIONS: Final[dict[str, Any]] = {
    "ext_hook": _ext_hook,
    "raw": False,
    "strict_map_key": False,
    "use_list": True,
    "unicode_errors": "surrogatepass",
}


def _pack(obj: Any) -> bytes:
    packed: bytes = msgpack.packb(obj, **_PACK_OPTIONS)
    return packed


def _unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, **_UNPACK_OPTIONS)


def _unpack_stream(data: bytes) -> list[Any]:
    unpacker = msgpack.Unpacker(**_UNPACK_OPTIONS, max_buffer_size=max(len(data), 1))
    unpacker.feed(data)
    return list(unpacker)


def encode(obj: Any) -> bytes:
    """The tagged msgpack encoding of a plain value (see :func:`is_plain`)."""
    try:
        return _pack(_convert(obj))
    except _NotPlainError:
        raise MaterializerError(
            f"{type(obj).__qualname__} value holds something other than exact built-in types."
        ) from None


def decode(data: bytes) -> Any:
    """The value :func:`encode` encoded, with its exact types."""
    return _unpack(data)


def is_plain(obj: Any) -> bool:
    """Whether ``obj`` is made only of exact built-in types this module encodes
    in one msgpack document (no subclasses, nothing else inside)."""
    try:
        _convert(obj)
    except _NotPlainError:
        return False
    return True


def _scalar_metadata(data: Any) -> dict[str, Any]:
    kind = type(data)
    if kind is bool or kind is float:
        return {"value": data}
    if kind is int:
        return {"value": data if _INT64_MIN <= data <= _UINT64_MAX else str(data)}
    if kind is complex:
        return {"value": str(data)}
    if kind is str:
        return {"length": len(data), **({"value": data} if len(data) <= 100 else {})}
    if kind is bytes or kind is bytearray:
        return {"length": len(data)}
    if kind is memoryview:
        return {"length": data.nbytes, "format": data.format, "shape": list(data.shape or ())}
    return {}


class BuiltinsMaterializer(BaseMaterializer):
    """Exact built-in values in ``data.msgpack``; containers of other values
    element by element (``structure.msgpack`` + ``elements/<i>/``)."""

    ASSOCIATED_TYPES: ClassVar[tuple[type, ...]] = (
        type(None),
        bool,
        int,
        float,
        complex,
        str,
        bytes,
        bytearray,
        memoryview,
        list,
        tuple,
        dict,
        set,
        frozenset,
    )
    ASSOCIATED_ARTIFACT_TYPE: ClassVar[str] = "data"
    VERSION: ClassVar[int] = 1
    CHUNKING: ClassVar[str | None] = "cdc"
    """How the engine cuts bytes and packed values (text, lists): content-defined
    chunks, so an insertion keeps the chunks after it."""

    @classmethod
    def can_handle_type(cls, data_type: type) -> bool:
        """Exact built-in types only: a subclass (an ``IntEnum``, an
        ``OrderedDict``, a named tuple) would load as its base type."""
        return data_type in cls.ASSOCIATED_TYPES

    def save(self, data: Any) -> None:
        kind = type(data)
        if kind is memoryview or ((kind is bytes or kind is bytearray) and len(data) >= RAW_MIN):
            self._save_raw(data)
            return
        try:
            payload = _pack(_convert(data))
        except _NotPlainError:
            pass
        else:
            with self.open(DATA_FILE, "wb", chunking=self.CHUNKING) as f:
                f.write(payload)
            return
        kind = type(data)
        if kind not in _CONTAINERS:
            raise MaterializerError(
                f"BuiltinsMaterializer cannot save a `{kind.__qualname__}`; it handles exact "
                "built-in types. Register a materializer for it with `@register`."
            )
        self._save_structure(data)

    def _save_raw(self, data: bytes | bytearray | memoryview) -> None:
        state: dict[str, Any] = {"raw": type(data).__name__}
        if isinstance(data, memoryview):
            fmt: Any = data.format
            shape = list(data.shape or ())
            if not data.c_contiguous:  # a strided view: its bytes in C order (a copy)
                data = memoryview(data.tobytes())
            try:
                if data.nbytes:  # an empty view loads as an empty byte view
                    data.cast("B").cast(fmt, shape)
            except (TypeError, ValueError) as e:
                raise MaterializerError(
                    f"BuiltinsMaterializer cannot save a memoryview of format {fmt!r} and shape "
                    f"{shape} ({e}); save bytes(view) or a numpy array instead."
                ) from e
            state.update(format=fmt, shape=shape)
        with self.open(RAW_FILE, "wb", chunking=self.CHUNKING) as f:
            f.write(data)  # chunked in place: the value is never copied
        self.files.state.update(state)

    def _load_raw(self) -> Any:
        state = self.files.state
        kind = state.get("raw")
        size = self.files.size(RAW_FILE)
        buf = bytearray(size)
        with self.open(RAW_FILE, "rb") as f:
            view, got = memoryview(buf), 0
            while got < size:
                n = f.readinto(view[got:])  # type: ignore[attr-defined]
                if not n:
                    raise MaterializerError(f"{RAW_FILE} is shorter than its recorded size")
                got += n
        if kind == "bytearray":
            return buf
        if kind == "memoryview" and not size:
            return memoryview(buf)
        if kind == "memoryview":
            fmt, shape = state.get("format", "B"), state.get("shape")
            try:
                return memoryview(buf).cast("B").cast(fmt, [size] if shape is None else shape)
            except (TypeError, ValueError) as e:
                raise MaterializerError(
                    f"{RAW_FILE} cannot be viewed as format {fmt!r}, shape {shape}: {e}"
                ) from e
        if kind == "bytes":
            return bytes(buf)
        raise MaterializerError(f"{RAW_FILE} records an unknown value type {kind!r}.")

    def _save_structure(self, data: Any) -> None:
        states: dict[str, dict[str, Any]] = {}
        kind = type(data)
        if kind is dict:
            items: list[Any] = [
                [
                    self._save_element(k, f"keys/{i}", states),
                    self._save_element(v, f"elements/{i}", states),
                ]
                for i, (k, v) in enumerate(data.items())
            ]
        else:
            items = [self._save_element(v, f"elements/{i}", states) for i, v in enumerate(data)]
        structure = {"v": STRUCTURE_VERSION, "kind": kind.__name__, "items": items}
        payload = encode(structure)
        with self.open(STRUCTURE_FILE, "wb") as f:
            f.write(payload)
        if states:
            self.files.state["elements"] = states

    def _save_element(self, value: Any, at: str, states: dict[str, dict[str, Any]]) -> Any:
        if is_plain(value):
            return {"inline": value}  # encoded with the structure
        cls = registry.materializer_for_value(value)
        sub = self.files.sub(at)
        sub.state = {}
        cls(sub).save(value)
        if sub.state:
            states[at] = sub.state
        return {
            "at": at,
            "materializer": registry.identity(cls),
            "version": cls.VERSION,
            "type": registry.topic_of(type(value)),
        }

    def load(self, data_type: type) -> Any:
        names = self.files.names()
        if RAW_FILE in names:
            return self._load_raw()
        if DATA_FILE in names:
            with self.open(DATA_FILE, "rb") as f:
                return _unpack(_read_all(f))
        if STRUCTURE_FILE not in names:
            raise MaterializerError(
                f"Artifact has neither {DATA_FILE} nor {STRUCTURE_FILE} (files: {names}); it was "
                "not written by BuiltinsMaterializer."
            )
        with self.open(STRUCTURE_FILE, "rb") as f:
            structure = _unpack(_read_all(f))
        if structure.get("v") != STRUCTURE_VERSION:
            raise MaterializerError(
                f"{STRUCTURE_FILE} has format version {structure.get('v')!r}; this artledger "
                f"reads version {STRUCTURE_VERSION}. Upgrade artledger."
            )
        states: dict[str, dict[str, Any]] = self.files.state.get("elements", {})
        kind = structure["kind"]
        items = structure["items"]
        if kind == "dict":
            return {self._load_element(k, states): self._load_element(v, states) for k, v in items}
        values: Iterable[Any] = (self._load_element(v, states) for v in items)
        constructors = {"list": list, "tuple": tuple, "set": set, "frozenset": frozenset}
        if kind not in constructors:
            raise MaterializerError(f"{STRUCTURE_FILE} names an unknown container kind {kind!r}.")
        return constructors[kind](values)

    def _load_element(self, entry: dict[str, Any], states: dict[str, dict[str, Any]]) -> Any:
        if "inline" in entry:
            return entry["inline"]
        at = entry["at"]
        cls = registry.resolve(entry["materializer"])
        data_type = registry.import_topic(entry["type"])
        sub = self.files.sub(at)
        sub.state = dict(states.get(at, {}))
        return cls(sub).load(data_type)

    def extract_metadata(self, data: Any) -> dict[str, Any]:
        if type(data) in _CONTAINERS:
            return {"length": len(data)}
        return _scalar_metadata(data)


def _read_all(f: Any) -> bytes:
    chunks: list[bytes] = []
    while True:
        chunk = f.read(1 << 20)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
