"""Materializers: round-trips with exact types, the registry, pickle safety.

Round-trip tests go through the ``files_factory`` fixture (in-memory here; the
engine runs them through the real store). Security tests use the in-memory
files directly, because they tamper with bytes and keys through back doors.
"""

from __future__ import annotations

import io
import math
import pathlib
import socket
import subprocess
import sys
import threading
from collections import OrderedDict
from enum import IntEnum
from typing import Any

import hypothesis.extra.numpy as hnp
import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from memfiles import (  # type: ignore[import-not-found]
    TEST_KEY,
    FilesFactory,
    MemFiles,
    files_factory_fixture,  # noqa: F401  (the files_factory fixture)
)

import materializers
from engine.errors import ArtledgerError, MaterializerError, UntrustedArtifactError
from materializers import BaseMaterializer, materializer_for, register
from materializers.builtins import BuiltinsMaterializer
from materializers.cloudpickle_materializer import CloudpickleMaterializer, resign_pickles
from materializers.numpy import NumpyMaterializer
from materializers.registry import (
    identity,
    import_topic,
    register_alias,
    resolve,
    temporary_registrations,
    topic_of,
)

# files_factory hands out fresh files on every new(), so sharing it across examples is fine
SUPPRESSED = [HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
FAST = settings(max_examples=200, deadline=None, suppress_health_check=SUPPRESSED)


# --------------------------------------------------------------------------- helpers


def _canon(x: Any) -> str:
    """A nan-aware, type-exact text form, used to compare sets."""
    kind = type(x).__qualname__
    if isinstance(x, float):
        return f"float:{x.hex() if not math.isnan(x) else 'nan'}"
    if isinstance(x, (set, frozenset)):
        return f"{kind}{{{','.join(sorted(_canon(i) for i in x))}}}"
    if isinstance(x, (list, tuple)):
        return f"{kind}[{','.join(_canon(i) for i in x)}]"
    if isinstance(x, complex):
        return f"complex:{_canon(x.real)},{_canon(x.imag)}"
    return f"{kind}:{x!r}"


def assert_same(a: Any, b: Any, path: str = "value") -> None:
    """``a`` and ``b`` are equal with exactly the same types, recursively;
    nan equals nan, -0.0 differs from 0.0, arrays match in dtype, shape and bytes."""
    assert type(a) is type(b), f"{path}: {type(a)} is not {type(b)}"
    if isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.dtype.str == b.dtype.str, f"{path}: {a.dtype} {b.dtype}"
        assert a.shape == b.shape, f"{path}: {a.shape} != {b.shape}"
        if a.dtype.hasobject:
            for i, (x, y) in enumerate(zip(a.reshape(-1), b.reshape(-1), strict=True)):
                assert_same(x, y, f"{path}[{i}]")
        else:
            assert np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes(), path
    elif isinstance(a, np.generic):
        assert a.dtype == b.dtype, f"{path}: {a.dtype} {b.dtype}"
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes(), f"{path}: {a!r} != {b!r}"
    elif isinstance(a, float):
        assert _canon(a) == _canon(b), f"{path}: {a!r} != {b!r}"
    elif isinstance(a, complex):
        assert_same(a.real, b.real, path + ".real")
        assert_same(a.imag, b.imag, path + ".imag")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"{path}: length {len(a)} != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{path}[{i}]")
    elif isinstance(a, dict):
        assert len(a) == len(b), f"{path}: length {len(a)} != {len(b)}"
        for i, ((ka, va), (kb, vb)) in enumerate(zip(a.items(), b.items(), strict=True)):
            assert_same(ka, kb, f"{path}.keys()[{i}]")
            assert_same(va, vb, f"{path}[{ka!r}]")
    elif isinstance(a, (set, frozenset)):
        assert _canon(a) == _canon(b), f"{path}: {a!r} != {b!r}"
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


def roundtrip(
    obj: Any,
    factory: FilesFactory,
    cls: type[BaseMaterializer] | None = None,
    data_type: type | None = None,
) -> Any:
    cls = cls or materializer_for(type(obj))
    files = factory.new()
    cls(files).save(obj)
    return cls(factory.saved(files)).load(data_type or type(obj))


