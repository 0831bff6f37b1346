"""Standard-library values without pickle: dates and times, ``Decimal``,
``UUID``, paths, ``array.array``, ``Enum`` members and dataclasses.

* ``datetime``, ``date``, ``time``, ``timedelta``, ``Decimal``, ``UUID`` and
  the ``pathlib`` classes -> ``value.msgpack``, one small msgpack map: ISO
  text for dates and times (plus ``fold``), the time zone as a fixed offset
  (``datetime.timezone``, its name kept) or an IANA key (``zoneinfo``), a
  ``timedelta`` as days/seconds/microseconds, a ``Decimal`` as its exact
  string, a ``UUID`` as its 16 bytes, a path as its string. A date or time
  with another kind of ``tzinfo`` (pytz, dateutil) falls back, with a
  warning, to the signed cloudpickle file (``artifact.pkl``).
* ``array.array`` -> ``data.bin`` (the raw items) with its typecode in the
  state.
* ``Enum`` members -> ``{"name", "value"}`` through the built-in
  materializer; loaded by value from the class recorded as the artifact's
  data type (``Color(value)``).
* dataclass instances -> their fields as a dict through the built-in
  materializer (fields that are not plain get their own materializer under
  ``elements/<i>/``); loaded by calling the class with its ``init`` fields,
  then setting the others.

Only exact types, and classes importable by their ``module:QualName`` (not
defined inside a function), are handled here: anything else keeps walking
the registry and, with nothing found, falls back to cloudpickle.
"""

from __future__ import annotations

import array
import dataclasses
import datetime as dt
import decimal
import enum
import pathlib
import sys
import uuid
import warnings
from typing import Any, ClassVar, Final

from engine.errors import MaterializerError
from materializers import registry
from materializers.base import BaseMaterializer
from materializers.builtins import BuiltinsMaterializer, decode, encode
from materializers.cloudpickle_materializer import PICKLE_FILE, CloudpickleMaterializer

VALUE_FILE: Final = "value.msgpack"
ARRAY_FILE: Final = "data.bin"

_PATH_TYPES: Final[tuple[type, ...]] = (
    pathlib.PurePath,
    pathlib.PurePosixPath,
    pathlib.PureWindowsPath,
    pathlib.Path,
    pathlib.PosixPath,
    pathlib.WindowsPath,
)


def _importable(data_type: type) -> bool:
    """Whether ``data_type`` can be imported back by its ``module:QualName``."""
    return "<locals>" not in data_type.__qualname__


# ----------------------------------------------------------------- time zones


def _zoneinfo_key(tz: dt.tzinfo) -> str | None:
    zoneinfo = sys.modules.get("zoneinfo")
    if zoneinfo is not None and type(tz) is zoneinfo.ZoneInfo:
        key: str | None = getattr(tz, "key", None)
        return key
    return None


def _tz_spec(tz: dt.tzinfo | None) -> dict[str, Any] | None:
    """The time zone as a plain map, or raise ``LookupError`` for a kind this
    module cannot name (pytz, dateutil, a user class)."""
    if tz is None:
        return None
    if type(tz) is dt.timezone:
        args = tz.__getinitargs__()  # type: ignore[attr-defined]
        offset: dt.timedelta = args[0]
        spec: dict[str, Any] = {
            "offset": [offset.days, offset.seconds, offset.microseconds],
        }
        if len(args) > 1:
            spec["name"] = args[1]
        return spec
    key = _zoneinfo_key(tz)
    if key is not None:
        return {"zone": key}
    raise LookupError(type(tz))


def _tz_from(spec: dict[str, Any] | None) -> dt.tzinfo | None:
    if spec is None:
        return None
    if "zone" in spec:
        import zoneinfo

        try:
            return zoneinfo.ZoneInfo(spec["zone"])
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as e:
            raise MaterializerError(
                f"time zone {spec['zone']!r} is not known here ({e}); install tzdata "
                "(pip install tzdata) or the system time zone database."
            ) from e
    offset = dt.timedelta(*spec["offset"])
    if "name" in spec:
        return dt.timezone(offset, spec["name"])
    return dt.timezone(offset)


def _tz_label(tz: dt.tzinfo | None) -> str | None:
    if tz is None:
        return None
    return _zoneinfo_key(tz) or str(tz)


# ------------------------------------------------------------- value encoders


