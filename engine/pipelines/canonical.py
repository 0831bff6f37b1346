"""Canonical bytes of step parameters, and the digests cache keys are made of.

:func:`canonical` turns a parameter value into deterministic, typed msgpack
bytes: equal in every process and on every machine running the same Python
minor version, different for values of different types, independent of dict
and set order. :func:`digest` hashes byte strings with xxh3-128.
``engine.pipelines.fingerprint`` and ``engine.pipelines.cache_key`` build on both.

This module imports no other engine module except :mod:`engine.errors`, and
imports numpy only when it meets a numpy value.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import math
import pathlib
import struct
from collections.abc import Iterable, Mapping
from typing import Any

import msgpack
import xxhash

from engine.errors import InvalidArgumentError, UnhashableParameterError

__all__ = [
    "INT_MAX",
    "INT_MIN",
    "canonical",
    "canonical_or_none",
    "class_identity",
    "digest",
    "pack",
    "short_repr",
    "type_name",
]

_ARRAY_INLINE_LIMIT = 1 << 16  # larger arrays enter the encoding as their xxh3-128 digest


# --------------------------------------------------------------------------- digests


def digest(*parts: bytes) -> str:
    """xxh3-128 hex digest of ``parts``, each length-prefixed so no two splits collide."""
    h = xxhash.xxh3_128()
    for part in parts:
        if not isinstance(part, bytes | bytearray | memoryview):
            raise InvalidArgumentError(
                f"digest() takes bytes, got `{type(part).__qualname__}`; encode it first, "
                "for example with canonical()"
            )
        h.update(len(part).to_bytes(8, "little"))
        h.update(part)
    return h.hexdigest()


# --------------------------------------------------------------------------- canonical


# msgpack ext codes of the canonical encoding; never renumber (it would change every key).
_BIGINT, _LIST, _TUPLE, _DICT, _SET, _FROZENSET = 1, 2, 3, 4, 5, 6
_DATETIME, _DATE, _TIME, _TIMEDELTA, _ENUM, _PATH = 7, 8, 9, 10, 11, 12
_DATACLASS, _NAMEDTUPLE, _NP_SCALAR, _NP_ARRAY, _NP_ARRAY_DIGEST, _COMPLEX = 13, 14, 15, 16, 17, 18
_NP_DTYPE = 19

_NAN = b"\xcb" + struct.pack(">d", math.nan)  # one NaN bit pattern for every NaN
INT_MIN, INT_MAX = -(2**63), 2**64 - 1


def pack(value: Any) -> bytes:
    """Plain msgpack of ``value`` (binary-safe): the canonical form of simple values."""
    out: bytes = msgpack.packb(value, use_bin_type=True)
    return out


def _ext(code: int, payload: bytes) -> bytes:
    return pack(msgpack.ExtType(code, payload))


def class_identity(cls: type) -> str:
    """``"module:QualName"`` of a class, as it enters canonical bytes and recipes."""
    return f"{cls.__module__}:{cls.__qualname__}"


def type_name(cls: type) -> str:
    """A class's name for messages: ``int``, ``numpy.ndarray``."""
    return (
        cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    )


