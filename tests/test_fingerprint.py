"""Cache-key ingredients: canonical encoding, code fingerprints, explanations."""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import enum
import importlib.util
import math
import pathlib
import re
import struct
import sys
import textwrap
import threading
import types
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import InvalidArgumentError, UnhashableParameterError
from engine.pipelines.cache_key import CACHE_FORMAT_VERSION, KeyComponents, explain_difference
from engine.pipelines.canonical import canonical, digest
from engine.pipelines.fingerprint import code_fingerprint

LoadModule = Callable[..., types.ModuleType]


@pytest.fixture
def load_module(tmp_path: pathlib.Path) -> Iterator[LoadModule]:
    """Write source to a fresh file under tmp_path and import it under a unique name."""
    names: list[str] = []

    def load(source: str, name: str | None = None) -> types.ModuleType:
        name = name or f"fp_{uuid.uuid4().hex}"
        path = tmp_path / f"{name}.py"
        path.write_text(textwrap.dedent(source))
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        names.append(name)
        spec.loader.exec_module(module)
        return module

    yield load
    for name in names:
        sys.modules.pop(name, None)


def fingerprint_of(load_module: LoadModule, source: str, attr: str = "train") -> Any:
    return code_fingerprint(getattr(load_module(source), attr))


# --------------------------------------------------------------------------- digest


def test_digest_is_unambiguous_about_part_boundaries() -> None:
    assert digest(b"ab", b"c") != digest(b"a", b"bc")
    assert digest() != digest(b"")
    assert digest(b"x") == digest(b"x")
    assert len(digest(b"x")) == 32
    with pytest.raises(InvalidArgumentError, match="takes bytes"):
        digest("text")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- canonical


def test_dict_order_does_not_matter() -> None:
    a = {"b": 1, "a": [1, 2], 3: None, (1, "x"): {"z": 1, "y": 2}}
    b = {(1, "x"): {"y": 2, "z": 1}, 3: None, "a": [1, 2], "b": 1}
    assert list(a) != list(b)
    assert canonical(a) == canonical(b)


def test_types_are_distinguished() -> None:
    encodings = [
        canonical(v)
        for v in (1, 1.0, True, "1", b"1", [1], (1,), {1}, frozenset({1}), None, 0, False, 0.0)
    ]
    assert len(set(encodings)) == len(encodings)
    assert canonical([1, 2]) != canonical((1, 2))
    assert canonical({"a": 1}) != canonical({"a": 1.0})


def test_sets_are_order_independent() -> None:
    items = [f"item-{i}" for i in range(50)]
    grown = set(range(1000)) | set(items)  # a bigger table iterates differently
    shuffled = grown - set(range(1000))
    assert shuffled == set(items)
    assert canonical(set(items)) == canonical(shuffled)
    assert canonical(frozenset(items)) == canonical(frozenset(shuffled))


def test_floats_are_deterministic() -> None:
    other_nan = struct.unpack(">d", b"\x7f\xf8\x00\x00\x00\x00\x00\x01")[0]
    assert math.isnan(other_nan)
    assert canonical(math.nan) == canonical(float("nan")) == canonical(other_nan)
    assert canonical(-math.nan) == canonical(math.nan)
    assert canonical(0.0) != canonical(-0.0)
    assert canonical(0.1 + 0.2) != canonical(0.3)


def test_big_ints_and_subclasses() -> None:
    big = 2**200
    assert canonical(big) != canonical(big + 1)
    assert canonical(-big) != canonical(big)
    assert canonical(2**64 - 1) != canonical(2**64)
    assert canonical(OrderedDict([("b", 1), ("a", 2)])) == canonical({"a": 2, "b": 1})


class Color(enum.Enum):
    RED = 1
    BLUE = 2


class Level(enum.IntEnum):
    LOW = 1


@dataclasses.dataclass
class Opt:
    lr: float
    layers: list[int]


class Point(NamedTuple):
    x: int
    y: int