def saved_mem(obj: Any, cls: type[BaseMaterializer]) -> MemFiles:
    files = MemFiles()
    cls(files).save(obj)
    files.finish()
    return files


# --------------------------------------------------------------------------- strategies

big_ints = st.integers(min_value=-(2**300), max_value=2**300)
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | big_ints
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from([0.0, -0.0, math.inf, -math.inf, math.nan])
    | st.complex_numbers(allow_nan=True, allow_infinity=True)
    | st.text(st.characters(codec="utf-8") | st.characters(categories=["Cs"]))
    | st.binary()
    | st.binary().map(bytearray)
)


def _is_nan(x: Any) -> bool:
    return (isinstance(x, float) and math.isnan(x)) or (
        isinstance(x, complex) and (math.isnan(x.real) or math.isnan(x.imag))
    )


# Set elements and dict keys exclude NaN: distinct NaN objects are distinct
# members only by identity, which no value-based format (msgpack, JSON) keeps.
hashable_scalars = scalars.filter(lambda x: not isinstance(x, bytearray) and not _is_nan(x))
hashables = st.recursive(
    hashable_scalars,
    lambda inner: st.lists(inner, max_size=4).map(tuple) | st.frozensets(inner, max_size=4),
    max_leaves=8,
)
plain_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.lists(inner, max_size=5).map(tuple)
        | st.dictionaries(hashables, inner, max_size=5)
        | st.sets(hashables, max_size=5)
        | st.frozensets(hashables, max_size=5)
    ),
    max_leaves=25,
)

any_dtype = (
    hnp.scalar_dtypes()  # bool, ints, floats, complex, datetime64, timedelta64; both byte orders
    | hnp.byte_string_dtypes()
    | hnp.unicode_string_dtypes()
    | hnp.array_dtypes(max_size=3)  # structured
)
shapes = hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5)


@st.composite
def numpy_arrays(draw: st.DrawFn) -> np.ndarray[Any, Any]:
    array = draw(hnp.arrays(any_dtype, shapes))
    layout = draw(st.sampled_from(["c", "fortran", "view", "transposed"]))
    if layout == "fortran":
        array = np.asfortranarray(array)
    elif layout == "view" and array.ndim:
        steps = tuple(draw(st.sampled_from([1, 2, -1, -2])) for _ in range(array.ndim))
        array = array[tuple(slice(None, None, s) for s in steps)]
    elif layout == "transposed":
        array = array.T
    return array


@st.composite
def numpy_scalars(draw: st.DrawFn) -> np.generic:
    array = draw(hnp.arrays(hnp.scalar_dtypes() | hnp.unicode_string_dtypes(), ()))
    scalar = array[()]
    assert isinstance(scalar, np.generic)
    return scalar


# --------------------------------------------------------------------------- builtins


@FAST
@given(value=plain_values)
def test_builtins_roundtrip_exact_types(value: Any, files_factory: FilesFactory) -> None:
    assert materializer_for(type(value)) is BuiltinsMaterializer
    assert_same(value, roundtrip(value, files_factory))


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        False,
        0,
        -1,
        2**64,
        2**64 - 1,
        -(2**63) - 1,
        -(2**200) + 7,
        math.nan,
        -0.0,
        math.inf,
        "",
        "h\u00e9\U0001f600",
        "\ud800",
        b"\x00\xff",
        bytearray(b"x"),
        (),
        (1, (2, (3,))),
        {1: "a", (1, 2): b"b", None: [], -7: {frozenset({1}): set()}},
        {True: 1, 0.5: 2, "": 3},
        {2.5: 1, b"k": 2, "s": 3},
        [1, True, 1.0, "1", b"1", (1,), {1}, frozenset({1})],
        set(),
        {(1, "a"), (2, "b")},
        1 + 2j,
    ],
    ids=repr,
)
def test_builtins_examples(value: Any, files_factory: FilesFactory) -> None:
    assert_same(value, roundtrip(value, files_factory))


