"""Cache-key ingredients: canonical parameter encoding and code fingerprints.

``engine.pipelines.cache_key`` assembles them into a step's cache key. Everything here is
deterministic across processes and machines running the same Python minor
version.

The code fingerprint covers the step's normalised source (decorators,
docstrings, comments and whitespace do not count) and, recursively, the source
of the first-party functions and classes it references and the module-level
constants it reads. Code in the standard library, in site-/dist-packages and in
artledger's own packages is not first-party: upgrading numpy does not
invalidate a cache.

This module imports no other engine module except :mod:`engine.errors`, and
imports numpy only when it meets a numpy value.
"""

from __future__ import annotations

import ast
import dataclasses
import datetime as dt
import enum
import functools
import inspect
import math
import os
import pathlib
import site
import struct
import sys
import sysconfig
import types
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import msgpack
import xxhash

from engine.errors import InvalidArgumentError, UnhashableParameterError

__all__ = ["CodeFingerprint", "canonical", "code_fingerprint", "digest"]

"""Bump when anything that feeds a cache key changes meaning; old keys then miss."""

_ENGINE_PACKAGES = frozenset({"engine", "materializers"})
_ARRAY_INLINE_LIMIT = 1 << 16  # larger arrays enter the encoding as their xxh3-128 digest
_CONST_PREFIX = "const:"  # recipe values of module constants
_CELL_PREFIX = "cell:"  # recipe values of closure variables


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
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1


def _pack(value: Any) -> bytes:
    out: bytes = msgpack.packb(value, use_bin_type=True)
    return out


def _ext(code: int, payload: bytes) -> bytes:
    return _pack(msgpack.ExtType(code, payload))


def _identity(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _type_name(cls: type) -> str:
    return (
        cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    )


def _short_repr(value: Any, limit: int = 60) -> str:
    try:
        text = repr(value)
    except Exception:  # a broken __repr__ must not hide the real problem
        text = f"<{_type_name(type(value))} object>"
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
    return f"[{_short_repr(key, 40)}]"


class _Encoder:
    """Turns one value into canonical bytes; every output is one msgpack object."""

    def __init__(self) -> None:
        self._active: set[int] = set()  # containers being encoded: a cycle is an error

    def encode(self, v: Any) -> bytes:
        t = type(v)
        if v is None or t is bool or t is str or t is bytes:
            return _pack(v)
        if t is int:
            return self._int(v)
        if t is float:
            return _NAN if v != v else _pack(v)
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
        if _INT_MIN <= v <= _INT_MAX:
            return _pack(v)
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
        parts = [_pack(_identity(type(v)))]
        try:
            for name in names:
                try:
                    parts.append(_pack(name) + self.encode(getattr(v, name)))
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
            return _ext(_ENUM, _pack(_identity(t)) + _pack(v.name) + value)
        module = t.__module__
        if module == "numpy" or module.startswith("numpy."):
            return self._numpy(v)
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return self._fields(_DATACLASS, v, (f.name for f in dataclasses.fields(v)))
        if isinstance(v, tuple) and isinstance(getattr(t, "_fields", None), tuple):
            return self._fields(_NAMEDTUPLE, v, t._fields)  # type: ignore[attr-defined]
        if isinstance(v, pathlib.PurePath):
            flavour = "windows" if isinstance(v, pathlib.PureWindowsPath) else "posix"
            return _ext(_PATH, _pack(flavour) + _pack(str(v)))
        if isinstance(v, dt.datetime):
            return _ext(_DATETIME, _pack([v.isoformat(), v.fold]))
        if isinstance(v, dt.date):
            return _ext(_DATE, _pack(v.isoformat()))
        if isinstance(v, dt.time):
            return _ext(_TIME, _pack([v.isoformat(), v.fold]))
        if isinstance(v, dt.timedelta):
            return _ext(_TIMEDELTA, _pack([v.days, v.seconds, v.microseconds]))
        if isinstance(v, complex):
            return _ext(_COMPLEX, self.encode(v.real) + self.encode(v.imag))
        # Subclasses of plain types (OrderedDict, a str subclass, ...) encode as their base.
        if isinstance(v, str | bytes):
            return _pack(v)
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
            return _ext(_NP_SCALAR, self._dtype(v.dtype) + _pack(v.tobytes()))
        if type(v) is np.ndarray:
            if v.dtype.hasobject:
                raise _UnencodableError(v, "object arrays have no canonical bytes; pass a list")
            data = np.ascontiguousarray(v).tobytes()
            head = self._dtype(v.dtype) + _pack(list(v.shape))
            if len(data) <= _ARRAY_INLINE_LIMIT:
                return _ext(_NP_ARRAY, head + _pack(data))
            return _ext(_NP_ARRAY_DIGEST, head + _pack(xxhash.xxh3_128_digest(data)))
        if isinstance(v, np.dtype):
            return _ext(_NP_DTYPE, self._dtype(v))
        raise _UnencodableError(v)

    def _dtype(self, dtype: Any) -> bytes:
        if dtype.fields is None and dtype.subdtype is None:
            return _pack(dtype.str)
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
            f"parameter `{where}`{owner}: value of type `{_type_name(e.value_type)}` cannot be "
            f"encoded for the cache key{why}; pass a plain value (int, str, dict, ...) "
            "or set enable_cache=False"
        ) from None
    except RecursionError:
        owner = f" of step `{step}`" if step else ""
        raise UnhashableParameterError(
            f"parameter `{path}`{owner} is nested too deeply to be encoded for the cache key; "
            "flatten it or set enable_cache=False"
        ) from None


