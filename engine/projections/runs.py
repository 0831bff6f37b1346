"""Projections of runs and step runs: status, cache index, consumers, history.

Event data (all ids are hex strings):

- ``run.started``: id, pipeline, params, enable_cache, invocations (list of ids);
  optional metadata (a map kept in the record: where an imported run came from)
- ``run.completed``: id;  ``run.failed``: id, error
- ``step.started``: id, run, pipeline, invocation, step, cache_key, components (a
  ``KeyComponents.to_record()``), cache_miss_reason (a short string),
  cache_miss_reasons (the list it was joined from)
- ``step.completed``: id, run, inputs {name: artifact id}, outputs {name: artifact id};
  optional: loaded {input name: {latest, tags}} (the inputs the step loaded itself
  while it ran), metadata (logged on the step run), materializers {output:
  "identity@VERSION"} (what saved each output; added to the step's components)
- ``step.cached``: as step.started without components (they are the source's:
  same key) plus source (the reused step run), inputs, outputs
- ``step.failed``: id, run, error, optional metadata
- ``step.skipped``: id, run, invocation, step, reason
- ``step.started``, ``step.cached`` and ``step.skipped`` may carry metadata too, kept
  as ``run.started``'s is
- ``run.deleted``: id

Databases: ``runs`` (run id -> record), ``run_steps`` (run id NUL seq ->
invocation NUL step run id), ``step_components`` (step run id -> cache-key
components, kept apart so step records stay small), ``run_index`` (pipeline NUL seq -> run
id, and b"\\x01" seq -> run id for all runs), ``steps`` (step run id ->
record), ``cache`` (cache key NUL seq -> step run id, completed runs only),
``consumers`` (artifact id NUL step run id -> b""), ``step_history`` (step
name NUL seq -> step run id, and pipeline \\x1f invocation NUL seq -> step run
id: every step run that recorded key components, found by step or by its
place in a pipeline).
"""

from __future__ import annotations

from typing import Any

from engine.events import (
    RUN_COMPLETED,
    RUN_DELETED,
    RUN_FAILED,
    RUN_STARTED,
    STEP_CACHED,
    STEP_COMPLETED,
    STEP_FAILED,
    STEP_SKIPPED,
    STEP_STARTED,
)
from engine.projections.fold import bump, get_record, handles, put_record
from engine.projections.keys import (
    cache_index_key,
    consumer_key,
    history_key,
    run_index_key,
    run_step_key,
    run_step_prefix,
    slot_name,
)
from engine.storage.kv import Txn
from engine.storage.log import Event


@handles(RUN_STARTED)
def _run_started(txn: Txn, e: Event) -> None:
    d = e.data
    rec: dict[str, Any] = {
        "id": d["id"],
        "pipeline": d["pipeline"],
        "params": d.get("params", {}),
        "enable_cache": d.get("enable_cache"),
        "status": "running",
        "seq": e.seq,
        "ts": e.ts,
        "ended_ts": None,
        "error": None,
        "deleted": None,
    }
    if d.get("metadata") is not None:  # e.g. where an imported run came from
        rec["metadata"] = d["metadata"]
    put_record(txn, "runs", d["id"], rec)
    txn.put("run_index", run_index_key(d["pipeline"], e.seq), d["id"].encode())
    txn.put("run_index", run_index_key(None, e.seq), d["id"].encode())
    bump(txn, "runs", 1)


@handles(RUN_COMPLETED, RUN_FAILED)
def _run_ended(txn: Txn, e: Event) -> None:
    rec = get_record(txn, "runs", e.data["id"])
    if rec is None:
        return
    rec["status"] = "completed" if e.type == RUN_COMPLETED else "failed"
    rec["error"] = e.data.get("error")
    rec["ended_ts"] = e.ts
    put_record(txn, "runs", rec["id"], rec)


@handles(RUN_DELETED)
def _run_deleted(txn: Txn, e: Event) -> None:
    rec = get_record(txn, "runs", e.data["id"])
    if rec is None or rec["deleted"] is not None:
        return
    rec["deleted"] = e.seq
    put_record(txn, "runs", rec["id"], rec)
    txn.delete("run_index", run_index_key(rec["pipeline"], rec["seq"]))
    txn.delete("run_index", run_index_key(None, rec["seq"]))
    for sid in run_step_ids(txn, rec["id"]).values():
        step = get_record(txn, "steps", sid)
        if step is not None and step.get("cache_seq") is not None:
            txn.delete("cache", cache_index_key(step["cache_key"], step["cache_seq"]))
    bump(txn, "runs", -1)