def test_richer_values_encode_deterministically() -> None:
    when = dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.timezone.utc)
    values: list[Any] = [
        when,
        when.replace(tzinfo=None),
        when.date(),
        when.time(),
        dt.timedelta(days=1, seconds=3),
        Color.RED,
        Color.BLUE,
        Level.LOW,
        pathlib.PurePosixPath("data/x.csv"),
        pathlib.PureWindowsPath("data/x.csv"),
        Opt(lr=0.1, layers=[1, 2]),
        Opt(lr=0.1, layers=[1, 3]),
        Point(1, 2),
        (1, 2),
        1 + 2j,
    ]
    encodings = [canonical(v) for v in values]
    assert encodings == [canonical(copy.deepcopy(v)) for v in values]
    assert len(set(encodings)) == len(encodings)
    assert canonical(Level.LOW) != canonical(1)
    assert canonical(pathlib.Path("a/b")) == canonical(pathlib.PurePosixPath("a/b"))


def test_numpy_values() -> None:
    a = np.arange(6, dtype=np.int64).reshape(2, 3)
    assert canonical(a) == canonical(a.copy())
    assert canonical(a) != canonical(a.reshape(3, 2))
    assert canonical(a) != canonical(a.astype(np.int32))
    assert canonical(a.T) == canonical(np.ascontiguousarray(a.T))
    assert canonical(np.float64(1.5)) == canonical(np.float64(1.5))
    assert canonical(np.float64(1.5)) != canonical(np.float32(1.5))
    assert canonical(np.float64(1.5)) != canonical(1.5)
    assert canonical(np.dtype("<f8")) != canonical(np.dtype(">f8"))
    big = np.zeros(100_000)
    big2 = big.copy()
    big2[-1] = 1
    assert canonical(big) == canonical(big.copy())
    assert canonical(big) != canonical(big2)
    assert len(canonical(big)) < 200  # large arrays enter by digest
    with pytest.raises(UnhashableParameterError, match="object arrays"):
        canonical(np.array([object()]), "arr")


def test_unencodable_value_names_the_parameter_path() -> None:
    config = {"opt": {"lr": 0.1, "lock": threading.Lock()}}
    with pytest.raises(UnhashableParameterError) as info:
        canonical(config, "config", step="train")
    message = str(info.value)
    assert message.startswith("parameter `config['opt']['lock']` of step `train`: value of type")
    assert "_thread.lock" in message
    assert "cannot be encoded for the cache key" in message
    assert "enable_cache=False" in message
    assert isinstance(info.value, TypeError)


@pytest.mark.parametrize(
    ("value", "where"),
    [
        ([1, object()], "params[1]"),
        ((1, [2, object()]), "params[1][1]"),
        (Opt(lr=0.1, layers=[object()]), "params.layers[0]"),  # type: ignore[list-item]
        ({object(): 1}, "params.keys()"),
        ({1, object()}, "params{...}"),
    ],
)
def test_error_paths(value: Any, where: str) -> None:
    with pytest.raises(UnhashableParameterError, match=re.escape(f"parameter `{where}`:")):
        canonical(value, "params")


def test_functions_and_cycles_are_errors() -> None:
    with pytest.raises(UnhashableParameterError, match="builtin_function_or_method"):
        canonical(len, "fn")
    loop: list[Any] = [1]
    loop.append(loop)
    with pytest.raises(UnhashableParameterError, match="contains itself"):
        canonical(loop, "loop")
    shared = [1, 2]
    assert canonical([shared, shared]) == canonical([[1, 2], [1, 2]])  # sharing is not a cycle


scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True)
    | st.text(max_size=8)
    | st.binary(max_size=8)
)
keys = st.none() | st.booleans() | st.integers() | st.text(max_size=6) | st.binary(max_size=4)
values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.lists(children, max_size=4).map(tuple)
        | st.dictionaries(keys, children, max_size=4)
        | st.frozensets(keys, max_size=4)
        | st.sets(keys, max_size=4)
    ),
    max_leaves=12,
)


def structure(value: Any) -> Any:
    """Exact, type-aware identity of a nested builtin value (NaN equals NaN, -0.0 != 0.0)."""
    t = type(value)
    if t is float:
        return ("float", "nan" if math.isnan(value) else struct.pack(">d", value))
    if t in (list, tuple):
        return (t.__name__, tuple(structure(v) for v in value))
    if t is dict:
        return ("dict", frozenset((structure(k), structure(v)) for k, v in value.items()))
    if t in (set, frozenset):
        return (t.__name__, frozenset(structure(v) for v in value))
    return (t.__name__, value)