def _encode(value: Any) -> dict[str, Any]:
    """``value`` (an exact type of :data:`StdlibMaterializer.ASSOCIATED_TYPES`)
    as a plain map; ``LookupError`` for a time zone this module cannot name."""
    kind = type(value)
    if kind is dt.datetime or kind is dt.time:
        naive = value.replace(tzinfo=None, fold=0)
        return {"iso": naive.isoformat(), "fold": value.fold, "tz": _tz_spec(value.tzinfo)}
    if kind is dt.date:
        return {"iso": value.isoformat()}
    if kind is dt.timedelta:
        return {"days": value.days, "seconds": value.seconds, "microseconds": value.microseconds}
    if kind is decimal.Decimal:
        return {"decimal": str(value)}
    if kind is uuid.UUID:
        return {"uuid": value.bytes}
    if kind in _PATH_TYPES:
        return {"path": str(value)}
    raise MaterializerError(f"StdlibMaterializer cannot save a `{kind.__qualname__}`.")


def _decode(data_type: type, fields: dict[str, Any]) -> Any:
    if data_type is dt.datetime or data_type is dt.time:
        naive = data_type.fromisoformat(fields["iso"])
        return naive.replace(tzinfo=_tz_from(fields["tz"]), fold=fields["fold"])
    if data_type is dt.date:
        return dt.date.fromisoformat(fields["iso"])
    if data_type is dt.timedelta:
        return dt.timedelta(fields["days"], fields["seconds"], fields["microseconds"])
    if data_type is decimal.Decimal:
        return decimal.Decimal(fields["decimal"])
    if data_type is uuid.UUID:
        return uuid.UUID(bytes=fields["uuid"])
    if data_type in _PATH_TYPES:
        return data_type(fields["path"])
    raise MaterializerError(
        f"StdlibMaterializer cannot load a `{registry.identity(data_type)}`; the artifact "
        "names a type this materializer does not write."
    )


class StdlibMaterializer(BaseMaterializer):
    """``datetime``/``date``/``time``/``timedelta`` (time zone kept),
    ``Decimal``, ``UUID`` and ``pathlib`` paths as ``value.msgpack``."""

    ASSOCIATED_TYPES: ClassVar[tuple[type, ...]] = (
        dt.datetime,
        dt.date,
        dt.time,
        dt.timedelta,
        decimal.Decimal,
        uuid.UUID,
        *_PATH_TYPES,
    )
    ASSOCIATED_ARTIFACT_TYPE: ClassVar[str] = "data"
    VERSION: ClassVar[int] = 1

    @classmethod
    def can_handle_type(cls, data_type: type) -> bool:
        """Exact types only (a pandas ``Timestamp`` is a ``datetime`` subclass
        and would load as a plain ``datetime``)."""
        return data_type in cls.ASSOCIATED_TYPES

    def save(self, data: Any) -> None:
        try:
            fields = _encode(data)
        except LookupError:
            tz = type(data.tzinfo)
            warnings.warn(
                f"A `{type(data).__qualname__}` with a time zone of type "
                f"{registry.identity(tz)} is saved with cloudpickle: only datetime.timezone "
                "and zoneinfo.ZoneInfo are stored as data. Convert it with "
                "`value.astimezone(zoneinfo.ZoneInfo(name))` to store it without pickle.",
                UserWarning,
                stacklevel=2,
            )
            CloudpickleMaterializer(self.files).save(data)
            return
        with self.open(VALUE_FILE, "wb") as f:
            f.write(encode(fields))

    def load(self, data_type: type) -> Any:
        if PICKLE_FILE in self.files.names():
            return CloudpickleMaterializer(self.files).load(data_type)
        with self.open(VALUE_FILE, "rb") as f:
            fields = decode(f.read())
        if not isinstance(fields, dict):
            raise MaterializerError(f"{VALUE_FILE} does not hold a map; it is damaged.")
        try:
            return _decode(data_type, fields)
        except (KeyError, TypeError, ValueError) as e:
            raise MaterializerError(f"{VALUE_FILE} is not a valid stored value: {e!r}") from e

    def extract_metadata(self, data: Any) -> dict[str, Any]:
        kind = type(data)
        if kind is dt.datetime or kind is dt.time:
            return {"value": data.isoformat(), "tz": _tz_label(data.tzinfo)}
        if kind is dt.timedelta:
            return {"value": str(data), "seconds": data.total_seconds()}
        if kind is uuid.UUID:
            return {"value": str(data), "version": data.version}
        return {"value": str(data)}