def short_repr(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters; never raises."""
    try:
        text = repr(value)
    except Exception:  # a broken __repr__ must not hide the real problem
        text = f"<{type_name(type(value))} object>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _UnencodableError(Exception):
    """Raised inside the encoder; segments collect the path on the way out."""

    def __init__(self, value: Any, reason: str | None = None) -> None:
        super().__init__()
        self.value_type = type(value)
        self.reason = reason
        self.segments: list[str] = []


def _simple_key(key: Any) -> str:
    if type(key) in (str, int, float, bool, bytes) or key is None:
        return f"[{key!r}]"
    return f"[{short_repr(key, 40)}]"


class _Encoder:
    """Turns one value into canonical bytes; every output is one msgpack object."""

    def __init__(self) -> None:
        self._active: set[int] = set()  # containers being encoded: a cycle is an error

    def encode(self, v: Any) -> bytes:
        t = type(v)
        if v is None or t is bool or t is str or t is bytes:
            return pack(v)
        if t is int:
            return self._int(v)
        if t is float:
            return _NAN if v != v else pack(v)
        if t is list:
            return self._seq(_LIST, v)
        if t is tuple:
            return self._seq(_TUPLE, v)
        if t is dict:
            return self._dict(v)
        if t is set:
            return self._set(_SET, v)
        if t is frozenset:
            return self._set(_FROZENSET, v)
        return self._other(v, t)

    def _int(self, v: int) -> bytes:
        if INT_MIN <= v <= INT_MAX:
            return pack(v)
        return _ext(_BIGINT, v.to_bytes((v.bit_length() + 8) // 8, "little", signed=True))

    def _enter(self, v: Any) -> None:
        if id(v) in self._active:
            raise _UnencodableError(v, "it contains itself")
        self._active.add(id(v))

    def _seq(self, code: int, items: Iterable[Any], prefix: bytes = b"") -> bytes:
        self._enter(items)
        parts = [prefix]
        try:
            for i, item in enumerate(items):
                try:
                    parts.append(self.encode(item))
                except _UnencodableError as e:
                    e.segments.append(f"[{i}]")
                    raise
        finally:
            self._active.discard(id(items))
        return _ext(code, b"".join(parts))

    def _dict(self, d: Mapping[Any, Any], code: int = _DICT) -> bytes:
        self._enter(d)
        pairs: list[tuple[bytes, bytes]] = []
        try:
            for k, val in d.items():
                try:
                    ke = self.encode(k)
                except _UnencodableError as e:
                    e.segments.append(".keys()")
                    raise
                try:
                    pairs.append((ke, self.encode(val)))
                except _UnencodableError as e:
                    e.segments.append(_simple_key(k))
                    raise
        finally:
            self._active.discard(id(d))
        pairs.sort()
        return _ext(code, b"".join(k + v for k, v in pairs))

    def _set(self, code: int, items: Iterable[Any]) -> bytes:
        self._enter(items)
        try:
            encoded = sorted(self.encode(x) for x in items)
        except _UnencodableError as e:
            e.segments.append("{...}")
            raise
        finally:
            self._active.discard(id(items))
        return _ext(code, b"".join(encoded))

    def _fields(self, code: int, v: Any, names: Iterable[str]) -> bytes:
        self._enter(v)
        parts = [pack(class_identity(type(v)))]
        try:
            for name in names:
                try:
                    parts.append(pack(name) + self.encode(getattr(v, name)))
                except _UnencodableError as e:
                    e.segments.append(f".{name}")
                    raise
        finally:
            self._active.discard(id(v))
        return _ext(code, b"".join(parts))

    def _other(self, v: Any, t: type) -> bytes:
        if isinstance(v, enum.Enum):
            try:
                value = self.encode(v.value)
            except _UnencodableError:
                value = b""  # the member name identifies it within its class
            return _ext(_ENUM, pack(class_identity(t)) + pack(v.name) + value)
        module = t.__module__
        if module == "numpy" or module.startswith("numpy."):
            return self._numpy(v)
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return self._fields(_DATACLASS, v, (f.name for f in dataclasses.fields(v)))
        if isinstance(v, tuple) and isinstance(getattr(t, "_fields", None), tuple):
            return self._fields(_NAMEDTUPLE, v, t._fields)  # type: ignore[attr-defined]
        if isinstance(v, pathlib.PurePath):
            flavour = "windows" if isinstance(v, pathlib.PureWindowsPath) else "posix"
            return _ext(_PATH, pack(flavour) + pack(str(v)))
        if isinstance(v, dt.datetime):
            return _ext(_DATETIME, pack([v.isoformat(), v.fold]))
        if isinstance(v, dt.date):
            return _ext(_DATE, pack(v.isoformat()))
        if isinstance(v, dt.time):
            return _ext(_TIME, pack([v.isoformat(), v.fold]))
        if isinstance(v, dt.timedelta):
            return _ext(_TIMEDELTA, pack([v.days, v.seconds, v.microseconds]))
        if isinstance(v, complex):
            return _ext(_COMPLEX, self.encode(v.real) + self.encode(v.imag))
        # Subclasses of plain types (OrderedDict, a str subclass, ...) encode as their base.
        if isinstance(v, str | bytes):
            return pack(v)
        if isinstance(v, int):
            return self._int(int.__int__(v))
        if isinstance(v, float):
            return self.encode(float.__float__(v))
        if isinstance(v, list):
            return self._seq(_LIST, v)
        if isinstance(v, tuple):
            return self._seq(_TUPLE, v)
        if isinstance(v, dict):
            return self._dict(v)
        if isinstance(v, frozenset):
            return self._set(_FROZENSET, v)
        if isinstance(v, set):
            return self._set(_SET, v)
        raise _UnencodableError(v)

    def _numpy(self, v: Any) -> bytes:
        import numpy as np  # only when a numpy value shows up

        if isinstance(v, np.generic):
            if v.dtype.hasobject:
                raise _UnencodableError(v, "numpy object scalars have no canonical bytes")
            return _ext(_NP_SCALAR, self._dtype(v.dtype) + pack(v.tobytes()))
        if type(v) is np.ndarray:
            if v.dtype.hasobject:
                raise _UnencodableError(v, "object arrays have no canonical bytes; pass a list")
            data = np.ascontiguousarray(v).tobytes()
            head = self._dtype(v.dtype) + pack(list(v.shape))
            if len(data) <= _ARRAY_INLINE_LIMIT:
                return _ext(_NP_ARRAY, head + pack(data))
            return _ext(_NP_ARRAY_DIGEST, head + pack(xxhash.xxh3_128_digest(data)))
        if isinstance(v, np.dtype):
            return _ext(_NP_DTYPE, self._dtype(v))
        raise _UnencodableError(v)

    def _dtype(self, dtype: Any) -> bytes:
        if dtype.fields is None and dtype.subdtype is None:
            return pack(dtype.str)
        from numpy.lib.format import dtype_to_descr

        return self.encode(dtype_to_descr(dtype))


def canonical(value: Any, path: str = "value", *, step: str | None = None) -> bytes:
    """Deterministic, typed msgpack bytes of a step parameter.

    Equal inputs give equal bytes in every process; values of different types
    (``1``, ``1.0``, ``True``; a list and a tuple) give different bytes; dict
    and set order does not matter. ``path`` (and ``step``) name the parameter
    in the :class:`UnhashableParameterError` raised for a value that has no
    canonical form (a lock, an open file, a model object, ...).
    """
    try:
        return _Encoder().encode(value)
    except _UnencodableError as e:
        where = path + "".join(reversed(e.segments))
        owner = f" of step `{step}`" if step else ""
        why = f" ({e.reason})" if e.reason else ""
        raise UnhashableParameterError(
            f"parameter `{where}`{owner}: value of type `{type_name(e.value_type)}` cannot be "
            f"encoded for the cache key{why}; pass a plain value (int, str, dict, ...) "
            "or set enable_cache=False"
        ) from None
    except RecursionError:
        owner = f" of step `{step}`" if step else ""
        raise UnhashableParameterError(
            f"parameter `{path}`{owner} is nested too deeply to be encoded for the cache key; "
            "flatten it or set enable_cache=False"
        ) from None


def canonical_flat(value: dict[str, Any]) -> bytes:
    """``canonical(value)`` (the same bytes) for the shape of a cache key's body: a
    dict of str keys to str, None, 64-bit ints or dicts of str to str, without
    the general encoder; any other shape goes through :func:`canonical`."""
    pairs = flat_pairs(value)
    return canonical(value) if pairs is None else flat_dict(pairs)


def flat_pairs(value: dict[str, Any]) -> list[tuple[bytes, bytes]] | None:
    """The encoded (key, value) pairs of a dict of :func:`canonical_flat`'s shape,
    or None when it has another shape."""
    pairs: list[tuple[bytes, bytes]] = []
    for k, v in value.items():
        t = type(v)
        if t is dict:
            inner: list[tuple[bytes, bytes]] = []
            for ik, iv in v.items():
                if type(ik) is not str or type(iv) is not str:
                    return None
                inner.append((pack(ik), pack(iv)))
            encoded = flat_dict(inner)
        elif v is None or t is str or (t is int and INT_MIN <= v <= INT_MAX):
            encoded = pack(v)
        else:
            return None
        if type(k) is not str:
            return None
        pairs.append((pack(k), encoded))
    return pairs


def flat_dict(pairs: list[tuple[bytes, bytes]]) -> bytes:
    """The canonical bytes of a dict from its encoded (key, value) pairs."""
    return _ext(_DICT, b"".join(a + b for a, b in sorted(pairs)))


def canonical_or_none(value: Any) -> bytes | None:
    """:func:`canonical` bytes of ``value``, or None when it has no canonical form."""
    try:
        return _Encoder().encode(value)
    except _UnencodableError:
        return None