def test_builtins_file_is_plain_msgpack_and_sets_are_canonical() -> None:
    files = saved_mem([1, "a", None], BuiltinsMaterializer)
    assert files.names() == ["data.msgpack"]
    assert msgpack.unpackb(files.blobs["data.msgpack"]) == [1, "a", None]
    one = saved_mem({"b", "a", "c", (1, 2)}, BuiltinsMaterializer).blobs["data.msgpack"]
    two = saved_mem({(1, 2), "c", "a", "b"}, BuiltinsMaterializer).blobs["data.msgpack"]
    assert one == two


def test_builtins_metadata() -> None:
    m = BuiltinsMaterializer(MemFiles())
    assert m.extract_metadata([1, 2, 3]) == {"length": 3}
    assert m.extract_metadata({"a": 1}) == {"length": 1}
    assert m.extract_metadata(7) == {"value": 7}
    assert m.extract_metadata(2**100) == {"value": str(2**100)}
    assert m.extract_metadata("abc") == {"length": 3, "value": "abc"}
    assert "value" not in m.extract_metadata("x" * 1000)
    assert m.extract_metadata(b"abc") == {"length": 3}
    assert m.extract_metadata(None) == {}


def test_builtins_refuse_self_reference() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(MaterializerError, match="nested deeper"):
        BuiltinsMaterializer(MemFiles()).save(loop)


# --------------------------------------------------------------------------- containers of others

mixed_elements = numpy_arrays() | plain_values


@settings(max_examples=100, deadline=None, suppress_health_check=SUPPRESSED)
@given(
    value=st.lists(mixed_elements, max_size=4)
    | st.lists(mixed_elements, max_size=4).map(tuple)
    | st.dictionaries(hashables, mixed_elements, max_size=4)
    | st.dictionaries(st.text(max_size=3), st.lists(numpy_arrays(), max_size=2), max_size=3)
)
def test_containers_of_arrays_roundtrip(value: Any, files_factory: FilesFactory) -> None:
    assert_same(value, roundtrip(value, files_factory))


def test_container_is_stored_element_by_element_never_pickled() -> None:
    value = {"w": np.arange(3.0), "n": 3, (1, 2): [np.ones(2, np.int8), "x"]}
    files = saved_mem(value, BuiltinsMaterializer)
    assert files.names() == [
        "elements/0/data.npy",
        "elements/2/elements/0/data.npy",
        "elements/2/structure.msgpack",
        "structure.msgpack",
    ]
    assert not any(name.endswith(".pkl") for name in files.names())
    loaded = np.load(io.BytesIO(files.blobs["elements/0/data.npy"]))
    assert_same(loaded, value["w"])
    assert_same(BuiltinsMaterializer(files.reader()).load(dict), value)


class Opaque:
    """A type nobody registered a materializer for."""

    def __init__(self, x: int) -> None:
        self.x = x

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Opaque) and other.x == self.x

    __hash__ = None  # type: ignore[assignment]


def test_container_element_without_materializer_is_a_signed_pickle() -> None:
    value = [Opaque(1), np.zeros(2)]
    with pytest.warns(UserWarning, match=r"No materializer for type `Opaque`.*@register"):
        files = saved_mem(value, BuiltinsMaterializer)
    assert "elements/0/artifact.pkl" in files.names()
    assert "signature" in files.state["elements"]["elements/0"]
    assert_same(BuiltinsMaterializer(files.reader()).load(list), value)
    with pytest.raises(UntrustedArtifactError):
        BuiltinsMaterializer(files.reader(key=b"another store")).load(list)


# --------------------------------------------------------------------------- numpy


@settings(max_examples=300, deadline=None, suppress_health_check=SUPPRESSED)
@given(array=numpy_arrays())
def test_numpy_roundtrip(array: np.ndarray[Any, Any], files_factory: FilesFactory) -> None:
    assert materializer_for(type(array)) is NumpyMaterializer
    loaded = roundtrip(array, files_factory)
    assert_same(array, loaded)
    assert loaded.flags.writeable and loaded.flags.aligned
    if array.flags.f_contiguous and not array.flags.c_contiguous:
        assert loaded.flags.f_contiguous
    else:
        assert loaded.flags.c_contiguous


