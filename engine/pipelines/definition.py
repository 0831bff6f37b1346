"""``@step`` and ``@pipeline``: defining pipelines and tracing them into a DAG.

Calling a pipeline first *traces* its function: inside the trace, calling a
step records an :class:`Invocation` and returns output handles instead of
running anything, so the whole DAG is known (and every parameter validated)
before the first step runs. The runner (:mod:`engine.pipelines.runner`) then executes
the invocations in the order they were traced, which is a topological order:
a handle can only come from an earlier invocation.

Outside a pipeline, a step is the plain function: ``load(n=3)`` just runs it.

``import engine`` imports this module (it is light: no ``inspect`` until a
step is defined) for ``engine.step`` and ``engine.pipeline``.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar, overload

from engine.errors import InvalidArgumentError, PipelineError
from engine.pipelines.external import ExternalArtifact, as_external
from engine.pipelines.outputs import ArtifactConfig, OutputSpec, output_spec

if TYPE_CHECKING:
    import datetime as _dt
    import inspect

    from engine.query.models import Run

__all__ = [
    "ArtifactConfig",
    "Dag",
    "ExternalArtifact",
    "Invocation",
    "OutputHandle",
    "OutputSpec",
    "Pipeline",
    "Step",
    "StepOutputs",
    "pipeline",
    "step",
]

F = TypeVar("F", bound=Callable[..., Any])
RUN_OPTIONS = frozenset({"enable_cache"})
"""Keywords a pipeline call takes for the run itself (not passed to the function)."""

_tracing = threading.local()


def _check_label(kind: str, name: Any) -> str:
    if not isinstance(name, str) or not name or any(c in name for c in "\x00\x1f"):
        raise PipelineError(
            f"{kind} name must be a non-empty string without NUL or \\x1f, not {name!r}"
        )
    return name


# --------------------------------------------------------------------------- outputs


def _no_active_store() -> Any:
    raise PipelineError("no active store: import engine (engine.api sets the active store)")


# Calling a pipeline runs it on the active store. engine.api, a layer above,
# installs its ``active_store`` here when it is imported (engine/__init__ does).
_active_store: list[Callable[[], Any]] = [_no_active_store]


def set_active_store(fn: Callable[[], Any]) -> None:
    """Install the function that gives the store a called pipeline runs on."""
    _active_store[0] = fn


# --------------------------------------------------------------------------- handles


class OutputHandle:
    """A step output inside a pipeline trace; pass it to another step as an input."""

    __slots__ = ("dag", "invocation", "output")

    def __init__(self, dag: Dag, invocation: str, output: str) -> None:
        self.dag = dag
        self.invocation = invocation
        self.output = output

    def __bool__(self) -> bool:
        raise PipelineError(
            f"output {self.invocation}.{self.output} has no value while the pipeline is "
            "traced; branch on parameters, or move the logic into a step"
        )

    def __repr__(self) -> str:
        return f"<OutputHandle {self.invocation}.{self.output}>"


Input = OutputHandle | ExternalArtifact
"""A step input: another step's output, or a stored artifact version."""


class StepOutputs(tuple[OutputHandle, ...]):
    """The handles of a step with several outputs: unpack it, or index by position
    or by output name (``outs["model"]``)."""

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            for h in self:
                if h.output == key:
                    return h
            raise KeyError(f"no output {key!r}; outputs: {', '.join(h.output for h in self)}")
        return super().__getitem__(key)


class Invocation:
    """One call of a step in a traced pipeline: its id (``train``, ``train_2``),
    the step, its parameters and its inputs (output handles, stored artifacts)."""

    __slots__ = ("id", "inputs", "parameters", "step")

    def __init__(
        self, id: str, step: Step, parameters: dict[str, Any], inputs: dict[str, Input]
    ) -> None:
        self.id = id
        self.step = step
        self.parameters = parameters
        self.inputs = inputs

    def __repr__(self) -> str:
        return f"<Invocation {self.id}>"


class Dag:
    """A traced pipeline: invocations in call order (a topological order)."""

    def __init__(self, pipeline: Pipeline, params: dict[str, Any]) -> None:
        self.pipeline = pipeline
        self.params = params
        self.invocations: dict[str, Invocation] = {}
        self._counts: dict[str, int] = {}

    def add(self, step: Step, parameters: dict[str, Any], inputs: dict[str, Input]) -> str:
        n = self._counts.get(step.name, 0) + 1
        self._counts[step.name] = n
        inv = step.name if n == 1 else f"{step.name}_{n}"
        while inv in self.invocations:  # a step literally named like "load_2"
            n += 1
            inv = f"{step.name}_{n}"
        self.invocations[inv] = Invocation(inv, step, parameters, inputs)
        return inv

    def upstream(self, inv: Invocation) -> set[str]:
        return {h.invocation for h in inv.inputs.values() if isinstance(h, OutputHandle)}


