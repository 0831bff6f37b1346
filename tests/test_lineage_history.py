"""Lineage across runs and through cached steps, run graphs, and ``as_of`` views."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone

import numpy as np
import pytest

from engine import Store, pipeline, step
from engine.pipelines.cache import lookup
from engine.pipelines.explain import run_graph


@step
def source(n: int = 4) -> np.ndarray:
    return np.arange(n, dtype=np.float64)


@step
def scale(data: np.ndarray, factor: float = 2.0) -> np.ndarray:
    return data * factor


@step
def total(values: np.ndarray) -> float:
    return float(values.sum())


@pipeline
def chain(factor: float = 2.0) -> None:
    total(scale(source(), factor=factor))


def test_lineage_up_and_down_across_runs(store: Store) -> None:
    first = store.run(chain, factor=2.0)
    second = store.run(chain, factor=3.0)  # source is cached: its output is reused
    src = first.steps["source"].output
    assert second.steps["source"].output.id == src.id

    down = store.lineage(src, direction="downstream")
    arts = {n["name"] for n in down.nodes.values() if n["kind"] == "artifact"}
    assert arts == {"chain.source.output", "chain.scale.output", "chain.total.output"}
    totals = [a for a, n in down.nodes.items() if n["name"] == "chain.total.output"]
    assert len(totals) == 2  # one per factor
    steps = [n for n in down.nodes.values() if n["kind"] == "step"]
    assert {(n["name"], n["status"]) for n in steps} >= {("scale", "completed")}
    assert {n["run"] for n in steps} == {first.id, second.id}

    final = second.steps["total"].output
    up = store.lineage(final, direction="upstream")
    assert src.id in up.nodes
    assert (src.id, first.steps["source"].id) not in up.edges  # source has no inputs
    assert (first.steps["source"].id, src.id) in up.edges  # produced in the first run
    assert (src.id, second.steps["scale"].id) in up.edges
    assert (second.steps["total"].id, final.id) in up.edges

    shallow = store.lineage(final, direction="upstream", depth=1)
    assert src.id not in shallow.nodes


def test_lineage_through_cached_steps_downstream(store: Store) -> None:
    first = store.run(chain)
    again = store.run(chain)
    src = first.steps["source"].output
    down = store.lineage(src, direction="downstream")
    assert again.steps["scale"].id in down.nodes  # the cached step run read it too
    assert (src.id, again.steps["scale"].id) in down.edges
    assert store.consumers(src)[-1].status == "cached"


def test_run_graph_and_renderings(store: Store) -> None:
    run = store.run(chain)
    g = run_graph(store, run)
    steps = {n["name"] for n in g.nodes.values() if n["kind"] == "step"}
    assert steps == {"source", "scale", "total"}
    assert len([n for n in g.nodes.values() if n["kind"] == "artifact"]) == 3
    assert len(g.edges) == 5  # source->a, a->scale, scale->b, b->total, total->c

    data = json.loads(g.to_json())
    assert data["root"] == run.id and len(data["edges"]) == 5
    dot = g.to_dot()
    assert dot.startswith("digraph lineage {") and dot.count("->") == 5
    assert "chain.scale.output:1" in dot and "scale (completed)" in dot
    mermaid = g.to_mermaid()
    assert mermaid.startswith("flowchart LR") and mermaid.count("-->") == 5
    assert run_graph(store, run.id).edges == g.edges


def test_as_of_before_a_second_run_shows_one_run(store: Store) -> None:
    first = store.run(chain, factor=2.0)
    mark = store.head
    second = store.run(chain, factor=3.0)

    view = store.as_of(mark)
    assert [r.id for r in view.list_runs()] == [first.id]
    assert view.get_run(first.id).status == "completed"
    assert len(view.list_artifacts("chain.total.output")) == 1
    assert view.get_artifact("chain.total.output").load() == 12.0
    up = view.lineage(view.get_artifact("chain.total.output"), direction="upstream")
    assert len([n for n in up.nodes.values() if n["kind"] == "step"]) == 3
    down = view.lineage(first.steps["source"].output.id, direction="downstream")
    assert second.steps["scale"].id not in down.nodes

    # Cache lookups answer as they would have then.
    key = second.steps["scale"].cache_key
    assert lookup(store, key) is not None
    assert lookup(view, key) is None
    hit = lookup(view, first.steps["scale"].cache_key)
    assert hit is not None and hit.id == first.steps["scale"].id
    assert run_graph(view, first).nodes.keys() == run_graph(store, first).nodes.keys()


def test_as_of_a_datetime(store: Store) -> None:
    first = store.run(chain)
    time.sleep(0.01)
    between = datetime.now(timezone.utc)
    time.sleep(0.01)
    store.run(chain, factor=5.0)
    assert [r.id for r in store.as_of(between).list_runs()] == [first.id]


def test_lookup_respects_deletion_and_expiry(store: Store) -> None:
    from datetime import timedelta

    run = store.run(chain)
    key = run.steps["total"].cache_key
    assert lookup(store, key, expires_after=timedelta(hours=1)) is not None
    assert lookup(store, key, expires_after=timedelta(0)) is None
    store.delete_artifact(run.steps["total"].output)
    assert lookup(store, key) is None


@pytest.mark.slow
def test_a_long_chain_lineage_stays_fast(store: Store) -> None:
    @step
    def inc(x: float, i: int = 0) -> float:
        return x + 1

    @pipeline
    def long_chain() -> None:
        h = total(source())
        for i in range(300):
            h = inc(h, i=i)

    run = store.run(long_chain)
    last = run.steps["inc_300"].output
    start = time.perf_counter()
    g = store.lineage(last)
    elapsed = time.perf_counter() - start
    assert len(g.nodes) == 2 * 302  # 302 step runs, each with its output
    assert elapsed < 1.0
