"""Turning what a step returned into prepared artifact versions.

For each output, in order: its value is checked against the return
annotation (``engine.pipelines.outputs.check_output``); its materializer is
the explicit one (``output_materializers=``), else the one the registry
chooses for the returned value, else cloudpickle with a warning that points
at the step's definition; its name, version, tags, type and metadata come
from the plan, the output's ``ArtifactConfig`` and what the step recorded
through its context.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

from engine.errors import PipelineError
from engine.ledger.artifacts import Prepared, prepare
from engine.pipelines.outputs import check_output

if TYPE_CHECKING:
    from engine.ledger.core import Ledger
    from engine.pipelines.context import StepContext
    from engine.pipelines.definition import Step


def output_values(st: Step, result: Any) -> tuple[Any, ...]:
    """The returned value of each declared output, type-checked."""
    names = st.outputs.names
    if not names:
        return ()
    if st.outputs.multiple:
        if not isinstance(result, (tuple, list)) or len(result) != len(names):
            got = len(result) if isinstance(result, (tuple, list)) else type(result).__name__
            raise PipelineError(
                f"step {st.name} declares {len(names)} outputs ({', '.join(names)}) but "
                f"returned {got}; return a tuple with one value per output"
            )
        values = tuple(result)
    else:
        values = (result,)
    for name, value, tp in zip(names, values, st.outputs.types, strict=True):
        check_output(st.name, name, value, tp)
    return values


def choose_materializer(st: Step, explicit: type | None, value: Any) -> type:
    """The materializer that saves ``value``; a cloudpickle fallback warns at the
    step's definition (file and line of its function)."""
    from materializers import registry

    if explicit is not None:
        return explicit
    cls = registry.find_for_value(value)
    if cls is not None:
        return cls
    warn_at_step(st, registry.fallback_warning(type(value)))
    return registry.fallback()


def warn_at_step(st: Step, message: str) -> None:
    """A ``UserWarning`` about step ``st`` whose file and line are the step's definition."""
    message = f"step {st.name}: {message}"
    code = getattr(st.func, "__code__", None)
    if code is None:
        warnings.warn(message, UserWarning, stacklevel=3)
        return
    module_globals = getattr(st.func, "__globals__", {})
    warnings.warn_explicit(
        message,
        UserWarning,
        code.co_filename,
        code.co_firstlineno,
        module=getattr(st.func, "__module__", None),
        registry=module_globals.setdefault("__warningregistry__", {}),
    )


def prepare_outputs(
    ledger: Ledger,
    st: Step,
    values: tuple[Any, ...],
    classes: list[type],
    artifact_names: dict[str, str],
    ctx: StepContext,
) -> list[Prepared]:
    """Write every output's bytes (released again when one fails)."""
    prepared: list[Prepared] = []
    try:
        for name, value, cls in zip(st.outputs.names, values, classes, strict=True):
            config = st.outputs.configs.get(name)
            tags = set(config.tags if config else ()) | ctx.output_tags.get(name, set())
            metadata = dict(config.run_metadata) if config else {}
            metadata.update(ctx.output_metadata.get(name, {}))
            prepared.append(
                prepare(
                    ledger,
                    value,
                    artifact_names[name],
                    version=config.version if config else None,
                    tags=sorted(tags),
                    metadata=metadata,
                    materializer=cls,
                    producer=ctx.step_run_id,
                    run=ctx.run_id,
                    artifact_type=config.artifact_type if config else None,
                    warn=lambda message: warn_at_step(st, message),
                )
            )
    except BaseException:
        for q in prepared:
            q.session.release()
        raise
    return prepared