class ArrayMaterializer(BaseMaterializer):
    """``array.array`` as its raw items in ``data.bin``; typecode in the state."""

    ASSOCIATED_TYPES: ClassVar[tuple[type, ...]] = (array.array,)
    ASSOCIATED_ARTIFACT_TYPE: ClassVar[str] = "data"
    VERSION: ClassVar[int] = 1

    @classmethod
    def can_handle_type(cls, data_type: type) -> bool:
        """Exact ``array.array`` only."""
        return data_type is array.array

    def save(self, data: Any) -> None:
        with self.open(ARRAY_FILE, "wb") as f:
            f.write(memoryview(data).cast("B"))
        self.files.state.update(typecode=data.typecode, byteorder=sys.byteorder)

    def load(self, data_type: type) -> Any:
        typecode = self.files.state.get("typecode")
        if not isinstance(typecode, str) or typecode not in array.typecodes:
            raise MaterializerError(f"array artifact records an unknown typecode {typecode!r}.")
        result = array.array(typecode)
        with self.open(ARRAY_FILE, "rb") as f:
            raw = f.read()
        if len(raw) % result.itemsize:
            raise MaterializerError(f"{ARRAY_FILE} is not a whole number of items; it is damaged.")
        result.frombytes(raw)
        if self.files.state.get("byteorder", sys.byteorder) != sys.byteorder:
            result.byteswap()
        return result

    def extract_metadata(self, data: Any) -> dict[str, Any]:
        return {"length": len(data), "typecode": data.typecode, "bytes": len(data) * data.itemsize}


class EnumMaterializer(BaseMaterializer):
    """An ``Enum`` member by its class (the artifact's data type) and value."""

    ASSOCIATED_TYPES: ClassVar[tuple[type, ...]] = (enum.Enum,)
    ASSOCIATED_ARTIFACT_TYPE: ClassVar[str] = "data"
    VERSION: ClassVar[int] = 1

    @classmethod
    def can_handle_type(cls, data_type: type) -> bool:
        """Enum classes importable by name (one defined in a function is not)."""
        return issubclass(data_type, enum.Enum) and _importable(data_type)

    def save(self, data: Any) -> None:
        BuiltinsMaterializer(self.files).save({"name": data.name, "value": data.value})

    def load(self, data_type: type) -> Any:
        if not (isinstance(data_type, type) and issubclass(data_type, enum.Enum)):
            raise MaterializerError(
                f"EnumMaterializer loads Enum members; the artifact names `{data_type!r}`."
            )
        stored = BuiltinsMaterializer(self.files).load(dict)
        try:
            return data_type(stored["value"])
        except ValueError as e:
            raise MaterializerError(
                f"`{registry.identity(data_type)}` has no member with value {stored['value']!r} "
                f"(it was saved as {stored['name']!r}); the enum changed since it was saved."
            ) from e

    def extract_metadata(self, data: Any) -> dict[str, Any]:
        value = data.value
        meta: dict[str, Any] = {"class": registry.identity(type(data)), "name": data.name}
        if type(value) in (bool, int, float, str) and len(str(value)) <= 100:
            meta["value"] = value
        return meta


def _has_initvar(data_type: type) -> bool:
    fields = getattr(data_type, "__dataclass_fields__", {})
    return any(f._field_type is dataclasses._FIELD_INITVAR for f in fields.values())  # type: ignore[attr-defined]


class DataclassMaterializer(BaseMaterializer):
    """A dataclass instance as its fields (class path = the artifact's data type).

    Not registered for a type (dataclasses share no base class): the registry
    offers it for any type that is a dataclass when nothing in its MRO is
    registered.
    """

    SKIP_REGISTRATION: ClassVar[bool] = True
    ASSOCIATED_ARTIFACT_TYPE: ClassVar[str] = "data"
    VERSION: ClassVar[int] = 1

    @classmethod
    def can_handle_type(cls, data_type: type) -> bool:
        """Dataclasses importable by name, without ``InitVar`` pseudo-fields
        (their values are not kept, so ``__init__`` could not be called)."""
        return (
            dataclasses.is_dataclass(data_type)
            and isinstance(data_type, type)
            and _importable(data_type)
            and not _has_initvar(data_type)
        )

    def save(self, data: Any) -> None:
        values = {f.name: getattr(data, f.name) for f in dataclasses.fields(data)}
        BuiltinsMaterializer(self.files).save(values)

    def load(self, data_type: type) -> Any:
        if not (isinstance(data_type, type) and dataclasses.is_dataclass(data_type)):
            raise MaterializerError(
                f"DataclassMaterializer loads dataclasses; the artifact names `{data_type!r}`."
            )
        values = BuiltinsMaterializer(self.files).load(dict)
        fields = {f.name: f for f in dataclasses.fields(data_type)}
        unknown = sorted(set(values) - set(fields))
        if unknown:
            raise MaterializerError(
                f"`{registry.identity(data_type)}` has no fields {unknown}: the class changed "
                "since the value was saved."
            )
        init = {name: v for name, v in values.items() if fields[name].init}
        try:
            obj = data_type(**init)
        except TypeError as e:
            raise MaterializerError(
                f"Cannot rebuild `{registry.identity(data_type)}` from its saved fields: {e}"
            ) from e
        for name, value in values.items():
            if not fields[name].init:
                object.__setattr__(obj, name, value)
        return obj

    def extract_metadata(self, data: Any) -> dict[str, Any]:
        return {
            "class": registry.identity(type(data)),
            "fields": [f.name for f in dataclasses.fields(data)],
        }
