"""A step's outputs: their names, their :class:`ArtifactConfig`, and the type check.

The return annotation declares them (:func:`output_spec`): one ``output``; an
``Annotated[T, "name"]`` names it and its artifact; ``Annotated[T,
ArtifactConfig(...)]`` configures how it is stored; a ``Tuple[...]`` gives one
output per element, named and configured the same way. :func:`check_output`
compares a returned value with its annotation before anything is stored.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

from engine.errors import InvalidArgumentError, PipelineError

__all__ = ["ArtifactConfig", "OutputSpec", "check_output", "output_spec"]


class ArtifactConfig:
    """How a step output is stored, given in the return annotation:
    ``Annotated[T, ArtifactConfig(name="model", version=None, tags=["prod"],
    artifact_type="model", run_metadata={"lr": 0.1})]``.

    ``name`` is the artifact's name (and the output key, unless an
    ``Annotated`` string names the output); ``version`` a fixed version (an int
    or a string label; None numbers it); ``tags`` and ``run_metadata`` are
    recorded with each version written; ``artifact_type`` replaces the
    materializer's ``ASSOCIATED_ARTIFACT_TYPE``.
    """

    __slots__ = ("artifact_type", "name", "run_metadata", "tags", "version")

    def __init__(
        self,
        name: str | None = None,
        *,
        version: int | str | None = None,
        tags: Iterable[str] = (),
        artifact_type: str | None = None,
        run_metadata: Mapping[str, Any] | None = None,
    ) -> None:
        if name is not None and (not isinstance(name, str) or not name or "\x00" in name):
            raise InvalidArgumentError(f"ArtifactConfig name must be a non-empty str, not {name!r}")
        if version is not None and (
            isinstance(version, bool) or not isinstance(version, int | str)
        ):
            raise InvalidArgumentError(
                f"ArtifactConfig version must be an int or a str, not {version!r}"
            )
        if isinstance(tags, str):
            tags = [tags]
        tag_list = list(tags)
        if not all(isinstance(t, str) and t and "\x00" not in t for t in tag_list):
            raise InvalidArgumentError(f"ArtifactConfig tags must be non-empty strs: {tag_list!r}")
        if artifact_type is not None and (not isinstance(artifact_type, str) or not artifact_type):
            raise InvalidArgumentError(
                f"ArtifactConfig artifact_type must be a non-empty str, not {artifact_type!r}"
            )
        if run_metadata is not None and not isinstance(run_metadata, Mapping):
            raise InvalidArgumentError("ArtifactConfig run_metadata must be a mapping")
        self.name = name
        self.version = version
        self.tags = tuple(tag_list)
        self.artifact_type = artifact_type
        self.run_metadata = dict(run_metadata or {})

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ArtifactConfig) and all(
            getattr(self, a) == getattr(other, a) for a in self.__slots__
        )

    def __hash__(self) -> int:
        return hash((self.name, self.version, self.tags, self.artifact_type))

    def __repr__(self) -> str:
        fields = [f"{a}={getattr(self, a)!r}" for a in self.__slots__ if getattr(self, a)]
        return f"ArtifactConfig({', '.join(sorted(fields))})"


class OutputSpec(NamedTuple):
    """A step's declared outputs, read from its return annotation.

    ``names`` are the output keys in order; ``types`` the annotated type of
    each (``None`` when unknown); ``multiple`` whether the function returns a
    tuple of outputs; ``artifact_names`` the explicit artifact name of an
    output (``Annotated[T, "name"]`` or ``ArtifactConfig(name=)``);
    ``configs`` the :class:`ArtifactConfig` of an output.
    """

    names: tuple[str, ...]
    types: tuple[Any, ...]
    multiple: bool
    artifact_names: Mapping[str, str] = {}
    configs: Mapping[str, ArtifactConfig] = {}


def _annotated(tp: Any) -> tuple[Any, str | None, ArtifactConfig | None]:
    """``(T, name, config)`` for ``Annotated[T, "name", ArtifactConfig(...)]``."""
    if typing.get_origin(tp) is typing.Annotated:
        base, *meta = typing.get_args(tp)
        names = [m for m in meta if isinstance(m, str)]
        configs = [m for m in meta if isinstance(m, ArtifactConfig)]
        return base, (names[0] if names else None), (configs[0] if configs else None)
    return tp, None, None


class _Output(NamedTuple):
    key: str
    type: Any
    artifact: str | None
    config: ArtifactConfig | None


def _output(tp: Any, default: str) -> _Output:
    base, name, config = _annotated(tp)
    art = (config.name if config else None) or name
    return _Output(name or art or default, base, art, config)


def output_spec(func: Callable[..., Any], localns: Mapping[str, Any] | None = None) -> OutputSpec:
    """Outputs from the return annotation (see the module docstring); ``localns``
    resolves string annotations naming locals of the scope the step is defined in."""
    try:
        hints = typing.get_type_hints(func, localns=dict(localns or {}), include_extras=True)
    except Exception:  # unresolvable forward references: fall back to the raw annotation
        hints = dict(getattr(func, "__annotations__", {}))
    if "return" not in hints:
        return OutputSpec(("output",), (None,), multiple=False)
    ret = hints["return"]
    if ret is None or ret is type(None):
        return OutputSpec((), (), multiple=False)
    single = _output(ret, "output")
    origin = typing.get_origin(single.type)
    args = typing.get_args(single.type)
    tuple_outputs = origin is tuple and args and args[-1] is not Ellipsis and args != ((),)
    if single.artifact is None and single.config is None and tuple_outputs:
        outs = [_output(arg, f"output_{i}") for i, arg in enumerate(args)]
        multiple = True
    else:
        outs, multiple = [single], False
    names = [o.key for o in outs]
    if len(set(names)) != len(names):
        raise PipelineError(
            f"step {func.__qualname__}: output names {names} repeat; give each "
            "Annotated[T, 'name'] a distinct name"
        )
    return OutputSpec(
        tuple(names),
        tuple(o.type for o in outs),
        multiple=multiple,
        artifact_names={o.key: o.artifact for o in outs if o.artifact is not None},
        configs={o.key: o.config for o in outs if o.config is not None},
    )


# --------------------------------------------------------------------------- type check

_UNION_TYPES: tuple[Any, ...] = (typing.Union, types.UnionType)
_NUMBERS = {float: (int, float), complex: (int, float, complex)}


def _scalar(value: Any) -> Any:
    """A numpy scalar as the Python scalar it holds (``np.int64(3)`` -> ``3``)."""
    item = getattr(value, "item", None)
    if callable(item) and type(value).__module__ == "numpy" and getattr(value, "ndim", 1) == 0:
        return item()
    return value


def accepts(value: Any, tp: Any) -> bool:
    """Whether ``value`` fits annotation ``tp``; only what can be checked at run
    time is: a generic by its origin (``list[int]`` -> ``list``), a union by any
    member; ``Any``, type variables, protocols, literals and unresolved forward
    references accept everything."""
    if tp is None or tp is typing.Any or tp is object or isinstance(tp, str | typing.TypeVar):
        return True
    if tp is type(None):
        return value is None
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return accepts(value, typing.get_args(tp)[0])
    if origin in _UNION_TYPES:
        return any(accepts(value, arg) for arg in typing.get_args(tp))
    supertype = getattr(tp, "__supertype__", None)  # typing.NewType
    if supertype is not None:
        return accepts(value, supertype)
    if origin is not None:
        tp = origin
    if not isinstance(tp, type):
        return True  # Literal, Callable forms, ... : not checked
    if getattr(tp, "_is_protocol", False) and not getattr(tp, "_is_runtime_protocol", False):
        return True
    if tp in (int, float, complex, bool):
        value = _scalar(value)
        if tp in _NUMBERS and not isinstance(value, bool):
            return isinstance(value, _NUMBERS[tp])
    try:
        return isinstance(value, tp)
    except TypeError:  # a class whose isinstance check cannot run
        return True


def _show(tp: Any) -> str:
    if isinstance(tp, type) and typing.get_origin(tp) is None:
        if tp.__module__ == "builtins":
            return tp.__qualname__
        return f"{tp.__module__}.{tp.__qualname__}"
    return repr(tp).replace("typing.", "")


def check_output(step: str, output: str, value: Any, tp: Any) -> None:
    """Raise ``PipelineError`` naming the step, the output and both types when
    ``value`` does not fit the annotation ``tp`` (see :func:`accepts`)."""
    if accepts(value, tp):
        return
    raise PipelineError(
        f"step {step}: output {output!r} is annotated {_show(tp)} but the step returned "
        f"{_show(type(value))}; return a {_show(tp)} or change the return annotation"
    )