@FAST
@given(scalar=numpy_scalars())
def test_numpy_scalars_keep_their_type(scalar: np.generic, files_factory: FilesFactory) -> None:
    assert materializer_for(type(scalar)) is NumpyMaterializer
    assert_same(scalar, roundtrip(scalar, files_factory))


@pytest.mark.parametrize(
    "value",
    [
        np.float32(1),
        np.int64(-5),
        np.bool_(True),
        np.float64(np.nan),
        np.datetime64("2024-02-29T12:00"),
        np.timedelta64(3, "h"),
        np.str_("h\u00e9"),
        np.array(3.5),
        np.array([], dtype=">i4"),
        np.zeros((0, 3), order="F"),
        np.arange(12).reshape(3, 4)[:, ::2],
        np.asfortranarray(np.arange(6, dtype=">f8").reshape(2, 3)),
        np.array([b"ab", b""], dtype="S3"),
        np.array(["x", "\u00e9\u00e9"]),
        np.array([(1, 2.0, "a")], dtype=[("i", "<i2"), ("f", ">f4"), ("s", "U2")]),
        np.array([("x", 1)], dtype=[("na\u00efve", "U1"), ("n", "i1")]),
        np.array(["2001-01-01", "NaT"], dtype="datetime64[D]"),
        np.array([1 + 2j, np.nan], dtype=np.complex64),
        np.array([True, False]),
    ],
    ids=lambda v: f"{type(v).__name__}:{getattr(v, 'dtype', '')}:{getattr(v, 'shape', '')}",
)
def test_numpy_examples(value: Any, files_factory: FilesFactory) -> None:
    assert_same(value, roundtrip(value, files_factory))


@pytest.mark.parametrize(
    "array",
    [
        np.asfortranarray(np.arange(24, dtype=">i8").reshape(2, 3, 4)),
        np.arange(10)[::3],
        np.array([(1, "x")], dtype=[("\u0100\u4e2d", "<u2"), ("b", "U1")]),  # .npy format 3.0
        np.zeros((2, 0)),
    ],
    ids=["fortran", "strided", "utf8-field", "empty"],
)
def test_numpy_file_is_loadable_by_np_load(
    array: np.ndarray[Any, Any], files_factory: FilesFactory
) -> None:
    files = files_factory.new()
    NumpyMaterializer(files).save(array)
    reader = files_factory.saved(files)
    assert reader.names() == ["data.npy"]
    with reader.open_read("data.npy") as f:
        assert_same(np.load(io.BytesIO(f.read())), array)


def test_object_arrays_go_through_the_signed_pickle() -> None:
    array = np.array([{"a": 1}, None, Opaque(2)], dtype=object)
    files = saved_mem(array, NumpyMaterializer)
    assert files.names() == ["artifact.pkl"]
    assert isinstance(files.state["signature"], str)
    assert_same(NumpyMaterializer(files.reader()).load(np.ndarray), array)
    with pytest.raises(UntrustedArtifactError):
        NumpyMaterializer(files.reader(key=b"other")).load(np.ndarray)


class _SpyWriter(io.BytesIO):
    def __init__(self, sizes: list[int]) -> None:
        super().__init__()
        self.sizes = sizes

    def write(self, b: Any) -> int:
        self.sizes.append(memoryview(b).nbytes)
        return super().write(b)


