"""The local runner: executes a traced pipeline on a store, step by step.

Order of work for ``store.run(pipeline, **params)``:

1. Trace the pipeline into a DAG and plan every invocation: resolve
   ``enable_cache`` (run > step > pipeline > on), fingerprint the step code
   and encode the parameters. An unencodable parameter raises
   :class:`~engine.errors.UnhashableParameterError` here, before anything is
   recorded (unless caching is off for that step). Stored artifacts passed to
   steps (``engine.external``, ``ArtifactVersion``) are resolved here too.
2. Run the invocations in traced (topological) order. Each one is a cache
   hit (``step.cached``, pointing at the reused artifact versions; no bytes
   move) or runs: ``step.started``, the function (with its
   :class:`~engine.pipelines.context.StepContext` current), then its outputs
   (:mod:`engine.pipelines.saving`) and ``step.completed`` in **one**
   commit, into the run's pending window (:mod:`engine.ledger.window`): the
   window commits durably, in one commit, once the executed steps it holds
   ran longer (summed) than the ledger's budget, about ten of its measured
   durable commits; so a step that ran longer than the budget is durable
   before the next step starts. Later steps of the run see what is pending.
3. ``run.completed`` and whatever is pending commit durably: when
   ``store.run`` returns (or raises), every event of the run is durable.
   ``run.started``, ``step.started`` and ``step.cached`` are deferred: they
   ride along with the next commit, so a fully cached run costs one commit.

A failing step records ``step.failed``, marks every step that has not run
``skipped`` and the run ``failed`` (one durable commit, with the completed
steps still pending), keeps the outputs of the steps that completed (the next
run reuses them), then re-raises the step's own exception. A crash loses at
most the pending window's steps (none of them acknowledged); see
docs/design.md, "Durability that pays for itself".
"""

from __future__ import annotations

import inspect
import secrets
import time
import typing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engine.errors import (
    InvalidArgumentError,
    MaterializerError,
    PipelineError,
    UnhashableParameterError,
)
from engine.events import (
    RUN_COMPLETED,
    RUN_FAILED,
    RUN_STARTED,
    STEP_CACHED,
    STEP_COMPLETED,
    STEP_FAILED,
    STEP_SKIPPED,
    STEP_STARTED,
)
from engine.ledger.artifacts import commit_artifacts
from engine.ledger.core import retry_on_concurrent_gc
from engine.pipelines.cache import lookup_in
from engine.pipelines.cache_key import KeyComponents
from engine.pipelines.context import StepContext, running
from engine.pipelines.definition import Dag, Invocation, OutputHandle, Pipeline
from engine.pipelines.explain import CACHE_DISABLED, miss_reasons
from engine.pipelines.external import ExternalArtifact, as_external
from engine.pipelines.fingerprint import CodeFingerprint, code_fingerprint
from engine.pipelines.saving import choose_materializer, output_values, prepare_outputs
from engine.query.models import ArtifactVersion

if TYPE_CHECKING:
    from engine.query.models import Run
    from engine.store import Store

AUTO_MATERIALIZER = "auto"
"""The key's materializer identity of an output whose type is only known at run time."""


@dataclass
class _Plan:
    inv: Invocation
    caching: bool
    base: KeyComponents | None  # components without inputs; None when not encodable
    materializers: dict[str, type | None]  # explicit override per output
    artifact_names: dict[str, str]
    step_run_id: str | None = None  # set once step.started is queued
    context: StepContext | None = None  # set when the step function is called


def _known_type(tp: Any) -> type | None:
    if tp is None or tp is typing.Any or tp is object:
        return None
    origin = typing.get_origin(tp)
    if origin is not None:
        return origin if isinstance(origin, type) else None  # Union, Literal: not a class
    return tp if isinstance(tp, type) else None


def _output_identity(cls: type | None, tp: Any) -> str:
    """The key's materializer identity of an output: the explicit class, else the one
    registered for the annotated type, else ``auto`` (the registry decides from the
    returned value; a type that would fall back to cloudpickle is ``auto`` too, and
    nothing is warned before a value exists)."""
    from materializers import registry

    if cls is None:
        known = _known_type(tp)
        if known is None:
            return AUTO_MATERIALIZER
        try:
            cls = registry.find(known)
        except MaterializerError:
            cls = None
        if cls is None:
            return AUTO_MATERIALIZER
    return identity_of(cls)


