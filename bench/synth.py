"""Synthetic history: pipeline-shaped events appended fast, straight into the ledger.

Each synthetic step is three events, as the runner writes them:
``step.started`` (with a cache key), ``artifact.written`` (a tiny artifact
whose files are those of one real artifact, so loads and cache lookups find
their chunks) and ``step.completed`` (input: the previous step's output).
Runs of ``RUN_STEPS`` steps are bracketed by ``run.started``/``run.completed``.
The first ``deep`` steps form one chain across runs, for lineage at depth.

Events are appended with ``EventLog.append`` and folded with
``projections.fold`` (the batched fold of the same handlers) in batches inside
``store.ledger.kv.write``: the live commit path without the per-commit fsync,
so a long log is built in seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from engine.projections import fold
from engine.store import Store

RUN_STEPS = 1000
BATCH_STEPS = 2000


@dataclass
class Synth:
    """What was generated: counts, and handles for queries."""

    events: int = 0
    steps: int = 0
    seconds: float = 0.0
    chain: list[str] = field(default_factory=list)  # artifact ids of the deep chain, in order
    keys: list[str] = field(default_factory=list)  # a sample of cache keys that hit
    truncated_by_time: bool = False


def _key(i: int) -> str:
    return f"{i:032x}"


def seed_artifact(store: Store) -> tuple[Any, dict[str, Any]]:
    """A real artifact version, and the fields synthetic ``artifact.written``
    events copy from it (so every synthetic version loads as its bytes)."""
    seed = store.save_artifact({"synthetic": True}, "bench.seed")
    rec = seed.record()
    keys = (
        "content_hash",
        "data_type",
        "materializer",
        "materializer_version",
        "artifact_type",
        "files",
        "state",
        "metadata",
        "size",
    )
    return seed, {k: rec[k] for k in keys}


def generate(
    store: Store,
    target_events: int,
    *,
    deep: int = 0,
    budget_s: float | None = None,
    progress: Callable[[int], None] | None = None,
) -> Synth:
    """Append about ``target_events`` synthetic events (stopping early when
    ``budget_s`` runs out); the first ``deep`` steps form one chain."""
    seed, base = seed_artifact(store)
    out = Synth()
    start = time.perf_counter()
    prev_aid = seed.id
    step_i = 0
    run_id = ""
    head0 = store.head
    sample_every = 97

    while True:
        records: list[tuple[str, dict[str, Any]]] = []
        for _ in range(max(1, min(BATCH_STEPS, (target_events - out.events) // 3 + 1))):
            if step_i % RUN_STEPS == 0:
                if run_id:
                    records.append(("run.completed", {"id": run_id}))
                run_id = f"r{step_i // RUN_STEPS:015x}"
                records.append(
                    (
                        "run.started",
                        {
                            "id": run_id,
                            "pipeline": "bench.synthetic",
                            "params": {},
                            "enable_cache": None,
                        },
                    )
                )
            sid = f"s{step_i:015x}"
            aid = f"a{step_i:015x}"
            key = _key(step_i)
            in_chain = step_i < deep
            inv = f"step_{step_i % RUN_STEPS}"
            records.append(
                (
                    "step.started",
                    {
                        "id": sid,
                        "run": run_id,
                        "invocation": inv,
                        "step": "inc",
                        "cache_key": key,
                        "components": None,
                        "cache_miss_reason": "no earlier run",
                    },
                )
            )
            d = dict(base)
            d.update(
                id=aid,
                name=f"bench.synthetic.{inv}.output",
                version=step_i // RUN_STEPS + 1,
                visualizations=[],
                user_metadata={},
                tags=[],
                producer=sid,
                run=run_id,
                size=int(base["size"]),
            )
            records.append(("artifact.written", d))
            src = prev_aid if (in_chain or step_i % RUN_STEPS) else seed.id
            records.append(
                (
                    "step.completed",
                    {"id": sid, "run": run_id, "inputs": {"x": src}, "outputs": {"output": aid}},
                )
            )
            if in_chain:
                out.chain.append(aid)
            if step_i % sample_every == 0:
                out.keys.append(key)
            prev_aid = aid
            step_i += 1

        def fn(txn: Any, records: list[tuple[str, dict[str, Any]]] = records) -> None:
            fold(txn, store.ledger.log.append(txn, records))

        store.ledger.kv.write(fn)
        out.events = store.head - head0
        if progress is not None:
            progress(out.events)
        if out.events >= target_events:
            break
        if budget_s is not None and time.perf_counter() - start > budget_s:
            out.truncated_by_time = True
            break
    store.ledger.commit(lambda txn: [("run.completed", {"id": run_id})])
    out.events = store.head - head0
    out.steps = step_i
    out.seconds = time.perf_counter() - start
    return out