@pytest.mark.parametrize("layout", ["C", "F", "strided"])
def test_numpy_streams_in_bounded_slices(layout: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(NumpyMaterializer, "CHUNK_BYTES", 4096)
    base = np.arange(64 * 256, dtype=np.float64).reshape(64, 256)
    array = {"C": base, "F": np.asfortranarray(base), "strided": base[::2, ::3]}[layout]
    files = MemFiles()
    sizes: list[int] = []
    real_open_write = files.open_write

    def spy_open_write(name: str) -> Any:
        inner = real_open_write(name)
        writer = _SpyWriter(sizes)
        real_close = writer.close

        def close() -> None:
            inner.write(writer.getvalue())
            inner.close()
            real_close()

        writer.close = close  # type: ignore[method-assign]
        return writer

    files.open_write = spy_open_write  # type: ignore[method-assign]
    NumpyMaterializer(files).save(array)
    assert max(sizes[1:]) <= 4096 and sum(sizes[1:]) == array.nbytes
    reader = files.reader()
    calls: list[tuple[str, int]] = []
    real_open_read = reader.open_read

    def spy_open_read(name: str) -> Any:
        f = real_open_read(name)
        real_readinto, real_read = f.readinto, f.read
        f.readinto = lambda b: calls.append(("readinto", len(b))) or real_readinto(b)  # type: ignore[method-assign]
        f.read = lambda n=-1: calls.append(("read", n)) or real_read(n)  # type: ignore[method-assign]
        return f

    reader.open_read = spy_open_read  # type: ignore[method-assign]
    loaded = NumpyMaterializer(reader).load(np.ndarray)
    assert_same(loaded, array)
    # readinto goes straight into the array's buffer: no bound is needed there.
    data_reads = [size for kind, size in calls if kind == "readinto"]
    assert sum(data_reads) >= array.nbytes
    assert not [size for kind, size in calls if kind == "read" and size > 4096]
    assert all(n != -1 and n <= 4096 for kind, n in calls if kind == "read")


def test_numpy_metadata() -> None:
    m = NumpyMaterializer(MemFiles())
    meta = m.extract_metadata(np.array([[1, 2], [3, 6]], dtype=np.int16))
    assert meta == {
        "shape": [2, 2],
        "dtype": "int16",
        "bytes": 8,
        "min": 1.0,
        "max": 6.0,
        "mean": 3.0,
    }
    assert all(type(meta[k]) is float for k in ("min", "max", "mean"))
    assert m.extract_metadata(np.array([], dtype=np.float32)) == {
        "shape": [0],
        "dtype": "float32",
        "bytes": 0,
    }
    assert "min" not in m.extract_metadata(np.array(["a"]))
    assert m.extract_metadata(np.float32(2))["max"] == 2.0
    assert math.isnan(m.extract_metadata(np.array([np.nan, np.inf, -np.inf]))["mean"])


def test_numpy_visualizations() -> None:
    small, files = np.array([[1.5, 2], [3, 4]]), MemFiles()
    assert NumpyMaterializer(files).save_visualizations(small) == {
        "preview.csv": "csv",
        "preview.html": "html",
    }
    files.finish()
    assert files.blobs["preview.csv"] == b"1.5,2.0\n3.0,4.0\n"
    assert b"<table>" in files.blobs["preview.html"]
    big, files = np.zeros((100, 100)), MemFiles()
    assert NumpyMaterializer(files).save_visualizations(big) == {"summary.md": "markdown"}
    assert b"(100, 100)" in files.blobs["summary.md"] or b"100, 100" in files.blobs["summary.md"]
    structured = np.array([("a,b", 1)], dtype=[("s", "U3"), ("n", "i1")])
    files = MemFiles()
    NumpyMaterializer(files).save_visualizations(structured)
    assert b'"' in files.blobs["preview.csv"]


def test_import_materializers_does_not_import_numpy() -> None:
    code = (
        "import sys, time; t = time.perf_counter(); import materializers; "
        "dt = time.perf_counter() - t; "
        "assert 'numpy' not in sys.modules, 'numpy imported'; "
        "assert 'cloudpickle' not in sys.modules, 'cloudpickle imported'; print(dt)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert float(out.stdout) < 0.15


def test_numpy_materializer_is_registered_lazily() -> None:
    code = (
        "import sys, numpy as np, materializers; "
        "assert 'materializers.numpy' not in sys.modules; "
        "c = materializers.materializer_for(np.float32); "
        "print(materializers.identity(c))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "materializers.numpy:NumpyMaterializer"


# --------------------------------------------------------------------------- registry


class Animal:
    def __init__(self, name: str) -> None:
        self.name = name


class Dog(Animal):
    pass


def test_registry_walks_the_mro_and_explicit_register_overrides() -> None:
    with temporary_registrations():

        class AnimalMaterializer(BaseMaterializer):
            ASSOCIATED_TYPES = (Animal,)

        assert materializer_for(Dog) is AnimalMaterializer  # a subclass uses its parent's

        class LateAnimalMaterializer(BaseMaterializer):  # automatic: first one wins
            ASSOCIATED_TYPES = (Animal,)

        assert materializer_for(Animal) is AnimalMaterializer

        @register
        class DogMaterializer(BaseMaterializer):
            ASSOCIATED_TYPES = (Dog,)
            SKIP_REGISTRATION = True

        assert materializer_for(Dog) is DogMaterializer
        assert materializer_for(Animal) is AnimalMaterializer
        assert register(LateAnimalMaterializer) is LateAnimalMaterializer  # explicit: takes over
        assert materializer_for(Animal) is LateAnimalMaterializer
        register(LateAnimalMaterializer)  # idempotent
        assert materializer_for(Animal) is LateAnimalMaterializer
    assert Animal not in materializers.registered()


def test_user_materializers_win_over_builtins() -> None:
    with temporary_registrations():

        class MyDict(BaseMaterializer):  # automatic registration still beats a built-in
            ASSOCIATED_TYPES = (dict,)

        assert materializer_for(dict) is MyDict
        assert materializer_for(list) is BuiltinsMaterializer
    assert materializer_for(dict) is BuiltinsMaterializer


def test_skip_registration_applies_to_the_class_itself_only() -> None:
    with temporary_registrations():

        class Abstract(BaseMaterializer):
            ASSOCIATED_TYPES = (Animal,)
            SKIP_REGISTRATION = True

        assert Animal not in materializers.registered()

        class Concrete(Abstract):
            pass

        assert materializer_for(Animal) is Concrete


def test_subclasses_of_builtins_are_not_silently_converted(files_factory: FilesFactory) -> None:
    class Color(IntEnum):
        RED = 1

    for value in (Color.RED, OrderedDict(a=1)):
        with pytest.warns(UserWarning, match="No materializer for type"):
            cls = materializer_for(type(value))
        assert cls is CloudpickleMaterializer
    assert_same(OrderedDict(a=1), roundtrip(OrderedDict(a=1), files_factory, cls))
    with pytest.warns(UserWarning, match="`matrix`"):
        assert materializer_for(np.matrix) is CloudpickleMaterializer


def test_fallback_warns_and_roundtrips(files_factory: FilesFactory) -> None:
    with pytest.warns(UserWarning, match=r"`Opaque`.*`@register`.*`output_materializers=`"):
        cls = materializer_for(Opaque)
    assert cls is CloudpickleMaterializer
    assert_same(Opaque(3), roundtrip(Opaque(3), files_factory, cls))


def test_identity_resolve_topics_and_aliases() -> None:
    assert identity(BuiltinsMaterializer) == "materializers.builtins:BuiltinsMaterializer"
    assert resolve("materializers.numpy:NumpyMaterializer") is NumpyMaterializer
    assert topic_of(int) == "builtins:int"
    assert topic_of(np.ndarray) == "numpy:ndarray"
    assert topic_of(type(None)) == "builtins:NoneType"
    assert import_topic("builtins:NoneType") is type(None)
    assert import_topic("numpy:ndarray") is np.ndarray
    assert import_topic(topic_of(Dog)) is Dog
    with temporary_registrations():
        register_alias("old.module:OldAnimal", Animal)
        assert import_topic("old.module:OldAnimal") is Animal

        @register(aliases=("old.place:OldMat",))
        class Renamed(BaseMaterializer):
            ASSOCIATED_TYPES = (Dog,)

        assert resolve("old.place:OldMat") is Renamed
        assert resolve(identity(Renamed)) is Renamed  # defined in a function: known in-process
    with pytest.raises(MaterializerError, match=r"no_such_module_xyz:Thing.*importable"):
        resolve("no_such_module_xyz:Thing")
    with pytest.raises(MaterializerError, match=r"materializers.numpy:Nope.*register_alias"):
        resolve("materializers.numpy:Nope")
    with pytest.raises(MaterializerError, match="not a BaseMaterializer"):
        resolve("builtins:int")
    with pytest.raises(MaterializerError, match="form"):
        resolve("no-colon")
    with pytest.raises(MaterializerError, match="not a type"):

        class Bad(BaseMaterializer):
            ASSOCIATED_TYPES = ("dict",)  # type: ignore[assignment]


def test_errors_are_artledger_errors() -> None:
    assert issubclass(MaterializerError, ArtledgerError)
    assert issubclass(UntrustedArtifactError, ArtledgerError)


# --------------------------------------------------------------------------- BaseMaterializer API


class Bundle:
    def __init__(self, weights: str, vocab: list[str]) -> None:
        self.weights, self.vocab = weights, vocab


class UriStyleMaterializer(BaseMaterializer):
    """Ported ZenML style: plain open() in a sub-directory of self.uri."""

    ASSOCIATED_TYPES = (Bundle,)
    ASSOCIATED_ARTIFACT_TYPE = "model"
    SKIP_REGISTRATION = True

    def save(self, data: Bundle) -> None:
        model_dir = pathlib.Path(self.uri) / "model"
        model_dir.mkdir()
        (model_dir / "weights.txt").write_text(data.weights, encoding="utf-8")
        with open(model_dir / "vocab.txt", "w", encoding="utf-8") as f:
            f.write("\n".join(data.vocab))

    def load(self, data_type: type) -> Bundle:
        model_dir = pathlib.Path(self.uri) / "model"
        return Bundle(
            (model_dir / "weights.txt").read_text(encoding="utf-8"),
            (model_dir / "vocab.txt").read_text(encoding="utf-8").split("\n"),
        )


def test_uri_style_materializer(files_factory: FilesFactory) -> None:
    files = files_factory.new()
    UriStyleMaterializer(files).save(Bundle("0.5 0.25", ["a", "b\u00e9"]))
    reader = files_factory.saved(files)
    assert reader.names() == ["model/vocab.txt", "model/weights.txt"]
    loaded = UriStyleMaterializer(reader).load(Bundle)
    assert (loaded.weights, loaded.vocab) == ("0.5 0.25", ["a", "b\u00e9"])


class TextMaterializer(BaseMaterializer):
    SKIP_REGISTRATION = True

    def save(self, data: str) -> None:
        with self.open("notes/readme.md", "w") as f:
            f.write(data)

    def load(self, data_type: type) -> str:
        with self.open("notes/readme.md") as f:
            return f.read()


def test_text_mode_open(files_factory: FilesFactory) -> None:
    files = files_factory.new()
    TextMaterializer(files).save("line one\nl\u00efne two\n")
    reader = files_factory.saved(files)
    with reader.open_read("notes/readme.md") as f:
        assert f.read() == "line one\nl\u00efne two\n".encode()
    assert TextMaterializer(reader).load(str) == "line one\nl\u00efne two\n"


@pytest.mark.parametrize("name", ["/etc/passwd", "../up", "a/../../b", "a//b", "", "./x", "a\\b"])
def test_open_rejects_names_outside_the_artifact(name: str) -> None:
    with pytest.raises(MaterializerError):
        TextMaterializer(MemFiles()).open(name, "wb")


def test_open_rejects_unknown_modes() -> None:
    with pytest.raises(MaterializerError, match="mode"):
        TextMaterializer(MemFiles()).open("x", "a")  # type: ignore[call-overload]


def test_base_defaults() -> None:
    m = TextMaterializer(MemFiles())
    assert m.extract_metadata("x") == {} and m.save_visualizations("x") == {}
    assert BaseMaterializer.ASSOCIATED_ARTIFACT_TYPE == "data" and BaseMaterializer.VERSION == 1
    with pytest.raises(NotImplementedError):
        BaseMaterializer(MemFiles()).save(1)
    with pytest.raises(NotImplementedError):
        BaseMaterializer(MemFiles()).load(int)


# --------------------------------------------------------------------------- pickle safety


class Gadget:
    """Unpickling it creates a file: proof of code execution."""

    def __init__(self, path: pathlib.Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (pathlib.Path.touch, (self.path,))


def test_signed_gadget_really_runs_when_trusted(tmp_path: pathlib.Path) -> None:
    marker = tmp_path / "pwned"
    files = saved_mem(Gadget(marker), CloudpickleMaterializer)
    assert not marker.exists()
    CloudpickleMaterializer(files.reader()).load(Gadget)
    assert marker.exists()  # the control: this payload does run code


def test_tampered_payload_is_refused_before_unpickling(tmp_path: pathlib.Path) -> None:
    marker = tmp_path / "pwned"
    files = saved_mem("harmless", CloudpickleMaterializer)
    files.blobs["artifact.pkl"] = saved_mem(Gadget(marker), CloudpickleMaterializer).blobs[
        "artifact.pkl"
    ]
    with pytest.raises(
        UntrustedArtifactError, match=r"artifact\.pkl.*does not match.*trust_pickles"
    ):
        CloudpickleMaterializer(files.reader()).load(str)
    assert not marker.exists()


def test_other_secret_is_refused_before_unpickling(tmp_path: pathlib.Path) -> None:
    marker = tmp_path / "pwned"
    files = saved_mem(Gadget(marker), CloudpickleMaterializer)
    with pytest.raises(UntrustedArtifactError, match=r"save it again.*trust_pickles"):
        CloudpickleMaterializer(files.reader(key=TEST_KEY + b"!")).load(Gadget)
    assert not marker.exists()


@pytest.mark.parametrize("signature", [None, "", 12, "0" * 64])
def test_missing_or_bogus_signature_is_refused(tmp_path: pathlib.Path, signature: Any) -> None:
    marker = tmp_path / "pwned"
    files = saved_mem(Gadget(marker), CloudpickleMaterializer)
    reader = files.reader()
    if signature is None:
        del reader.state["signature"]
    else:
        reader.state["signature"] = signature
    with pytest.raises(UntrustedArtifactError, match=r"artifact\.pkl"):
        CloudpickleMaterializer(reader).load(Gadget)
    assert not marker.exists()


def test_pickle_records_versions_and_signature() -> None:
    import cloudpickle

    files = saved_mem({"a": Opaque(1)}, CloudpickleMaterializer)
    assert files.names() == ["artifact.pkl"]
    assert files.state["python"] == f"{sys.version_info.major}.{sys.version_info.minor}"
    assert files.state["cloudpickle"] == cloudpickle.__version__
    assert files.verify(files.blobs["artifact.pkl"], files.state["signature"])
    msgpack.packb(files.state)  # state must be msgpack-able for the event


def test_python_version_mismatch_warns() -> None:
    files = saved_mem([Opaque(1)], CloudpickleMaterializer)
    reader = files.reader()
    reader.state["python"] = "3.9"
    current = f"{sys.version_info.major}.{sys.version_info.minor}"
    with pytest.warns(UserWarning, match=rf"Python 3\.9.*Python {current}"):
        assert CloudpickleMaterializer(reader).load(list) == [Opaque(1)]


@pytest.mark.parametrize("make", [threading.Lock, lambda: socket.socket()])
def test_unpicklable_object_fails_before_writing(make: Any) -> None:
    obj = make()
    try:
        files = MemFiles()
        with pytest.raises(MaterializerError, match=r"type `\w+`.*materializer"):
            CloudpickleMaterializer(files).save(obj)
        assert files.names() == [] and files.state == {}
    finally:
        if isinstance(obj, socket.socket):
            obj.close()


def test_unpickling_failure_is_a_materializer_error() -> None:
    files = saved_mem("x", CloudpickleMaterializer)
    payload = b"cno_such_mod_q\nX\n."  # protocol 0: GLOBAL of a missing module
    files.blobs["artifact.pkl"] = payload
    reader = files.reader()
    reader.state["signature"] = reader.sign(payload)
    with pytest.raises(MaterializerError, match="Cannot unpickle"):
        CloudpickleMaterializer(reader).load(object)


def test_resign_pickles_trusts_an_imported_artifact() -> None:
    value = {"a": [Opaque(1), np.zeros(1)], "b": np.array([None], dtype=object)}
    with pytest.warns(UserWarning, match="`Opaque`"):
        files = saved_mem(value, BuiltinsMaterializer)
    imported = files.reader(key=b"destination store")
    with pytest.raises(UntrustedArtifactError):
        BuiltinsMaterializer(imported).load(dict)
    assert resign_pickles(imported) == 2
    assert_same(BuiltinsMaterializer(imported).load(dict), value)