# --------------------------------------------------------------------------- first party


@functools.cache
def _library_dirs() -> tuple[str, ...]:
    dirs: set[str] = set()
    paths = sysconfig.get_paths()
    for name in ("stdlib", "platstdlib", "purelib", "platlib"):
        if paths.get(name):
            dirs.add(paths[name])
    for get in (site.getsitepackages, site.getusersitepackages):
        try:
            found = get()
        except (AttributeError, OSError):  # old virtualenv's site.py lacks them
            continue
        dirs.update([found] if isinstance(found, str) else found)
    dirs.add(str(pathlib.Path(os.__file__).parent))
    return tuple(sorted({os.path.realpath(d).rstrip(os.sep) + os.sep for d in dirs}))


@functools.cache
def _is_library_file(filename: str) -> bool:
    if filename.startswith("<"):
        return filename.startswith("<frozen")  # "<stdin>", "<string>", notebook cells: user code
    real = os.path.realpath(filename)
    if real.startswith(_library_dirs()):
        return True
    parts = pathlib.PurePath(real).parts
    return "site-packages" in parts or "dist-packages" in parts


def _is_engine_module(module: str | None) -> bool:
    return (module or "").partition(".")[0] in _ENGINE_PACKAGES


def _module_file(module: types.ModuleType) -> str | None:
    file = vars(module).get("__file__")
    return file if isinstance(file, str) else None


def _is_first_party(obj: Any) -> bool:
    """A plain function or class written by the user (not stdlib, packages or artledger)."""
    if isinstance(obj, types.FunctionType):
        return not _is_engine_module(obj.__module__) and not _is_library_file(
            obj.__code__.co_filename
        )
    if isinstance(obj, type):
        if _is_engine_module(obj.__module__) or obj.__module__ == "builtins":
            return False
        module = sys.modules.get(obj.__module__)
        if module is None:
            return False
        file = _module_file(module)
        if file is None:  # classes typed into a REPL live in __main__ without a file
            return obj.__module__ == "__main__"
        return not _is_library_file(file)
    return False


def _is_user_module(module: types.ModuleType) -> bool:
    if _is_engine_module(module.__name__):
        return False
    file = _module_file(module)
    if file is not None:
        return not _is_library_file(file)
    search = vars(module).get("__path__")  # a namespace package has no __file__
    if search is None:  # built-in module: sys, math, ...
        return False
    return not any(_is_library_file(str(p)) for p in search)


_CONST_SCALARS = (type(None), bool, int, float, complex, str, bytes)


def _is_constant(value: Any, depth: int = 0) -> bool:
    t = type(value)
    if t in _CONST_SCALARS or isinstance(value, enum.Enum):
        return True
    if t in (tuple, frozenset) and depth < 4:
        return all(_is_constant(x, depth + 1) for x in value)
    return False