@given(values)
def test_canonical_is_stable_under_deepcopy(value: Any) -> None:
    assert canonical(value) == canonical(copy.deepcopy(value))


@settings(max_examples=200)
@given(st.lists(values, min_size=2, max_size=8))
def test_canonical_is_injective(sample: list[Any]) -> None:
    for a in sample:
        for b in sample:
            assert (canonical(a) == canonical(b)) == (structure(a) == structure(b)), (a, b)


# --------------------------------------------------------------------------- code


STEP = """
import math, json
import numpy as np

def deco(**options):
    return lambda f: f

SCALE = 2

def helper(x):
    return x * SCALE

@deco(enable_cache=True)
def train(x):
    '''Train it.'''
    y = helper(x)
    return math.sqrt(y) + len(json.dumps([y])) + float(np.mean([y]))
"""


def test_same_function_same_digest(load_module: LoadModule) -> None:
    module = load_module(STEP)
    first, second = code_fingerprint(module.train), code_fingerprint(module.train)
    assert first == second
    assert first.root == f"{module.__name__}:train"
    assert next(iter(first.recipe)) == first.root
    # the same source in another module (e.g. run as __main__ vs imported) hashes the same
    again = fingerprint_of(load_module, STEP)
    assert again.digest == first.digest
    assert sorted(again.recipe.values()) == sorted(first.recipe.values())


def test_formatting_comments_and_docstrings_do_not_count(load_module: LoadModule) -> None:
    base = fingerprint_of(load_module, STEP)
    edited = STEP.replace(
        "    '''Train it.'''\n    y = helper(x)",
        '    """A different docstring,\n    over two lines."""\n\n    # a comment\n'
        "    y = helper( x )   # another",
    )
    assert edited != STEP
    assert fingerprint_of(load_module, edited).digest == base.digest
    no_doc = STEP.replace("    '''Train it.'''\n", "")
    assert fingerprint_of(load_module, no_doc).digest == base.digest


def test_decorator_options_do_not_count(load_module: LoadModule) -> None:
    base = fingerprint_of(load_module, STEP)
    edited = STEP.replace(
        "@deco(enable_cache=True)", '@deco(enable_cache=False, cache_version="2")'
    )
    assert fingerprint_of(load_module, edited).digest == base.digest
    undecorated = STEP.replace("@deco(enable_cache=True)\n", "")
    assert fingerprint_of(load_module, undecorated).digest == base.digest


def test_body_change_counts(load_module: LoadModule) -> None:
    base = fingerprint_of(load_module, STEP)
    changed = fingerprint_of(load_module, STEP.replace("y = helper(x)", "y = helper(x) + 1"))
    assert changed.digest != base.digest
    assert changed.recipe[changed.root] != base.recipe[base.root]


def test_stdlib_and_packages_are_not_in_the_recipe(load_module: LoadModule) -> None:
    module = load_module(STEP)
    recipe = code_fingerprint(module.train).recipe
    assert set(recipe) == {
        f"{module.__name__}:train",
        f"{module.__name__}:helper",
        f"{module.__name__}:SCALE",
    }
    assert not any(k.startswith(("math", "json", "numpy")) for k in recipe)


def test_engine_code_is_not_user_code(load_module: LoadModule) -> None:
    module = load_module(
        """
        import engine.pipelines.fingerprint
        from engine.pipelines.canonical import canonical

        def train(x):
            return engine.pipelines.fingerprint.digest(canonical(x))
        """
    )
    assert list(code_fingerprint(module.train).recipe) == [f"{module.__name__}:train"]


HELPERS_V1 = """
def scale(x):
    return x * 2

def unused():
    return 0
"""
STEP_USING_HELPERS = """
import {helpers} as helpers

def train(x):
    return helpers.scale(x)
"""