def run_step_ids(txn: Txn, run_id: str) -> dict[str, str]:
    """A run's step runs, invocation id -> step run id, in execution order."""
    out: dict[str, str] = {}
    for _, v in txn.scan("run_steps", prefix=run_step_prefix(run_id)):
        invocation, _, sid = v.decode().partition("\x00")
        out[invocation] = sid
    return out


def _attach(
    txn: Txn, run_id: str, invocation: str, step_run_id: str, seq: int, pipeline: str | None
) -> str | None:
    """Add the step run to its run (one key, so long runs fold in linear time);
    the run's pipeline name (carried by the event, else read from the run)."""
    if pipeline is None:
        run = get_record(txn, "runs", run_id)
        if run is None:
            return None
        pipeline = str(run["pipeline"])
    txn.put("run_steps", run_step_key(run_id, seq), f"{invocation}\x00{step_run_id}".encode())
    return pipeline


@handles(STEP_STARTED, STEP_CACHED, STEP_SKIPPED)
def _step_begun(txn: Txn, e: Event) -> None:
    d = e.data
    status = {STEP_STARTED: "running", STEP_CACHED: "cached", STEP_SKIPPED: "skipped"}[e.type]
    rec: dict[str, Any] = {
        "id": d["id"],
        "run": d["run"],
        "invocation": d["invocation"],
        "step": d["step"],
        "status": status,
        "cache_key": d.get("cache_key"),
        "cache_miss_reason": d.get("cache_miss_reason"),
        "cache_miss_reasons": d.get("cache_miss_reasons"),
        "source": d.get("source"),
        "inputs": d.get("inputs", {}),
        "outputs": d.get("outputs", {}),
        "error": d.get("reason"),
        "seq": e.seq,
        "ts": e.ts,
        "ended_ts": e.ts if status != "running" else None,
    }
    if d.get("metadata") is not None:
        rec["metadata"] = d["metadata"]
    put_record(txn, "steps", d["id"], rec)
    components = d.get("components")
    if components is not None:
        put_record(txn, "step_components", d["id"], components)
    pipeline = _attach(txn, d["run"], d["invocation"], d["id"], e.seq, d.get("pipeline"))
    if status == "cached":
        for aid in rec["inputs"].values():
            txn.put("consumers", consumer_key(aid, d["id"]), b"")
    if components is not None:
        txn.put("step_history", history_key(d["step"], e.seq), d["id"].encode())
        if pipeline is not None:
            slot = slot_name(pipeline, d["invocation"])
            txn.put("step_history", history_key(slot, e.seq), d["id"].encode())


@handles(STEP_COMPLETED, STEP_FAILED)
def _step_ended(txn: Txn, e: Event) -> None:
    d = e.data
    rec = get_record(txn, "steps", d["id"])
    if rec is None:
        return
    rec["ended_ts"] = e.ts
    if isinstance(d.get("metadata"), dict) and d["metadata"]:
        rec["metadata"] = d["metadata"]
    if e.type == STEP_FAILED:
        rec["status"] = "failed"
        rec["error"] = d.get("error")
    else:
        rec["status"] = "completed"
        rec["inputs"] = d.get("inputs", {})
        rec["outputs"] = d.get("outputs", {})
        if isinstance(d.get("loaded"), dict) and d["loaded"]:
            rec["loaded"] = d["loaded"]
        if isinstance(d.get("materializers"), dict) and d["materializers"]:
            components = get_record(txn, "step_components", d["id"])
            if components is not None:
                components["materializers"] = d["materializers"]
                put_record(txn, "step_components", d["id"], components)
        for aid in rec["inputs"].values():
            txn.put("consumers", consumer_key(aid, d["id"]), b"")
        if rec.get("cache_key"):
            txn.put("cache", cache_index_key(rec["cache_key"], e.seq), d["id"].encode())
            rec["cache_seq"] = e.seq
    put_record(txn, "steps", d["id"], rec)