def _unwrap(obj: Any) -> Any:
    """The function behind staticmethod, bound method, functools.wraps, lru_cache
    and callable objects made with functools.update_wrapper (such as a step)."""
    for _ in range(32):
        if isinstance(obj, staticmethod | classmethod | types.MethodType):
            obj = obj.__func__
        elif isinstance(obj, types.FunctionType) or type(obj).__name__ == "_lru_cache_wrapper":
            wrapped = vars(obj).get("__wrapped__") if hasattr(obj, "__dict__") else None
            if wrapped is None:
                return obj
            obj = wrapped
        elif not isinstance(obj, type | types.ModuleType) and isinstance(
            getattr(obj, "__dict__", {}).get("__wrapped__"), types.FunctionType
        ):
            obj = obj.__dict__["__wrapped__"]  # e.g. a @step called as a plain function
        else:
            return obj
    return obj


# --------------------------------------------------------------------------- source info


@dataclasses.dataclass(frozen=True)
class _SourceInfo:
    hash: str
    chains: tuple[tuple[str, ...], ...]  # names and attribute chains the code reads
    imports: tuple[tuple[str, str, str | None], ...]  # (local name, module, attribute)
    guess_attributes: bool  # bytecode fallback: try every name as a module attribute


_memo: dict[tuple[int, bool], tuple[weakref.ref[Any], _SourceInfo]] = {}


def _memoized(obj: Any, strip: bool, compute: Callable[[], _SourceInfo]) -> _SourceInfo:
    key = (id(obj), strip)
    hit = _memo.get(key)
    if hit is not None and hit[0]() is obj:
        return hit[1]
    info = compute()
    _memo[key] = (weakref.ref(obj, lambda _ref: _memo.pop(key, None)), info)
    return info


def _parse_definition(obj: Any) -> ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | None:
    try:
        source = inspect.getsource(obj)
    except (OSError, TypeError):
        return None
    if source[:1].isspace():  # nested or method: keep string literals byte-exact
        source = "if 1:\n" + source
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    node: ast.stmt | None = tree.body[0] if tree.body else None
    if isinstance(node, ast.If):
        node = node.body[0]
    if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return None
    return node if node.name == obj.__name__ else None


def _strip_docstrings(tree: ast.AST) -> None:
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            body = node.body
            if (
                body
                and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)
            ):
                node.body = body[1:] or [ast.Pass()]


def _attribute_chain(node: ast.Attribute) -> tuple[str, ...] | None:
    attrs: list[str] = []
    cur: ast.expr = node
    while isinstance(cur, ast.Attribute):
        attrs.append(cur.attr)
        cur = cur.value
    if not isinstance(cur, ast.Name):
        return None
    return (cur.id, *reversed(attrs))


def _references(
    node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef, global_names: set[str] | None
) -> _SourceInfo:
    chains: dict[tuple[str, ...], None] = {}
    imports: dict[tuple[str, str, str | None], None] = {}
    for sub in ast.walk(node):
        chain: tuple[str, ...] | None = None
        if isinstance(sub, ast.Attribute) and isinstance(sub.ctx, ast.Load):
            chain = _attribute_chain(sub)
        elif isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Load):
            chain = (sub.id,)
        elif isinstance(sub, ast.Import):
            for a in sub.names:
                local = a.asname or a.name.partition(".")[0]
                imports[(local, a.name if a.asname else local, None)] = None
        elif isinstance(sub, ast.ImportFrom) and sub.module and not sub.level:
            for a in sub.names:
                imports[(a.asname or a.name, sub.module, a.name)] = None
        if chain is not None:
            chains[chain] = None
    if global_names is not None and not isinstance(node, ast.ClassDef):
        # Keep the names the bytecode loads by name, plus those evaluated where the
        # function is defined: its decorators and default values.
        keep = global_names | {i[0] for i in imports}
        outer = [*node.decorator_list, *node.args.defaults, *node.args.kw_defaults]
        keep.update(
            n.id for o in outer if o is not None for n in ast.walk(o) if isinstance(n, ast.Name)
        )
        chains = {c: None for c in chains if c[0] in keep}
    return _SourceInfo("", tuple(chains), tuple(imports), guess_attributes=False)