def test_changing_a_helper_in_another_module_counts(load_module: LoadModule) -> None:
    v1 = load_module(HELPERS_V1)
    v2 = load_module(HELPERS_V1.replace("x * 2", "x * 3"))
    first = code_fingerprint(load_module(STEP_USING_HELPERS.format(helpers=v1.__name__)).train)
    second = code_fingerprint(load_module(STEP_USING_HELPERS.format(helpers=v2.__name__)).train)
    assert f"{v1.__name__}:scale" in first.recipe
    assert f"{v1.__name__}:unused" not in first.recipe
    assert f"{v2.__name__}:scale" in second.recipe
    assert first.recipe[first.root] == second.recipe[second.root]  # the step itself is equal
    assert first.digest != second.digest
    same = load_module(HELPERS_V1)
    third = code_fingerprint(load_module(STEP_USING_HELPERS.format(helpers=same.__name__)).train)
    assert third.digest == first.digest

    old = KeyComponents.create(
        load_module(STEP_USING_HELPERS.format(helpers=v1.__name__)).train,
        step_name="train",
        parameters={},
        inputs={},
        outputs={},
    )
    new = KeyComponents.create(
        load_module(STEP_USING_HELPERS.format(helpers=v2.__name__)).train,
        step_name="train",
        parameters={},
        inputs={},
        outputs={},
    )
    assert explain_difference(old, new, "train") == ["code of scale() changed"]


def test_helpers_reached_by_name_from_import_and_closure(load_module: LoadModule) -> None:
    helpers = load_module(HELPERS_V1)
    module = load_module(
        f"""
        def make(factor):
            from {helpers.__name__} import scale

            def train(x):
                return scale(x) * factor + other(x)

            return train

        def other(x):
            return x

        train = make(3)
        train4 = make(4)
        """
    )
    fp = code_fingerprint(module.train)
    name = module.__name__
    assert f"{helpers.__name__}:scale" in fp.recipe
    assert f"{name}:other" in fp.recipe
    assert fp.recipe[f"{name}:make.<locals>.train.factor"].startswith("cell:")
    assert code_fingerprint(module.train4).digest != fp.digest


def test_classes_and_methods_are_included(load_module: LoadModule) -> None:
    source = """
    class Base:
        def value(self):
            return 1

    class Model(Base):
        def predict(self, x):
            return x + self.value()

    def train(x):
        return Model().predict(x)
    """
    base = fingerprint_of(load_module, source)
    assert [k.partition(":")[2] for k in base.recipe] == ["train", "Model", "Base"]
    changed = fingerprint_of(load_module, source.replace("return 1", "return 2"))
    assert changed.digest != base.digest


def test_wrapped_helpers_are_unwrapped(load_module: LoadModule) -> None:
    source = """
    import functools

    def logged(f):
        @functools.wraps(f)
        def wrapper(*args):
            return f(*args)
        return wrapper

    OFFSET = 1

    @functools.cache
    def cached(x):
        return x + 1

    @logged
    def double(x):
        return x * 2

    def train(x, offset=OFFSET):
        return cached(x) + double(x) + offset
    """
    base = fingerprint_of(load_module, source)
    labels = [k.partition(":")[2] for k in base.recipe]
    assert labels[0] == "train"
    assert sorted(labels) == ["OFFSET", "cached", "double", "logged", "train"]
    assert fingerprint_of(load_module, source.replace("x * 2", "x * 3")).digest != base.digest
    assert fingerprint_of(load_module, source.replace("x + 1", "x + 2")).digest != base.digest


def test_recursion_and_cycles_terminate(load_module: LoadModule) -> None:
    module = load_module(
        """
        def ping(n):
            return pong(n - 1) if n else 0

        def pong(n):
            return ping(n - 1) if n else 0

        def train(n):
            return train(n - 1) if n else ping(n)
        """
    )
    fp = code_fingerprint(module.train)
    assert [k.partition(":")[2] for k in fp.recipe] == ["train", "ping", "pong"]
    assert code_fingerprint(module.ping).recipe.keys() == {
        f"{module.__name__}:ping",
        f"{module.__name__}:pong",
    }


def test_module_constants_count(load_module: LoadModule) -> None:
    base = load_module(STEP)
    bigger = load_module(STEP.replace("SCALE = 2", "SCALE = 3"))
    first, second = code_fingerprint(base.train), code_fingerprint(bigger.train)
    assert first.digest != second.digest
    assert first.recipe[f"{base.__name__}:SCALE"].startswith("const:")
    assert first.recipe[first.root] == second.recipe[second.root]


