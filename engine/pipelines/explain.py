"""Why a step ran, and a run's DAG as a graph.

Every step run records its cache-key components. When a step misses the
cache, the runner compares its components with those of the **nearest earlier
run of that step** — the latest step run in the same place of the same
pipeline (``pipeline``/``invocation``), else the latest run of the same step
anywhere — and records the differences (``cache_miss_reasons``, joined into
``cache_miss_reason``). :func:`explain` reads them back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engine.errors import InvalidArgumentError
from engine.pipelines.cache_key import KeyComponents, explain_difference
from engine.projections.keys import history_key, slot_name
from engine.projections.records import record
from engine.storage.kv import Txn

if TYPE_CHECKING:
    from engine.query.catalog import Catalog, HasCatalog
    from engine.query.lineage import LineageGraph
    from engine.query.models import Run, StepRun

NO_EARLIER_RUN = "no earlier run"
CACHE_DISABLED = "cache disabled"


def nearest_earlier(
    txn: Txn, step: str, pipeline: str, invocation: str, before_seq: int | None = None
) -> dict[str, Any] | None:
    """The newest step-run record recorded before event ``before_seq`` (None: any)
    in the same pipeline place, else of the same step."""
    for name in (slot_name(pipeline, invocation), step):
        prefix = history_key(name, 0)[:-8]
        stop = None if before_seq is None else history_key(name, before_seq)
        for _, sid in txn.scan("step_history", None, stop, prefix=prefix, reverse=True):
            raw = txn.get("steps", sid)
            if raw is not None:
                rec = record(raw, "steps")
                comps = txn.get("step_components", sid)
                rec["components"] = None if comps is None else record(comps, "step_components")
                return rec
    return None


def miss_reasons(
    txn: Txn,
    step: str,
    pipeline: str,
    invocation: str,
    components: KeyComponents,
    before_seq: int | None = None,
) -> list[str]:
    """What differs between ``components`` and the nearest run of the step
    recorded before event ``before_seq`` (the start of the current run)."""
    old = nearest_earlier(txn, step, pipeline, invocation, before_seq)
    if old is None:
        return [NO_EARLIER_RUN]
    try:
        before = KeyComponents.from_record(old["components"])
    except InvalidArgumentError:
        return ["the earlier run's cache key record is unreadable"]
    reasons = explain_difference(before, components, step)
    if not reasons:
        status = old["status"]
        state = "failed" if status == "failed" else f"is {status}"
        return [f"the earlier run with this cache key {state}; nothing to reuse"]
    return reasons


def explain(step_run: StepRun) -> list[str]:
    """Why ``step_run`` ran: what differed from the nearest earlier run of its step
    ("parameter factor: 2.0 -> 3.0", "input data: new content", "code of helper()
    changed", "no earlier run", "cache disabled", "expired", ...). Empty for a
    cache hit; a skipped step says why it was skipped."""
    rec = step_run.record()
    status = rec["status"]
    if status == "cached":
        return []
    if status == "skipped":
        return [f"skipped: {rec.get('error') or 'an upstream step failed'}"]
    reasons = rec.get("cache_miss_reasons")
    if reasons:
        return list(reasons)
    reason = rec.get("cache_miss_reason")
    return [reason] if reason else []


def run_graph(source: Catalog | HasCatalog, run: Run | str) -> LineageGraph:
    """A run's DAG: its step runs (executed, cached, failed or skipped) and the
    artifact versions they read and wrote, edges in data-flow direction
    (``source``: a store, its catalog or an ``as_of`` view)."""
    from engine.query.catalog import catalog_of
    from engine.query.lineage import LineageGraph
    from engine.query.models import Run

    catalog = catalog_of(source)

    r = run if isinstance(run, Run) else catalog.get_run(run)
    g = LineageGraph(r.id, "run")
    with catalog._read() as txn:
        for inv, sid in r.record()["steps"].items():
            raw = txn.get("steps", sid.encode())
            if raw is None:
                continue
            srec = record(raw, "steps")
            g.add_step(srec, name=inv)
            for edge_ids, incoming in ((srec["inputs"], True), (srec["outputs"], False)):
                for aid in edge_ids.values():
                    araw = txn.get("artifacts", aid.encode())
                    if araw is None:
                        continue
                    g.add_artifact(record(araw, "artifacts"))
                    g.add_edge(*((aid, sid) if incoming else (sid, aid)))
    return g
