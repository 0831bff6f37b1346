"""Code fingerprints: what a step's code contributes to its cache key.

``engine.pipelines.cache_key`` combines them with the canonical parameter bytes
(:mod:`engine.pipelines.canonical`) into a step's cache key. Everything here is
deterministic across processes and machines running the same Python minor
version.

The code fingerprint covers the step's normalised source (decorators,
docstrings, comments and whitespace do not count) and, recursively, the source
of the first-party functions and classes it references and the module-level
constants it reads. Code in the standard library, in site-/dist-packages and in
artledger's own packages is not first-party: upgrading numpy does not
invalidate a cache.

This module imports no other engine module except :mod:`engine.errors` and
:mod:`engine.pipelines.canonical`; it never imports numpy.
"""

from __future__ import annotations

import ast
import dataclasses
import enum
import functools
import inspect
import os
import pathlib
import site
import sys
import sysconfig
import types
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from engine.errors import InvalidArgumentError
from engine.pipelines.canonical import (
    canonical,
    canonical_or_none,
    class_identity,
    digest,
    short_repr,
    type_name,
)

__all__ = ["CELL_PREFIX", "CONST_PREFIX", "CodeFingerprint", "code_fingerprint"]

_ENGINE_PACKAGES = frozenset({"engine", "materializers"})
CONST_PREFIX = "const:"  # recipe values of module constants
CELL_PREFIX = "cell:"  # recipe values of closure variables


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
            encoded = canonical_or_none(const)
            consts.append(b"repr:" + repr(const).encode() if encoded is None else encoded)
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
        parts: list[bytes] = [canonical([class_identity(b) for b in cls.__bases__])]
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
        body = canonical([list(e) for e in self.entries])
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
                    self.const(f"{obj.__module__}:{obj.__qualname__}.{head}", CELL_PREFIX, value)
                    continue
            elif head in imported:
                value = imported[head]
            elif head in namespace and not head.startswith("__"):
                value = namespace[head]
                if _is_constant(value):
                    self.const(f"{obj.__module__}:{head}", CONST_PREFIX, value)
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
                self.const(f"{value.__name__}:{attr}", CONST_PREFIX, member)
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
            f"cannot fingerprint `{short_repr(func)}` of type `{type_name(type(func))}`: "
            "a step must be a Python function"
        )
    return _Walker().run(root)