def _code_objects(code: types.CodeType) -> Iterable[types.CodeType]:
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _code_objects(const)


def _code_hash(code: types.CodeType) -> str:
    consts: list[bytes] = []
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            consts.append(b"code:" + _code_hash(const).encode())
        else:
            try:
                consts.append(_Encoder().encode(const))
            except _UnencodableError:
                consts.append(b"repr:" + repr(const).encode())
    return digest(
        code.co_code,
        canonical([code.co_names, code.co_varnames, code.co_freevars, code.co_cellvars]),
        canonical([code.co_argcount, code.co_posonlyargcount, code.co_kwonlyargcount]),
        canonical(code.co_flags),
        *consts,
    )


def _function_info(func: types.FunctionType, strip_decorators: bool) -> _SourceInfo:
    code = func.__code__

    def compute() -> _SourceInfo:
        node = None if func.__name__ == "<lambda>" else _parse_definition(func)
        names: set[str] = set()
        for c in _code_objects(code):
            names.update(c.co_names)
        if node is None:  # no source (REPL, exec, lambda): hash the bytecode instead
            chains = tuple((n,) for n in sorted(names) + list(code.co_freevars))
            return _SourceInfo(_code_hash(code), chains, (), guess_attributes=True)
        if strip_decorators:
            node.decorator_list = []
        _strip_docstrings(node)
        refs = _references(node, names | set(code.co_freevars))
        dump = ast.dump(node, annotate_fields=False, include_attributes=False)
        return dataclasses.replace(refs, hash=digest(dump.encode()))

    return _memoized(code, strip_decorators, compute)


def _class_info(cls: type) -> _SourceInfo:
    def compute() -> _SourceInfo:
        node = _parse_definition(cls)
        if node is not None:
            _strip_docstrings(node)
            dump = ast.dump(node, annotate_fields=False, include_attributes=False)
            return dataclasses.replace(_references(node, None), hash=digest(dump.encode()))
        parts: list[bytes] = [canonical([_identity(b) for b in cls.__bases__])]
        names: set[str] = {b.__name__ for b in cls.__bases__}
        for attr, value in sorted(vars(cls).items()):
            func = _unwrap(value.fget if isinstance(value, property) else value)
            if isinstance(func, types.FunctionType):
                parts += [attr.encode(), _code_hash(func.__code__).encode()]
                for c in _code_objects(func.__code__):
                    names.update(c.co_names)
            elif _is_constant(value):
                parts += [attr.encode(), canonical(value)]
        chains = tuple((n,) for n in sorted(names))
        return _SourceInfo(digest(*parts), chains, (), guess_attributes=True)

    return _memoized(cls, False, compute)


# --------------------------------------------------------------------------- fingerprint


@dataclasses.dataclass(frozen=True)
class CodeFingerprint:
    """What a step's code contributes to its cache key.

    ``recipe`` maps ``"module:qualname"`` of the step itself (first, and named
    by ``root``) and of every first-party function or class it reaches to the
    hash of its normalised source; module constants it reads appear as
    ``"module:NAME"`` with values ``"const:<hash>"``, closure variables as
    ``"module:qualname.NAME"`` with ``"cell:<hash>"``. ``digest`` covers the
    recipe but not the module names, so a step hashes the same whether its
    file runs as ``__main__`` or is imported.
    """

    digest: str
    recipe: dict[str, str]
    root: str