# --------------------------------------------------------------------------- step


class Step:
    """A step: a function whose outputs become artifact versions, cached by content.

    Options: ``enable_cache`` (None: the pipeline decides), ``cache_version``
    (a salt: change it to invalidate the cache by hand), ``cache_expires_after``
    (a ``timedelta``; ``timedelta(0)`` means always expired),
    ``output_materializers`` (a materializer class for every output, or a dict
    output name -> class), ``name`` (default: the function's name).
    """

    def __init__(
        self,
        func: Callable[..., Any],
        *,
        enable_cache: bool | None = None,
        cache_version: str | int | None = None,
        cache_expires_after: _dt.timedelta | None = None,
        output_materializers: type | Mapping[str, type] | None = None,
        name: str | None = None,
    ) -> None:
        if not callable(func):
            raise PipelineError(f"@step decorates a function, not {func!r}")
        self.func = func
        self.name = _check_label("step", name or getattr(func, "__name__", None))
        if enable_cache is not None and not isinstance(enable_cache, bool):
            raise InvalidArgumentError(f"enable_cache must be a bool or None, not {enable_cache!r}")
        self.enable_cache = enable_cache
        if cache_version is not None and not isinstance(cache_version, (str, int)):
            raise InvalidArgumentError(
                f"cache_version must be a str or an int, not {cache_version!r}"
            )
        self.cache_version = cache_version
        import datetime as _dt

        if cache_expires_after is not None and (
            not isinstance(cache_expires_after, _dt.timedelta)
            or cache_expires_after < _dt.timedelta(0)
        ):
            raise InvalidArgumentError(
                f"cache_expires_after must be a non-negative datetime.timedelta, "
                f"not {cache_expires_after!r}"
            )
        self.cache_expires_after = cache_expires_after
        import inspect

        self.signature = inspect.signature(func)
        self.outputs = output_spec(func, _defining_locals())
        self.output_materializers = self._check_materializers(output_materializers)
        functools.update_wrapper(self, func)

    def _check_materializers(self, given: type | Mapping[str, type] | None) -> dict[str, type]:
        if given is None:
            return {}
        if isinstance(given, type):
            return dict.fromkeys(self.outputs.names, given)
        if not isinstance(given, Mapping):
            raise InvalidArgumentError(
                f"output_materializers of step {self.name} must be a materializer class or a "
                f"dict output name -> class, not {given!r}"
            )
        unknown = set(given) - set(self.outputs.names)
        if unknown:
            raise PipelineError(
                f"output_materializers of step {self.name} names unknown outputs "
                f"{sorted(unknown)}; outputs: {list(self.outputs.names)}"
            )
        for cls in given.values():
            if not isinstance(cls, type):
                raise InvalidArgumentError(f"output_materializers values must be classes: {cls!r}")
        return dict(given)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        dag: Dag | None = getattr(_tracing, "dag", None)
        if dag is None:
            return self.func(*args, **kwargs)
        return self._trace(dag, args, kwargs)

    def _trace(self, dag: Dag, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        import inspect

        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as e:
            raise PipelineError(f"step {self.name} called with the wrong arguments: {e}") from None
        bound.apply_defaults()
        parameters: dict[str, Any] = {}
        inputs: dict[str, Input] = {}
        for pname, value in bound.arguments.items():
            kind = self.signature.parameters[pname].kind
            ext = as_external(value)
            if ext is not None:
                if kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
                    raise PipelineError(f"step {self.name}: pass artifacts as named arguments")
                inputs[pname] = ext
            elif isinstance(value, OutputHandle):
                if kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
                    raise PipelineError(f"step {self.name}: pass outputs as named arguments")
                if value.dag is not dag:
                    raise PipelineError(
                        f"step {self.name}: argument {pname} is an output of another pipeline "
                        "trace; outputs can only be passed within the pipeline that made them"
                    )
                inputs[pname] = value
            else:
                _reject_nested_handles(self.name, pname, value)
                if kind == inspect.Parameter.VAR_KEYWORD:
                    parameters.update(value)
                else:
                    parameters[pname] = value
        inv = dag.add(self, parameters, inputs)
        handles = [OutputHandle(dag, inv, o) for o in self.outputs.names]
        if not handles:
            return None
        if not self.outputs.multiple:
            return handles[0]
        return StepOutputs(handles)

    def __repr__(self) -> str:
        return f"<Step {self.name}>"


def _defining_locals() -> dict[str, Any] | None:
    """The local names of the scope a step is defined in (a function's, for a step
    defined inside one), so ``from __future__ import annotations`` strings resolve."""
    import sys

    frame = sys._getframe(1)
    while frame is not None and frame.f_globals.get("__name__") == __name__:
        frame = frame.f_back  # type: ignore[assignment]
    if frame is None or frame.f_locals is frame.f_globals:
        return None
    return dict(frame.f_locals)


def _reject_nested_handles(step: str, pname: str, value: Any, depth: int = 0) -> None:
    if depth > 4:
        return
    items: Any = ()
    if isinstance(value, (list, tuple, set, frozenset)):
        items = value
    elif isinstance(value, dict):
        items = value.values()
    for item in items:
        if isinstance(item, OutputHandle) or as_external(item) is not None:
            raise PipelineError(
                f"step {step}: argument {pname} holds an output or an artifact inside a "
                "container; pass each as its own argument (the step receives the loaded value)"
            )
        _reject_nested_handles(step, pname, item, depth + 1)


@overload
def step(func: Callable[..., Any], /) -> Step: ...
@overload
def step(
    func: None = None,
    /,
    *,
    enable_cache: bool | None = None,
    cache_version: str | int | None = None,
    cache_expires_after: _dt.timedelta | None = None,
    output_materializers: type | Mapping[str, type] | None = None,
    name: str | None = None,
) -> Callable[[Callable[..., Any]], Step]: ...
def step(
    func: Callable[..., Any] | None = None,
    /,
    *,
    enable_cache: bool | None = None,
    cache_version: str | int | None = None,
    cache_expires_after: _dt.timedelta | None = None,
    output_materializers: type | Mapping[str, type] | None = None,
    name: str | None = None,
) -> Step | Callable[[Callable[..., Any]], Step]:
    """Make a function a pipeline step (``@step`` or ``@step(...)``; see :class:`Step`)."""

    def deco(f: Callable[..., Any]) -> Step:
        return Step(
            f,
            enable_cache=enable_cache,
            cache_version=cache_version,
            cache_expires_after=cache_expires_after,
            output_materializers=output_materializers,
            name=name,
        )

    return deco if func is None else deco(func)


# --------------------------------------------------------------------------- pipeline


class Pipeline:
    """A pipeline: a function that calls steps. Calling it runs it on the active store.

    ``my_pipeline(**params)`` and ``store.run(my_pipeline, **params)`` both take
    the run option ``enable_cache=`` (True/False overrides every step and the
    pipeline for this run); a pipeline therefore cannot have a parameter of
    that name.
    """

    def __init__(
        self, func: Callable[..., Any], *, enable_cache: bool | None = None, name: str | None = None
    ) -> None:
        if not callable(func):
            raise PipelineError(f"@pipeline decorates a function, not {func!r}")
        self.func = func
        self.name = _check_label("pipeline", name or getattr(func, "__name__", None))
        if enable_cache is not None and not isinstance(enable_cache, bool):
            raise InvalidArgumentError(f"enable_cache must be a bool or None, not {enable_cache!r}")
        self.enable_cache = enable_cache
        import inspect

        self.signature: inspect.Signature = inspect.signature(func)
        clash = RUN_OPTIONS & set(self.signature.parameters)
        if clash:
            raise PipelineError(
                f"pipeline {self.name}: parameter name {sorted(clash)[0]!r} is reserved for the "
                "run option; rename the parameter"
            )
        functools.update_wrapper(self, func)

    def bind(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """The pipeline's parameters, defaults applied (``PipelineError`` when they don't fit)."""
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as e:
            raise PipelineError(
                f"pipeline {self.name} called with the wrong arguments: {e}"
            ) from None
        bound.apply_defaults()
        return dict(bound.arguments)

    def trace(self, params: Mapping[str, Any]) -> Dag:
        """Call the pipeline function with steps recording invocations; the DAG."""
        if getattr(_tracing, "dag", None) is not None:
            raise PipelineError(
                f"pipeline {self.name} was called inside another pipeline; call its steps instead"
            )
        dag = Dag(self, dict(params))
        _tracing.dag = dag
        try:
            self.func(**params)
        finally:
            _tracing.dag = None
        return dag

    def __call__(self, *args: Any, enable_cache: bool | None = None, **kwargs: Any) -> Run:
        params = self.bind(args, kwargs)
        run: Run = _active_store[0]().run(self, enable_cache=enable_cache, **params)
        return run

    def __repr__(self) -> str:
        return f"<Pipeline {self.name}>"


@overload
def pipeline(func: Callable[..., Any], /) -> Pipeline: ...
@overload
def pipeline(
    func: None = None, /, *, enable_cache: bool | None = None, name: str | None = None
) -> Callable[[Callable[..., Any]], Pipeline]: ...
def pipeline(
    func: Callable[..., Any] | None = None,
    /,
    *,
    enable_cache: bool | None = None,
    name: str | None = None,
) -> Pipeline | Callable[[Callable[..., Any]], Pipeline]:
    """Make a function a pipeline (``@pipeline`` or ``@pipeline(enable_cache=, name=)``)."""

    def deco(f: Callable[..., Any]) -> Pipeline:
        return Pipeline(f, enable_cache=enable_cache, name=name)

    return deco if func is None else deco(func)