def test_functions_without_source_use_bytecode() -> None:
    namespace: dict[str, Any] = {}
    exec("f = lambda x: x + 1\ng = lambda x: x + 2\nh = lambda x: x + 1", namespace)
    f, g, h = namespace["f"], namespace["g"], namespace["h"]
    assert code_fingerprint(f).digest == code_fingerprint(f).digest
    assert code_fingerprint(f).digest == code_fingerprint(h).digest
    assert code_fingerprint(f).digest != code_fingerprint(g).digest


def test_bytecode_fallback_still_follows_helpers(load_module: LoadModule) -> None:
    helpers = load_module(HELPERS_V1)
    namespace: dict[str, Any] = {"helpers": helpers}
    exec("def train(x):\n    return helpers.scale(x)", namespace)
    assert f"{helpers.__name__}:scale" in code_fingerprint(namespace["train"]).recipe


def test_not_a_function() -> None:
    with pytest.raises(InvalidArgumentError, match="a step must be a Python function"):
        code_fingerprint(len)


# --------------------------------------------------------------------------- keys and explain


def components(**changes: Any) -> KeyComponents:
    base = KeyComponents(
        code="c" * 32,
        code_recipe={"m:train": "a" * 32, "m:helper": "b" * 32, "m:SCALE": "const:" + "d" * 32},
        parameters={"factor": digest(canonical(2.0))},
        parameter_values={"factor": 2.0},
        inputs={"data": "e" * 32},
        outputs={"output": "materializers.builtins:BuiltinsMaterializer@1"},
        cache_version=None,
        code_root="m:train",
    )
    return dataclasses.replace(base, **changes)


def test_key_covers_what_matters_and_only_that() -> None:
    base = components()
    assert base.format_version == CACHE_FORMAT_VERSION == 1
    assert base.key() == components().key()
    assert len(base.key()) == 32
    same = [
        components(parameter_values={"factor": "shown differently"}),
        components(code_recipe={}),
    ]
    assert all(c.key() == base.key() for c in same)
    different = [
        components(code="f" * 32),
        components(parameters={"factor": digest(canonical(3.0))}),
        components(inputs={"data": "0" * 32}),
        components(outputs={"output": "x@2"}),
        components(cache_version="1"),
        components(format_version=2),
    ]
    keys = {c.key() for c in different}
    assert len(keys) == len(different) and base.key() not in keys


def test_record_round_trip() -> None:
    def train(shape: tuple[int, int], factor: float) -> float:
        return factor

    original = KeyComponents.create(
        train,
        step_name="train",
        parameters={"shape": (2, 3), "factor": 2.5, "tags": ["a", "b"]},
        inputs={"data": "1" * 32},
        outputs={"output": "x@1"},
        cache_version=2,
    )
    assert original.cache_version == "2"
    assert original.parameter_values["tags"] == ["a", "b"]
    assert repr(original.parameter_values["shape"]) == "(2, 3)"
    record = msgpack.unpackb(msgpack.packb(original.to_record(), use_bin_type=True), raw=False)
    restored = KeyComponents.from_record(record)
    assert restored == original
    assert restored.key() == original.key()
    assert repr(restored.parameter_values["shape"]) == "(2, 3)"
    with pytest.raises(InvalidArgumentError, match="version 99"):
        KeyComponents.from_record({**record, "v": 99})
    with pytest.raises(InvalidArgumentError, match="`inputs`"):
        KeyComponents.from_record({**record, "inputs": {"data": 1}})


def test_create_rejects_unencodable_parameters() -> None:
    def train(lock: Any) -> None:
        return None

    with pytest.raises(UnhashableParameterError, match="parameter `lock` of step `train`"):
        KeyComponents.create(
            train, step_name="train", parameters={"lock": threading.Lock()}, inputs={}, outputs={}
        )


def params(**values: Any) -> dict[str, Any]:
    return {
        "parameters": {k: digest(canonical(v)) for k, v in values.items()},
        "parameter_values": values,
    }


