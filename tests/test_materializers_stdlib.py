"""Standard-library values, Enum members, dataclasses and pydantic models
through the real store, without pickle (pytest turns the cloudpickle
fallback's warning into an error)."""

from __future__ import annotations

import array
import dataclasses
import datetime as dt
import decimal
import enum
import pathlib
import subprocess
import sys
import textwrap
import uuid
import zoneinfo
from pathlib import Path
from typing import Any

import numpy as np
import pydantic
import pytest

from engine import MaterializerError, Store
from materializers import materializer_for
from materializers.cloudpickle_materializer import CloudpickleMaterializer
from materializers.stdlib import DataclassMaterializer, EnumMaterializer, StdlibMaterializer

REPO = Path(__file__).resolve().parents[1]
NEW_YORK = zoneinfo.ZoneInfo("America/New_York")


class Color(enum.Enum):
    RED = "red"
    PAIR = (1, 2)


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Perm(enum.Flag):
    R = 4
    W = 2
    X = 1


class Opaque:
    def __init__(self, value: int) -> None:
        self.value = value


@dataclasses.dataclass
class Point:
    x: int
    y: float = 0.5


@dataclasses.dataclass(frozen=True, slots=True)
class Sample:
    name: str
    when: dt.datetime
    weights: np.ndarray[Any, Any]
    points: list[Point]
    kind: Color = Color.RED
    derived: int = dataclasses.field(init=False, default=0)


@dataclasses.dataclass
class WithInitVar:
    x: int
    scale: dataclasses.InitVar[int]

    def __post_init__(self, scale: int) -> None:
        self.x *= scale


@dataclasses.dataclass
class HoldsOpaque:
    label: str
    payload: Opaque


class Inner(pydantic.BaseModel):
    n: int
    at: dt.date


class Config(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(arbitrary_types_allowed=True, extra="allow")

    lr: float = pydantic.Field(alias="learningRate")
    name: str = "run"
    inner: Inner
    table: np.ndarray[Any, Any] | None = None


class Batch(pydantic.RootModel[list[Inner]]):
    pass


class OddZone(dt.tzinfo):
    """A tzinfo of a kind the materializer cannot name (like pytz's)."""

    def utcoffset(self, when: dt.datetime | None) -> dt.timedelta:
        return dt.timedelta(hours=3)

    def dst(self, when: dt.datetime | None) -> dt.timedelta:
        return dt.timedelta(0)

    def tzname(self, when: dt.datetime | None) -> str:
        return "ODD"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, OddZone)

    def __hash__(self) -> int:
        return 3


VALUES: list[Any] = [
    dt.datetime(2024, 3, 10, 12, 30, 1, 999, tzinfo=NEW_YORK),
    dt.datetime(2024, 11, 3, 1, 30, tzinfo=NEW_YORK, fold=1),  # the second 01:30
    dt.datetime(2024, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30), "IST")),
    dt.datetime(2024, 1, 1, tzinfo=dt.timezone(-dt.timedelta(hours=2))),
    dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc),
    dt.datetime(1, 1, 1),
    dt.datetime.max,
    dt.date(2020, 2, 29),
    dt.time(23, 59, 59, 999999),
    dt.time(1, 2, 3, 4, tzinfo=dt.timezone.utc, fold=1),
    dt.timedelta(days=-3, microseconds=7),
    dt.timedelta.max,
    decimal.Decimal("-0.000"),
    decimal.Decimal("1.23456789012345678901234567890E+400"),
    decimal.Decimal("-Infinity"),
    uuid.UUID("12345678-1234-5678-1234-567812345678"),
    uuid.uuid4(),
    pathlib.Path("/data/train.csv"),
    pathlib.PurePosixPath("relative/dir"),
    pathlib.PureWindowsPath(r"C:\Users\x\model.bin"),
]


def _same(a: Any, b: Any) -> None:
    assert type(a) is type(b)
    if isinstance(a, decimal.Decimal):
        assert str(a) == str(b)  # -0.000 stays -0.000, exponent and sign kept
        return
    assert a == b
    if isinstance(a, (dt.datetime, dt.time)):
        assert a.fold == b.fold
        assert a.tzinfo == b.tzinfo
        if isinstance(a.tzinfo, zoneinfo.ZoneInfo):
            assert a.tzinfo is b.tzinfo
        if isinstance(a, dt.datetime):
            assert a.utcoffset() == b.utcoffset() and a.tzname() == b.tzname()


