"""The step context: what a running step can ask about itself and record.

``engine.get_step_context()`` inside a step's function (while a pipeline runs
it) returns the :class:`StepContext`: the step's name, invocation, step run
id, run id and pipeline name, and methods that record metadata on the step
run and metadata and tags on its outputs. What is recorded is buffered and
committed with the step's outputs, in its ``step.completed`` and
``artifact.written`` events (a failing step's metadata goes into
``step.failed``).

While a step runs, every artifact version it loads from the run's store
(``engine.load_artifact``, ``store.load_artifact``, ``ArtifactVersion.load``,
in the step's own thread) is recorded as an input of the step run: lineage
shows it, and a later cache hit is refused when the load would now give
other content (see :func:`note_load` and ``engine.pipelines.cache``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from engine.errors import ArtledgerError, InvalidArgumentError, PipelineError
from engine.ledger.artifacts import check_tags, plain
from engine.query import models

if TYPE_CHECKING:
    from engine.pipelines.definition import Pipeline
    from engine.store import Store

__all__ = ["StepContext", "get_step_context"]

_current: ContextVar[StepContext | None] = ContextVar("artledger_step", default=None)


class StepContext:
    """The running step, as seen from inside its function (``engine.get_step_context()``):
    ``step_name``, ``invocation``, ``step_run_id``, ``run_id``, ``pipeline`` (the
    ``@pipeline``), ``pipeline_name``, ``output_names``, ``store``. The run's own
    events are committed with the step's outputs or at the end of the run: while
    the step runs, ``store.get_run(run_id)`` may not find the run yet."""

    def __init__(
        self,
        store: Store,
        *,
        pipeline: Pipeline,
        run_id: str,
        step_name: str,
        invocation: str,
        step_run_id: str,
        output_names: tuple[str, ...],
        inputs: Mapping[str, str] | None = None,
    ) -> None:
        self.store = store
        self.pipeline = pipeline
        self.pipeline_name = pipeline.name
        self.run_id = run_id
        self.step_name = step_name
        self.invocation = invocation
        self.step_run_id = step_run_id
        self.output_names = output_names
        self.step_metadata: dict[str, Any] = {}
        self.output_metadata: dict[str, dict[str, Any]] = {}
        self.output_tags: dict[str, set[str]] = {}
        # input key -> (artifact id, {"latest": bool, "tags": [...]}) of loads made by the step
        self.loaded: dict[str, tuple[str, dict[str, Any]]] = {}
        self._inputs = dict(inputs or {})  # declared inputs: name -> artifact id
        self._input_ids = set(self._inputs.values())

    def _output(self, output: str | None, what: str) -> str:
        if output is not None:
            if output not in self.output_names:
                raise PipelineError(
                    f"step {self.step_name} has no output {output!r}; outputs: "
                    f"{', '.join(self.output_names) or '(none)'}"
                )
            return output
        if len(self.output_names) != 1:
            raise PipelineError(
                f"step {self.step_name} has {len(self.output_names)} outputs; {what} needs "
                "output=NAME to say which"
            )
        return self.output_names[0]

    def log_metadata(
        self,
        metadata: Mapping[str, Any],
        *,
        output: str | None = None,
        infer_artifact: bool = False,
    ) -> None:
        """Record ``metadata`` on this step run (``step_run.metadata``), or with
        ``infer_artifact=True`` / ``output=NAME`` on the artifact version that
        output becomes (its ``metadata``); later keys overwrite earlier ones."""
        if not isinstance(metadata, Mapping):
            raise InvalidArgumentError("metadata must be a mapping of str to plain values")
        values = plain(dict(metadata), where="metadata")
        if output is None and not infer_artifact:
            self.step_metadata.update(values)
            return
        key = self._output(output, "log_metadata(infer_artifact=True)")
        self.output_metadata.setdefault(key, {}).update(values)

    def add_tags(self, tags: Iterable[str] | str, *, output: str | None = None) -> None:
        """Tag the artifact version that ``output`` (the only output, by default) becomes."""
        key = self._output(output, "add_tags()")
        self.output_tags.setdefault(key, set()).update(check_tags(tags))

    def note_load(self, art: models.ArtifactVersion) -> None:
        """Record a load of ``art`` by the step as one of its inputs (not its declared
        inputs, nor artifacts of another store)."""
        if art.id in self._input_ids or any(aid == art.id for aid, _ in self.loaded.values()):
            return
        try:
            live = self.store.get_artifact_by_id(art.id)
            newest = self.store.get_artifact(art.name)
        except ArtledgerError:
            return
        if live.content_hash != art.content_hash:
            return
        key = art.name
        if key in self._inputs or key in self.loaded:
            key = f"{art.name}:{art.version}"
        self.loaded[key] = (art.id, {"latest": newest.id == art.id, "tags": live.tags})

    def __repr__(self) -> str:
        return f"<StepContext {self.pipeline_name}.{self.invocation} run={self.run_id}>"


def get_step_context() -> StepContext:
    """The context of the step running in this thread (``PipelineError`` outside one)."""
    ctx = _current.get()
    if ctx is None:
        raise PipelineError(
            "get_step_context() works only inside a step while a pipeline runs it "
            "(a step called outside a pipeline is a plain function)"
        )
    return ctx


def running_store() -> Store | None:
    """The store of the step running in this thread, if one is."""
    ctx = _current.get()
    return None if ctx is None else ctx.store


@contextlib.contextmanager
def running(ctx: StepContext) -> Iterator[StepContext]:
    """Make ``ctx`` the current step context inside the block."""
    token = _current.set(ctx)
    try:
        yield ctx
    finally:
        _current.reset(token)


def _on_load(art: models.ArtifactVersion) -> None:
    ctx = _current.get()
    if ctx is not None:
        ctx.note_load(art)


models.LOAD_HOOKS.append(_on_load)