@pytest.mark.parametrize(
    ("new", "expected"),
    [
        (components(), []),
        (components(**params(factor=3.0)), ["parameter factor: 2.0 -> 3.0"]),
        (components(**params(factor=2)), ["parameter factor: 2.0 -> 2"]),
        (components(**params(factor="x" * 100)), ["parameter factor: 2.0 -> '" + "x" * 56 + "..."]),
        (components(**params(factor=2.0, lr=0.1)), ["parameter lr: added"]),
        (components(**params()), ["parameter factor: removed"]),
        (components(inputs={"data": "f" * 32}), ["input data: new content"]),
        (components(inputs={"data": "e" * 32, "labels": "1" * 32}), ["input labels: added"]),
        (components(inputs={}), ["input data: removed"]),
        (
            components(
                code="0" * 32, code_recipe={**components().code_recipe, "m:train": "1" * 32}
            ),
            ["code of step train() changed"],
        ),
        (
            components(
                code="0" * 32, code_recipe={**components().code_recipe, "m:helper": "1" * 32}
            ),
            ["code of helper() changed"],
        ),
        (
            components(
                code="0" * 32, code_recipe={**components().code_recipe, "m:Model.fit": "2" * 32}
            ),
            ["code of Model.fit() added"],
        ),
        (
            components(
                code="0" * 32, code_recipe={"m:train": "a" * 32, "m:SCALE": "const:" + "d" * 32}
            ),
            ["code of helper() removed"],
        ),
        (
            components(
                code="0" * 32,
                code_recipe={**components().code_recipe, "m:SCALE": "const:" + "9" * 32},
            ),
            ["module constant SCALE changed"],
        ),
        (
            components(
                code="0" * 32, code_recipe={**components().code_recipe, "n:helper": "b" * 32}
            ),
            ["code of helper() added"],
        ),
        (
            components(outputs={"output": "materializers.numpy:NumpyMaterializer@1"}),
            [
                "output output: materializer changed "
                "(materializers.builtins:BuiltinsMaterializer@1 -> "
                "materializers.numpy:NumpyMaterializer@1)"
            ],
        ),
        (components(cache_version="2"), ["cache_version: None -> '2'"]),
        (components(format_version=2), ["cache format version changed"]),
        (components(code="0" * 32, code_recipe={}), ["code of step train() changed"]),
    ],
)
def test_explain_difference(new: KeyComponents, expected: list[str]) -> None:
    assert explain_difference(components(), new, "train") == expected


def test_explain_lists_most_important_first() -> None:
    new = components(
        **params(factor=3.0),
        inputs={"data": "f" * 32},
        code="0" * 32,
        code_recipe={"m:train": "1" * 32, "m:helper": "2" * 32, "m:SCALE": "const:" + "3" * 32},
        cache_version="2",
    )
    assert explain_difference(components(), new, "train") == [
        "parameter factor: 2.0 -> 3.0",
        "input data: new content",
        "code of step train() changed",
        "code of helper() changed",
        "module constant SCALE changed",
        "cache_version: None -> '2'",
    ]
    assert explain_difference(None, new, "train") == ["no earlier run"]


def test_explain_real_steps(load_module: LoadModule) -> None:
    def create(module: types.ModuleType, factor: float) -> KeyComponents:
        return KeyComponents.create(
            module.train,
            step_name="train",
            parameters={"factor": factor},
            inputs={"data": "1" * 32},
            outputs={"output": "x@1"},
        )

    base = load_module(STEP)
    assert explain_difference(None, create(base, 2.0), "train") == ["no earlier run"]
    assert explain_difference(create(base, 2.0), create(base, 2.0), "train") == []
    edited = load_module(
        STEP.replace("x * SCALE", "x * SCALE + 1").replace("SCALE = 2", "SCALE = 5")
    )
    assert explain_difference(create(base, 2.0), create(edited, 3.0), "train") == [
        "parameter factor: 2.0 -> 3.0",
        "code of helper() changed",
        "module constant SCALE changed",
    ]


def test_a_step_called_as_a_plain_function_is_followed(load_module: LoadModule) -> None:
    source = """
        from engine import step

        @step
        def inner(x: int) -> int:
            return x + {delta}

        @step
        def train(x: int) -> int:
            return inner(x) * 2
        """
    v1 = load_module(source.format(delta=1))
    v2 = load_module(source.format(delta=2))
    fp1, fp2 = code_fingerprint(v1.train), code_fingerprint(v2.train)
    assert f"{v1.__name__}:inner" in fp1.recipe
    assert fp1.digest != fp2.digest
    assert code_fingerprint(load_module(source.format(delta=1)).train).digest == fp1.digest