@pytest.mark.parametrize("value", VALUES, ids=lambda v: f"{type(v).__name__}:{v}")
def test_stdlib_values_roundtrip_exactly(store: Store, value: Any) -> None:
    art = store.save_artifact(value, "v")
    assert art.materializer == "materializers.stdlib:StdlibMaterializer"
    assert art.files == ["value.msgpack"]
    _same(art.load(), value)
    assert art.metadata["value"] == (
        value.isoformat() if hasattr(value, "isoformat") else str(value)
    )


def test_stdlib_metadata(store: Store) -> None:
    when = store.save_artifact(dt.datetime(2024, 6, 1, 8, tzinfo=NEW_YORK), "when")
    assert when.metadata["tz"] == "America/New_York"
    assert when.metadata["value"] == "2024-06-01T08:00:00-04:00"
    span = store.save_artifact(dt.timedelta(minutes=90), "span")
    assert span.metadata["seconds"] == 5400.0
    ident = store.save_artifact(uuid.UUID(int=1 << 100, version=4), "id")
    assert ident.metadata["version"] == 4


def test_exact_types_only() -> None:
    class Stamp(dt.datetime):
        pass

    assert not StdlibMaterializer.can_handle_type(Stamp)
    with pytest.warns(UserWarning, match=r"No materializer for type `.*Stamp`"):
        assert materializer_for(Stamp) is CloudpickleMaterializer


def test_other_time_zones_fall_back_to_a_signed_pickle_with_a_warning(store: Store) -> None:
    value = dt.datetime(2024, 1, 1, tzinfo=OddZone())
    with pytest.warns(UserWarning, match=r"OddZone.*cloudpickle.*zoneinfo"):
        art = store.save_artifact(value, "odd")
    assert art.files == ["artifact.pkl"]
    assert art.load() == value


def test_bytes_like_values(store: Store) -> None:
    for value in (array.array("d", [1.5, -2.0]), array.array("u", "héllo"), array.array("q")):
        art = store.save_artifact(value, "arr")
        assert art.materializer == "materializers.stdlib:ArrayMaterializer"
        back = art.load()
        assert type(back) is array.array and back == value and back.typecode == value.typecode
        assert art.metadata["length"] == len(value)
    for value in (b"raw", bytearray(b"\x00\x01"), memoryview(b"view")):
        art = store.save_artifact(value, "bytes")
        assert art.materializer.endswith("BuiltinsMaterializer")
        assert bytes(art.load()) == bytes(value)


@pytest.mark.parametrize("member", [Color.RED, Color.PAIR, Level.HIGH, Perm.R | Perm.W])
def test_enum_members_roundtrip_by_value(store: Store, member: enum.Enum) -> None:
    art = store.save_artifact(member, "member")
    assert art.materializer == "materializers.stdlib:EnumMaterializer"
    assert art.data_type == f"{__name__}:{type(member).__qualname__}"
    back = art.load()
    assert back is member
    assert art.metadata["class"] == art.data_type
    assert art.metadata["name"] == member.name


def test_enum_class_defined_in_a_function_is_pickled() -> None:
    class Local(enum.Enum):
        A = 1

    assert not EnumMaterializer.can_handle_type(Local)


def test_dataclass_roundtrip_with_nested_values(store: Store) -> None:
    value = Sample(
        "s",
        dt.datetime(2024, 5, 1, tzinfo=dt.timezone.utc),
        np.arange(6, dtype=np.float32).reshape(2, 3),
        [Point(1), Point(2, 3.5)],
    )
    object.__setattr__(value, "derived", 7)
    art = store.save_artifact(value, "sample")
    assert art.materializer == "materializers.stdlib:DataclassMaterializer"
    assert not any(name.endswith(".pkl") for name in art.files)
    back = art.load()
    assert type(back) is Sample
    assert back.name == "s" and back.when == value.when and back.kind is Color.RED
    assert back.weights.dtype == np.float32
    np.testing.assert_array_equal(back.weights, value.weights)
    assert back.points == value.points and type(back.points[0]) is Point
    assert back.derived == 7
    assert art.metadata["class"] == f"{__name__}:Sample"
    assert art.metadata["fields"] == ["name", "when", "weights", "points", "kind", "derived"]
    # A list of dataclasses and datetimes is stored element by element.
    listed = store.save_artifact([Point(1), dt.date(2020, 1, 1)], "list")
    assert listed.load() == [Point(1), dt.date(2020, 1, 1)]


def test_dataclass_with_init_var_or_local_class_falls_back() -> None:
    @dataclasses.dataclass
    class Local:
        x: int

    for kind in (WithInitVar, Local):
        assert not DataclassMaterializer.can_handle_type(kind)
        with pytest.warns(UserWarning, match="No materializer"):
            assert materializer_for(kind) is CloudpickleMaterializer
    assert DataclassMaterializer.can_handle_type(Point)