def identity_of(cls: type) -> str:
    """``"module:QualName@VERSION"`` of a materializer class."""
    from materializers import registry

    return f"{registry.identity(cls)}@{int(getattr(cls, 'VERSION', 1))}"


def _caching(run_option: bool | None, inv: Invocation, pipe: Pipeline) -> bool:
    for choice in (run_option, inv.step.enable_cache, pipe.enable_cache):
        if choice is not None:
            return choice
    return True


def plan(dag: Dag, enable_cache: bool | None) -> list[_Plan]:
    """Resolve caching and encode every parameter up front (errors before any event)."""
    plans: list[_Plan] = []
    fingerprints: dict[int, CodeFingerprint] = {}  # per step function, within this plan
    for inv in dag.invocations.values():
        st = inv.step

        caching = _caching(enable_cache, inv, dag.pipeline)
        outputs = {
            name: _output_identity(st.output_materializers.get(name), tp)
            for name, tp in zip(st.outputs.names, st.outputs.types, strict=True)
        }
        try:
            fp = fingerprints.get(id(st.func))
            if fp is None:
                fp = fingerprints[id(st.func)] = code_fingerprint(st.func)
            base: KeyComponents | None = KeyComponents.create(
                st.func,
                step_name=st.name,
                parameters=inv.parameters,
                inputs={},
                outputs=outputs,
                cache_version=st.cache_version,
                fingerprint=fp,
            )
        except UnhashableParameterError:
            if caching:
                raise
            base = None
        names = {
            o: st.outputs.artifact_names.get(o) or f"{dag.pipeline.name}.{inv.id}.{o}"
            for o in st.outputs.names
        }
        mats: dict[str, type | None] = {o: st.output_materializers.get(o) for o in names}
        plans.append(_Plan(inv, caching, base, mats, names))
    return plans


def _display(value: Any) -> Any:
    from engine.ledger.artifacts import plain

    ext = as_external(value)
    if ext is not None:
        return repr(ext)
    try:
        return plain(value, where="parameter")
    except InvalidArgumentError:
        text = repr(value)
        return text if len(text) <= 200 else text[:197] + "..."


