"""Which materializer saves which type, and how classes are named in the log.

Rules (the contract the engine and users rely on):

* A materializer registers for its ``ASSOCIATED_TYPES`` when its class is
  defined (``SKIP_REGISTRATION = True`` in the class body opts out), or
  explicitly with :func:`register`.
* For one exact type, **a user materializer always wins over a built-in one**
  (built-ins are the classes defined in this package). Among automatic
  registrations the first one wins; an explicit :func:`register` always takes
  the type over, whoever had it (last explicit call wins).
* :func:`materializer_for` walks the data type's MRO and returns the first
  registered materializer whose ``can_handle_type`` accepts the type, so a
  subclass of ``Animal`` uses ``Animal``'s materializer unless it has its own.
* With nothing found it falls back to the cloudpickle materializer and says so
  with a :class:`UserWarning`.
* Saving chooses by value (:func:`materializer_for_value`): the same, except
  that an ``OrderedDict`` of torch tensors (a ``state_dict()``) goes to the
  torch materializer when torch is already imported and no user materializer
  claims ``OrderedDict``.

Classes (materializers and data types) are named ``"module:QualName"``.
Renamed classes keep loading through aliases (:func:`register_alias`).
numpy is never imported by this module: its materializer is registered the
first time a type whose MRO contains ``numpy.ndarray`` or ``numpy.generic`` is
looked up.

**Untrusted artifacts** (imported ones, see ``Store.import_``) name classes
that an attacker may have chosen, and importing a module runs its code. While
such an artifact loads (inside :func:`untrusted`), :func:`resolve` and
:func:`import_topic` import nothing: they return only classes this process
already knows — registered materializers (the built-in ones included, numpy's
loaded on demand), types registered for them, types seen by :func:`topic_of`,
alias targets, and subclasses of registered types found in modules that are
already imported — or classes on the allow-list (:func:`allow`, or the
environment variable ``ARTLEDGER_ALLOW_CLASSES``, identities separated by
commas or spaces). Anything else is a :class:`MaterializerError` naming the
identity and how to allow it.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
import threading
import warnings
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, TypeVar, overload

from engine.errors import MaterializerError

if TYPE_CHECKING:
    from materializers.base import BaseMaterializer

M = TypeVar("M", bound="type[BaseMaterializer]")

_BUILTIN_PACKAGE = "materializers"
# This module sits below the materializer classes: it names the two it needs and
# imports them when first used, so none of them is imported back from here.
_BASE = "materializers.base:BaseMaterializer"
_FALLBACK = "materializers.cloudpickle_materializer:CloudpickleMaterializer"

# exact data type -> the materializer registered for it
_by_type: dict[type, type[BaseMaterializer]] = {}
# identity -> class, for every materializer ever registered in this process (so
# classes that cannot be imported by name, e.g. defined in a function, still resolve)
_known: dict[str, type[BaseMaterializer]] = {}
# old identity or topic -> new one
_aliases: dict[str, str] = {}
# topic -> data type, for types seen by topic_of (same reason as _known)
_seen_types: weakref.WeakValueDictionary[str, type] = weakref.WeakValueDictionary()
# topics whose materializer lives in a module imported on first use
_lazy: dict[str, str] = {
    "numpy:ndarray": "materializers.numpy",
    "numpy:generic": "materializers.numpy",
    "datetime:date": "materializers.stdlib",
    "datetime:time": "materializers.stdlib",
    "datetime:timedelta": "materializers.stdlib",
    "decimal:Decimal": "materializers.stdlib",
    "uuid:UUID": "materializers.stdlib",
    "pathlib:PurePath": "materializers.stdlib",
    "pathlib._local:PurePath": "materializers.stdlib",
    "enum:Enum": "materializers.stdlib",
    "array:array": "materializers.stdlib",
    "pydantic.main:BaseModel": "materializers.pydantic",
    "PIL.Image:Image": "materializers.images",
    "matplotlib.figure:Figure": "materializers.figures",
    "scipy.sparse._base:_spbase": "materializers.sparse",
    "sklearn.base:BaseEstimator": "materializers.sklearn",
    "torch:Tensor": "materializers.torch",
    "torch.nn.modules.module:Module": "materializers.torch",
    "pandas:DataFrame": "materializers.pandas",
    "pandas:Series": "materializers.pandas",
    "pandas:Index": "materializers.pandas",
    "polars.dataframe.frame:DataFrame": "materializers.polars",
    "pyarrow.lib:Table": "materializers.arrow",
    "pyarrow.lib:RecordBatch": "materializers.arrow",
}
# offered for a type no class of whose MRO is registered: dataclasses share no base
_DATACLASS = "materializers.stdlib:DataclassMaterializer"
# Held while a lazy materializer module is imported: another thread must not see
# the module in sys.modules before its classes have registered.
_lazy_lock = threading.Lock()
_loaded: set[str] = set()  # lazy modules fully imported
# identities untrusted artifacts may name even when nothing registered them
_allowed: set[str] = set()
ALLOW_ENV = "ARTLEDGER_ALLOW_CLASSES"
# the label of the untrusted artifact being loaded in this context, if any
_untrusted: ContextVar[str | None] = ContextVar("artledger_untrusted", default=None)


def identity(cls: type) -> str:
    """The ``"module:QualName"`` name of a class, as stored in events."""
    return f"{cls.__module__}:{cls.__qualname__}"


def topic_of(data_type: type) -> str:
    """The ``"module:QualName"`` topic of a data type (``builtins:int``,
    ``numpy:ndarray``), the form :func:`import_topic` reads back."""
    topic = identity(data_type)
    _seen_types[topic] = data_type
    return topic


def _builtin(name: str) -> type[BaseMaterializer]:
    """The class ``name`` ("module:QualName") of this package, imported on first use."""
    module, _, qualname = name.partition(":")
    cls: type[BaseMaterializer] = getattr(importlib.import_module(module), qualname)
    return cls


def _is_builtin(cls: type) -> bool:
    module = cls.__module__
    return module == _BUILTIN_PACKAGE or module.startswith(_BUILTIN_PACKAGE + ".")


def _record(cls: type[BaseMaterializer], *, explicit: bool) -> None:
    for data_type in cls.ASSOCIATED_TYPES:
        if not isinstance(data_type, type):
            raise MaterializerError(
                f"{identity(cls)}.ASSOCIATED_TYPES holds {data_type!r}, which is not a type. "
                "List classes only, e.g. ASSOCIATED_TYPES = (MyModel,)."
            )
    _known[identity(cls)] = cls
    for data_type in cls.ASSOCIATED_TYPES:
        current = _by_type.get(data_type)
        if current is None or explicit or (_is_builtin(current) and not _is_builtin(cls)):
            _by_type[data_type] = cls


def _register_subclass(cls: type[BaseMaterializer]) -> None:
    """Called by ``BaseMaterializer.__init_subclass__``: automatic registration."""
    if cls.__dict__.get("SKIP_REGISTRATION", False):
        _known[identity(cls)] = cls
        return
    _record(cls, explicit=False)


@overload
def register(cls: M, *, aliases: Sequence[str] = ()) -> M: ...
@overload
def register(cls: None = None, *, aliases: Sequence[str] = ()) -> Callable[[M], M]: ...
def register(cls: M | None = None, *, aliases: Sequence[str] = ()) -> M | Callable[[M], M]:
    """Make ``cls`` the materializer of each of its ``ASSOCIATED_TYPES``.

    Usable as ``@register``, ``@register(aliases=("old.module:OldName",))`` or
    ``register(cls)``. Idempotent. An explicit registration takes the types
    over from any earlier one (built-in or not). ``aliases`` are the class's
    former identities, so artifacts written under an old name still load.
    """

    def apply(target: M) -> M:
        if not (isinstance(target, type) and issubclass(target, _builtin(_BASE))):
            raise MaterializerError(
                f"register() takes a BaseMaterializer subclass, got {target!r}. "
                "Subclass materializers.BaseMaterializer and set ASSOCIATED_TYPES."
            )
        _record(target, explicit=True)
        for old in aliases:
            register_alias(old, target)
        return target

    if cls is None:
        return apply
    return apply(cls)


def register_alias(old_identity: str, new: type | str) -> None:
    """Let ``old_identity`` (a class's former ``"module:QualName"``) resolve to
    ``new`` (a class or its identity). Works for materializers and data types."""
    _check_form(old_identity)
    target = new if isinstance(new, str) else identity(new)
    if not isinstance(new, str):
        _seen_types.setdefault(target, new)
    _aliases[old_identity] = target


def materializer_for(data_type: type) -> type[BaseMaterializer]:
    """The materializer that saves and loads ``data_type`` (see module docs).

    Falls back to the cloudpickle materializer with a ``UserWarning`` naming the
    type and how to register a proper one.
    """
    return _materializer_for(data_type, stacklevel=3)


def find(data_type: type) -> type[BaseMaterializer] | None:
    """What :func:`materializer_for` returns, or None where it would fall back to
    cloudpickle (no warning)."""
    mro = getattr(data_type, "__mro__", None)
    if mro is None:
        raise MaterializerError(f"materializer_for() takes a type, got {data_type!r}.")
    for klass in mro:
        module = _lazy.get(identity(klass))
        if module is not None and module not in _loaded:
            with _lazy_lock:
                importlib.import_module(module)
                _loaded.add(module)
    for klass in mro:
        cls = _by_type.get(klass)
        if cls is not None and cls.can_handle_type(data_type):
            return cls
    if hasattr(data_type, "__dataclass_fields__") and _builtin(_DATACLASS).can_handle_type(
        data_type
    ):
        return _builtin(_DATACLASS)
    return None


def fallback() -> type[BaseMaterializer]:
    """The cloudpickle materializer, used for types nothing else handles."""
    return _builtin(_FALLBACK)


def fallback_warning(data_type: type) -> str:
    """The warning given when ``data_type`` falls back to cloudpickle."""
    name = data_type.__qualname__
    return (
        f"No materializer for type `{name}` ({identity(data_type)}); saving it with "
        "cloudpickle, which only loads under the same Python and library versions and "
        "runs code when loaded. Register one with `@register` (a BaseMaterializer "
        f"subclass with ASSOCIATED_TYPES = ({name},)) or pass `output_materializers=`."
    )


def _materializer_for(data_type: type, stacklevel: int) -> type[BaseMaterializer]:
    cls = find(data_type)
    if cls is not None:
        return cls
    warnings.warn(fallback_warning(data_type), UserWarning, stacklevel=stacklevel)
    return _builtin(_FALLBACK)


# A torch state_dict is an OrderedDict of tensors: the value, not its type, says so.
_STATE_DICT = "materializers.torch:StateDictMaterializer"


def _is_state_dict(obj: Any) -> bool:
    """An ``OrderedDict`` with only ``str`` keys and plain ``torch.Tensor`` values
    (torch is never imported here: without it in ``sys.modules`` there are no tensors)."""
    torch = sys.modules.get("torch")
    tensor = getattr(torch, "Tensor", None)
    if tensor is None or type(obj) is not OrderedDict or not obj:
        return False
    return all(type(k) is str and type(v) is tensor for k, v in obj.items())


def materializer_for_value(obj: Any) -> type[BaseMaterializer]:
    """The materializer that saves ``obj``: :func:`materializer_for` of its type,
    except that an ``OrderedDict`` holding only tensors (``module.state_dict()``)
    goes to the torch materializer, unless a user materializer is registered
    for ``OrderedDict``. Every other ``OrderedDict`` is left to
    :func:`materializer_for` (the cloudpickle fallback, with its warning)."""
    cls = find_for_value(obj)
    if cls is not None:
        return cls
    return _materializer_for(type(obj), stacklevel=3)


def find_for_value(obj: Any) -> type[BaseMaterializer] | None:
    """What :func:`materializer_for_value` returns, or None where it would fall
    back to cloudpickle (no warning)."""
    current = _by_type.get(OrderedDict)
    if (current is None or _is_builtin(current)) and _is_state_dict(obj):
        with _lazy_lock:
            cls = _builtin(_STATE_DICT)
            _loaded.add(_STATE_DICT.partition(":")[0])
        return cls
    return find(type(obj))


def registered() -> dict[type, type[BaseMaterializer]]:
    """A snapshot of the exact-type registrations (lazy ones appear once loaded)."""
    return dict(_by_type)


def _check_form(name: str) -> None:
    module, sep, qualname = name.partition(":")
    if not (sep and module and qualname):
        raise MaterializerError(
            f"`{name}` is not a class identity; expected the form 'package.module:QualName'."
        )


def _follow_aliases(name: str) -> str:
    seen = {name}
    while name in _aliases:
        name = _aliases[name]
        if name in seen:
            raise MaterializerError(f"Aliases for `{name}` form a cycle; fix register_alias().")
        seen.add(name)
    return name


def allow(*identities: str) -> None:
    """Let untrusted (imported) artifacts name these classes (``"module:QualName"``,
    materializers or data types) even though nothing in this process registered
    them; their modules are then imported on load like any trusted artifact's.
    Only allow code you trust: importing a module runs it."""
    for name in identities:
        _check_form(name)
    _allowed.update(identities)


def allowed() -> set[str]:
    """Every identity on the allow-list (:func:`allow` and ``$ARTLEDGER_ALLOW_CLASSES``)."""
    env = os.environ.get(ALLOW_ENV, "").replace(",", " ").split()
    return _allowed | set(env)


@contextmanager
def untrusted(label: str) -> Iterator[None]:
    """Inside the block, resolve classes for the untrusted artifact ``label``:
    nothing is imported that is not already known or allowed (see module docs)."""
    token = _untrusted.set(label)
    try:
        yield
    finally:
        _untrusted.reset(token)


def _registered_type(target: str) -> type | None:
    for data_type in _by_type:
        if identity(data_type) == target:
            return data_type
    return None


def _without_import(target: str, what: str) -> Any:
    """``target`` if this process knows it already (no module is imported, no
    module ``__getattr__`` runs), else None."""
    module_name, _, qualname = target.partition(":")
    own = _lazy.get(target) or (module_name if module_name in _lazy.values() else None)
    if own is not None and own not in sys.modules:
        importlib.import_module(own)  # one of this package's own modules
        if target in _known:
            return _known[target]
    if what == "materializer":
        return None
    found = _registered_type(target)
    if found is not None:
        return found
    obj: Any = sys.modules.get(module_name)
    if obj is None:
        return None
    try:
        for part in qualname.split("."):
            obj = inspect.getattr_static(obj, part)
    except AttributeError:
        return None
    if isinstance(obj, type) and any(issubclass(obj, t) for t in _by_type):
        return obj
    return None


def _import(name: str, what: str) -> Any:
    _check_form(name)
    target = _follow_aliases(name)
    if target in _known:
        return _known[target]
    if target in _seen_types:
        return _seen_types[target]
    label = _untrusted.get()
    if label is not None and not {name, target} & allowed():
        found = _without_import(target, what)
        if found is None:
            raise MaterializerError(
                f"Refusing to import {what} `{target}` named by the untrusted {label}: "
                "imported artifacts may only name classes this process already knows "
                "(registered materializers and their types), because importing a module "
                "runs its code. If you trust it, import the module that defines it before "
                f"loading, or allow it: materializers.registry.allow('{target}') (or "
                f"{ALLOW_ENV}='{target}')."
            )
        return found
    module_name, _, qualname = target.partition(":")
    via = f" (alias of `{name}`)" if target != name else ""
    fix = (
        f"Make sure the module `{module_name}` is importable (installed, on sys.path) and "
        f"defines `{qualname}` at module level, or, if it was renamed, call "
        f"materializers.register_alias('{target}', NewClass)."
    )
    if "<locals>" in qualname:
        raise MaterializerError(
            f"Cannot import {what} `{target}`{via}: it was defined inside a function. "
            f"Define it at module level. {fix}"
        )
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise MaterializerError(f"Cannot import {what} `{target}`{via}: {exc}. {fix}") from exc
    try:
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except AttributeError as exc:
        raise MaterializerError(
            f"Cannot find {what} `{target}`{via}: module `{module_name}` has no `{qualname}`. {fix}"
        ) from exc
    if not isinstance(obj, type):
        raise MaterializerError(f"`{target}`{via} is {obj!r}, not a class. {fix}")
    return obj


def resolve(materializer_identity: str) -> type[BaseMaterializer]:
    """The materializer class named ``materializer_identity`` ("module:QualName"),
    importing its module and following aliases. Raises :class:`MaterializerError`
    naming the identity and the fix when it cannot."""
    cls: type = _import(materializer_identity, "materializer")
    if not issubclass(cls, _builtin(_BASE)):
        raise MaterializerError(
            f"`{materializer_identity}` is not a BaseMaterializer subclass; "
            "pass the identity of a materializer class."
        )
    return cls


def import_topic(topic: str) -> type:
    """The data type named ``topic`` (``"builtins:int"``, ``"numpy:ndarray"``),
    importing its module and following aliases."""
    cls: type = _import(topic, "data type")
    return cls


@contextmanager
def temporary_registrations() -> Iterator[None]:
    """Undo, on exit, every registration, alias and :func:`allow` made inside the block (for
    tests and experiments). Built-in materializers loaded lazily inside the
    block stay registered."""
    by_type, known, aliases = dict(_by_type), dict(_known), dict(_aliases)
    allow_list = set(_allowed)
    try:
        yield
    finally:
        _allowed.clear()
        _allowed.update(allow_list)
        lazily_loaded = {t: c for t, c in _by_type.items() if t not in by_type and _is_builtin(c)}
        _by_type.clear()
        _by_type.update(by_type)
        _by_type.update(lazily_loaded)
        _known.clear()
        _known.update(known)
        _known.update({identity(c): c for c in lazily_loaded.values()})
        _aliases.clear()
        _aliases.update(aliases)