def test_dataclass_field_without_materializer_warns_for_that_field(store: Store) -> None:
    with pytest.warns(UserWarning, match="No materializer for type `Opaque`"):
        art = store.save_artifact(HoldsOpaque("a", Opaque(4)), "holds")
    assert art.materializer.endswith("DataclassMaterializer")
    back = art.load()
    assert back.label == "a" and back.payload.value == 4


def test_pydantic_model_roundtrip(store: Store) -> None:
    value = Config(
        learningRate=0.1,
        inner=Inner(n=3, at=dt.date(2024, 1, 2)),
        table=np.eye(2),
        note="extra",  # type: ignore[call-arg]
    )
    art = store.save_artifact(value, "config")
    assert art.materializer == "materializers.pydantic:PydanticMaterializer"
    assert not any(name.endswith(".pkl") for name in art.files)
    back = art.load()
    assert type(back) is Config and type(back.inner) is Inner
    assert back.lr == 0.1 and back.inner == value.inner and back.model_extra == {"note": "extra"}
    np.testing.assert_array_equal(back.table, np.eye(2))
    assert back.model_fields_set == value.model_fields_set == {"lr", "inner", "table", "note"}
    assert art.metadata["fields"] == ["lr", "name", "inner", "table"]
    plain = store.save_artifact(Inner(n=1, at=dt.date(2000, 1, 1)), "inner")
    assert plain.load() == Inner(n=1, at=dt.date(2000, 1, 1))
    vis = {name: (kind, data) for name, kind, data in plain.visualizations}
    assert vis["model.json"][0] == "json" and b'"2000-01-01"' in vis["model.json"][1]


def test_pydantic_root_model_roundtrip(store: Store) -> None:
    value = Batch([Inner(n=1, at=dt.date(2000, 1, 1)), Inner(n=2, at=dt.date(2000, 1, 2))])
    back = store.save_artifact(value, "batch").load()
    assert type(back) is Batch and back == value


def test_changed_enum_is_a_clear_error(store: Store) -> None:
    art = store.save_artifact(Color.RED, "c")
    stored = art.load()
    assert stored is Color.RED
    original = Color._value2member_map_.pop("red")
    try:
        with pytest.raises(MaterializerError, match=r"no member with value 'red'.*'RED'"):
            art.load()
    finally:
        Color._value2member_map_["red"] = original


def test_export_import_round_trip_stays_loadable(tmp_path: Path) -> None:
    values: dict[str, Any] = {
        "when": VALUES[0],
        "amount": decimal.Decimal("10.50"),
        "path": pathlib.Path("a/b"),
        "level": Level.LOW,
        "point": Point(3, 1.0),
        "inner": Inner(n=1, at=dt.date(2001, 1, 1)),
    }
    with Store.open(tmp_path / "src") as src:
        for name, value in values.items():
            src.save_artifact(value, name)
        src.export(tmp_path / "stream")
    with Store.open(tmp_path / "dst") as dst:
        Store.import_(tmp_path / "stream", into=dst)
        for name, value in values.items():
            assert dst.get_artifact(name).record().get("untrusted")
            _same(dst.load_artifact(name), value)


def _run(code: str, cwd: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=cwd,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_fresh_process_loads_imported_stdlib_values_without_importing_them_first(
    tmp_path: Path,
) -> None:
    with Store.open(tmp_path / "src") as src:
        src.save_artifact(VALUES[0], "when")
        src.save_artifact(decimal.Decimal("1.5"), "amount")
        src.save_artifact(Level.HIGH, "level")
        src.export(tmp_path / "stream")
    out = _run(
        """
        import sys
        import engine, materializers
        lazy = [m for m in ("materializers.stdlib", "zoneinfo", "decimal", "PIL", "pydantic")
                if m in sys.modules]
        print("lazy", lazy)
        from engine import Store, MaterializerError
        with Store.open("dst") as dst:
            Store.import_("stream", into=dst)
            print(repr(dst.load_artifact("when")), repr(dst.load_artifact("amount")))
            try:
                dst.load_artifact("level")
            except MaterializerError as e:
                print("refused", "allow(" in str(e))
        """,
        tmp_path,
    )
    assert "lazy []" in out
    assert "zoneinfo.ZoneInfo(key='America/New_York')" in out and "Decimal('1.5')" in out
    # The enum's module was never imported here: naming it is not enough to import it.
    assert "refused True" in out