def _error(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 2000 else text[:1997] + "..."


class _Runner:
    def __init__(self, store: Store, dag: Dag, plans: list[_Plan]) -> None:
        self.store = store
        self.dag = dag
        self.plans = plans
        # invocation -> input name -> record of a stored artifact passed in (resolved now)
        self.externals: dict[str, dict[str, dict[str, Any]]] = {
            inv.id: {
                n: h.resolve(store)
                for n, h in inv.inputs.items()
                if not isinstance(h, OutputHandle)
            }
            for inv in dag.invocations.values()
        }
        self.run_id = secrets.token_hex(8)
        self.pipeline = dag.pipeline.name
        # invocation -> output name -> artifact record
        self.results: dict[str, dict[str, dict[str, Any]]] = {}

    def start(self, enable_cache: bool | None) -> None:
        # Every event of this run comes after the current head: explanations compare
        # with step runs recorded before it, never with this run's own.
        self.first_seq = self.store.head + 1
        self.store.ledger.defer(
            [
                (
                    RUN_STARTED,
                    {
                        "id": self.run_id,
                        "pipeline": self.pipeline,
                        "params": {k: _display(v) for k, v in self.dag.params.items()},
                        "enable_cache": enable_cache,
                        "invocations": list(self.dag.invocations),
                    },
                )
            ]
        )

    def execute(self) -> None:
        ledger = self.store.ledger
        for i, p in enumerate(self.plans):
            started = time.perf_counter()
            try:
                executed = self.step(p)
            except BaseException as exc:
                self.fail(p, i, exc)
                raise
            if executed:  # its commit is pending: settle once the window holds enough
                ledger.ran(time.perf_counter() - started)
        self.store.ledger.commit(lambda txn: [(RUN_COMPLETED, {"id": self.run_id})])

    def fail(self, p: _Plan, index: int, exc: BaseException) -> None:
        records: list[tuple[str, dict[str, Any]]] = []
        if p.step_run_id is not None:
            failed: dict[str, Any] = {"id": p.step_run_id, "run": self.run_id, "error": _error(exc)}
            if p.context is not None and p.context.step_metadata:
                failed["metadata"] = p.context.step_metadata
            records.append((STEP_FAILED, failed))
            later_plans = self.plans[index + 1 :]
        else:  # failed before it started (e.g. the store could not be read)
            later_plans = self.plans[index:]
        for later in later_plans:
            ups = self.dag.upstream(later.inv)
            why = (
                f"upstream step {p.inv.id} failed"
                if p.inv.id in ups
                else f"the run stopped when step {p.inv.id} failed"
            )
            records.append(
                (
                    STEP_SKIPPED,
                    {
                        "id": secrets.token_hex(8),
                        "run": self.run_id,
                        "pipeline": self.pipeline,
                        "invocation": later.inv.id,
                        "step": later.inv.step.name,
                        "reason": why,
                    },
                )
            )
        records.append((RUN_FAILED, {"id": self.run_id, "error": _error(exc)}))
        self.store.ledger.commit(lambda txn: records)

    def inputs_of(self, inv: Invocation) -> dict[str, dict[str, Any]]:
        """Input name -> artifact record: other steps' outputs and stored artifacts."""
        out: dict[str, dict[str, Any]] = {}
        for name, h in inv.inputs.items():
            if isinstance(h, OutputHandle):
                out[name] = self.results[h.invocation][h.output]
            else:
                out[name] = self.externals[inv.id][name]
        return out

    def step(self, p: _Plan) -> bool:
        """Run or reuse one invocation; whether it ran."""
        inv, st = p.inv, p.inv.step
        inputs = self.inputs_of(inv)
        components = key = None
        if p.base is not None:
            components = p.base.with_inputs({n: a["content_hash"] for n, a in inputs.items()})
            key = components.key()
        sid = secrets.token_hex(8)
        common: dict[str, Any] = {
            "id": sid,
            "run": self.run_id,
            "pipeline": self.pipeline,
            "invocation": inv.id,
            "step": st.name,
            "cache_key": key,
        }
        store = self.store
        with store.ledger.kv.snapshot() as txn:
            if not p.caching:
                reasons = [CACHE_DISABLED]
            else:
                assert components is not None and key is not None
                check = [o for o, cls in p.materializers.items() if cls is None]
                found = lookup_in(txn, txn, key, st.cache_expires_after, check_materializers=check)
                if found.record is not None and found.outputs is not None:
                    src = found.record
                    was = src["inputs"]
                    loaded = {k: was[k] for k in src.get("loaded") or {} if k in was}
                    store.ledger.defer(
                        [
                            (
                                STEP_CACHED,
                                {
                                    **common,
                                    "cache_miss_reason": None,
                                    "source": src["id"],
                                    "inputs": {**{n: a["id"] for n, a in inputs.items()}, **loaded},
                                    "outputs": {n: a["id"] for n, a in found.outputs.items()},
                                },
                            )
                        ]
                    )
                    self.results[inv.id] = found.outputs
                    return False
                if found.reason is not None:
                    reasons = [found.reason]
                else:
                    reasons = miss_reasons(
                        txn, st.name, self.pipeline, inv.id, components, self.first_seq
                    )
        store.ledger.defer(
            [
                (
                    STEP_STARTED,
                    {
                        **common,
                        # A cache hit has its source's components (same key); only
                        # step runs that compute record them.
                        "components": None if components is None else components.to_record(),
                        "cache_miss_reason": "; ".join(reasons),
                        "cache_miss_reasons": reasons,
                    },
                )
            ]
        )
        p.step_run_id = sid
        p.context = StepContext(
            store,
            pipeline=self.dag.pipeline,
            run_id=self.run_id,
            step_name=st.name,
            invocation=inv.id,
            step_run_id=sid,
            output_names=st.outputs.names,
            inputs={n: a["id"] for n, a in inputs.items()},
        )
        result = self.call(inv, inputs, p.context)
        self.results[inv.id] = self.save(p, p.context, inputs, result)
        return True

    def call(self, inv: Invocation, inputs: dict[str, dict[str, Any]], ctx: StepContext) -> Any:
        st = inv.step
        arguments: dict[str, Any] = {}
        loaded = {n: ArtifactVersion(self.store.catalog, a).load() for n, a in inputs.items()}
        extra: dict[str, Any] = {}
        for pname, param in st.signature.parameters.items():
            if pname in loaded:
                arguments[pname] = loaded[pname]
            elif param.kind == inspect.Parameter.VAR_KEYWORD:
                known = set(st.signature.parameters)
                extra = {k: v for k, v in inv.parameters.items() if k not in known}
                arguments[pname] = extra
            elif pname in inv.parameters:
                arguments[pname] = inv.parameters[pname]
        bound = inspect.BoundArguments(st.signature, arguments)
        with running(ctx):
            return st.func(*bound.args, **bound.kwargs)

    def save(
        self, p: _Plan, ctx: StepContext, inputs: dict[str, dict[str, Any]], result: Any
    ) -> dict[str, dict[str, Any]]:
        st = p.inv.step
        names = st.outputs.names
        values = output_values(st, result)
        classes = [
            choose_materializer(st, p.materializers[n], v)
            for n, v in zip(names, values, strict=True)
        ]
        ledger = self.store.ledger
        sid = ctx.step_run_id

        def write() -> list[dict[str, Any]]:
            prepared = prepare_outputs(ledger, st, values, classes, p.artifact_names, ctx)

            def extra(datas: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
                data: dict[str, Any] = {
                    "id": sid,
                    "run": self.run_id,
                    "inputs": {
                        **{n: a["id"] for n, a in inputs.items()},
                        **{k: aid for k, (aid, _) in ctx.loaded.items()},
                    },
                    "outputs": {n: d["id"] for n, d in zip(names, datas, strict=True)},
                    "materializers": {
                        n: identity_of(c) for n, c in zip(names, classes, strict=True)
                    },
                }
                if ctx.loaded:
                    data["loaded"] = {k: flags for k, (_, flags) in ctx.loaded.items()}
                if ctx.step_metadata:
                    data["metadata"] = ctx.step_metadata
                return [(STEP_COMPLETED, data)]

            return commit_artifacts(ledger, prepared, extra=extra)

        datas = retry_on_concurrent_gc(write)
        return {
            n: self.store.get_artifact_by_id(d["id"]).record()
            for n, d in zip(names, datas, strict=True)
        }


def run_pipeline(
    store: Store, pipe: Any, params: dict[str, Any], enable_cache: bool | None = None
) -> Run:
    """Run ``pipe`` with ``params`` on ``store``; see the module docstring."""
    if not isinstance(pipe, Pipeline):
        raise PipelineError(
            f"store.run() takes a @pipeline, not {pipe!r}; decorate the function with @pipeline"
        )
    if enable_cache is not None and not isinstance(enable_cache, bool):
        raise InvalidArgumentError(f"enable_cache must be a bool or None, not {enable_cache!r}")
    bound = pipe.bind((), params)
    dag = pipe.trace(bound)
    for inv in dag.invocations.values():
        for h in inv.inputs.values():
            if isinstance(h, ExternalArtifact):
                continue
            if not isinstance(h, OutputHandle) or h.invocation not in dag.invocations:
                raise PipelineError(f"step {inv.id}: input {h!r} is not from this pipeline")
    plans = plan(dag, enable_cache)
    runner = _Runner(store, dag, plans)
    opened = store.ledger.open_window()
    try:
        runner.start(enable_cache)
        runner.execute()
    finally:
        if opened:
            store.ledger.close_window()
        else:  # a run inside a step of another run: durable when it returns, too
            store.ledger.settle()
    return store.get_run(runner.run_id)