class _Walker:
    """Breadth-first walk from the step through the first-party code it reaches."""

    def __init__(self) -> None:
        self.recipe: dict[str, str] = {}
        self.entries: list[tuple[str, str]] = []  # (label without module, value) in walk order
        self.seen: dict[int, Any] = {}  # id -> object, keeping objects alive during the walk
        self.values: set[tuple[str, str]] = set()  # constants recorded so far
        self.queue: deque[Any] = deque()

    def add(self, key: str, label: str, value: str) -> None:
        if self.recipe.get(key, value) != value:
            n = 2
            while f"{key}#{n}" in self.recipe:
                n += 1
            key = f"{key}#{n}"
        self.recipe[key] = value
        self.entries.append((label, value))

    def enqueue(self, obj: Any) -> None:
        if id(obj) not in self.seen:
            self.seen[id(obj)] = obj
            self.queue.append(obj)

    def run(self, root: Any) -> CodeFingerprint:
        self.seen[id(root)] = root
        self.visit(root, is_root=True)
        root_key = next(iter(self.recipe))
        while self.queue:
            self.visit(self.queue.popleft(), is_root=False)
        body = _Encoder().encode([list(e) for e in self.entries])
        return CodeFingerprint(digest(b"code", body), self.recipe, root_key)

    def visit(self, obj: Any, is_root: bool) -> None:
        if isinstance(obj, types.FunctionType):
            info = _function_info(obj, strip_decorators=is_root)
            namespace: Mapping[str, Any] = obj.__globals__
            closure = _closure_values(obj)
        else:
            info = _class_info(obj)
            module = sys.modules.get(obj.__module__)
            namespace = vars(module) if module is not None else {}
            closure = {}
        self.add(f"{obj.__module__}:{obj.__qualname__}", obj.__qualname__, info.hash)
        imported: dict[str, Any] = {}
        for local, module_name, attr in info.imports:
            found = sys.modules.get(module_name)  # never import: fingerprinting has no effects
            if found is not None and attr is not None:
                found = vars(found).get(attr)
            if found is not None:
                imported[local] = found
        all_names = [c[0] for c in info.chains]
        for chain in info.chains:
            head = chain[0]
            if head in closure:
                value = closure[head]
                if _is_constant(value):
                    self.const(f"{obj.__module__}:{obj.__qualname__}.{head}", _CELL_PREFIX, value)
                    continue
            elif head in imported:
                value = imported[head]
            elif head in namespace and not head.startswith("__"):
                value = namespace[head]
                if _is_constant(value):
                    self.const(f"{obj.__module__}:{head}", _CONST_PREFIX, value)
                    continue
            else:
                continue
            rest = chain[1:] if not info.guess_attributes else tuple(all_names)
            self.follow(value, rest, guess=info.guess_attributes)

    def follow(self, value: Any, attrs: tuple[str, ...], guess: bool) -> None:
        value = _unwrap(value)
        if isinstance(value, functools.partial):
            self.follow(value.func, (), guess=False)
            return
        if _is_first_party(value):
            self.enqueue(value)
            return
        if not isinstance(value, types.ModuleType) or not attrs or not _is_user_module(value):
            return
        members = vars(value)
        for attr in attrs if guess else attrs[:1]:
            if attr not in members:
                continue
            member = members[attr]
            if _is_constant(member):
                self.const(f"{value.__name__}:{attr}", _CONST_PREFIX, member)
            else:
                self.follow(member, () if guess else attrs[1:], guess=False)

    def const(self, key: str, prefix: str, value: Any) -> None:
        hashed = prefix + digest(canonical(value))
        if (key, hashed) not in self.values:
            self.values.add((key, hashed))
            self.add(key, key.partition(":")[2], hashed)


def _closure_values(func: types.FunctionType) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, cell in zip(func.__code__.co_freevars, func.__closure__ or (), strict=False):
        try:
            values[name] = cell.cell_contents
        except ValueError:  # the enclosing function has not assigned it yet
            continue
    return values


def code_fingerprint(func: Callable[..., Any] | type) -> CodeFingerprint:
    """Fingerprint ``func``'s normalised source and the first-party code it reaches.

    Decorators on ``func`` itself, docstrings, comments and formatting do not
    count; the body, the helpers it calls (recursively, cycle-safe) and the
    module constants they read do. Functions without retrievable source fall
    back to their bytecode.
    """
    root = _unwrap(func if isinstance(func, type) else inspect.unwrap(func))
    if isinstance(root, functools.partial):
        root = _unwrap(root.func)
    if not isinstance(root, types.FunctionType | type):
        raise InvalidArgumentError(
            f"cannot fingerprint `{_short_repr(func)}` of type `{_type_name(type(func))}`: "
            "a step must be a Python function"
        )
    return _Walker().run(root)
