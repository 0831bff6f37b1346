"""Steps, pipelines, the runner and the cache, through the public API.

The log and the chunk index are read back directly where the claim is about
what was recorded (commit counts, nothing written, collected chunks).
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import sys
import threading
import types
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pytest

import engine
from engine import PipelineError, Store, UnhashableParameterError, pipeline, step
from engine.query.models import Run
from materializers.cloudpickle_materializer import CloudpickleMaterializer

CALLS: list[str] = []
SWITCH = {"fail": False}


@step
def load(n: int = 4, note: str = "") -> np.ndarray:
    CALLS.append("load")
    return np.arange(n, dtype=np.float64)


@step
def scale(data: np.ndarray, factor: float = 2.0) -> np.ndarray:
    CALLS.append("scale")
    return data * factor


@step
def fragile(data: np.ndarray) -> np.ndarray:
    CALLS.append("fragile")
    if SWITCH["fail"]:
        raise ValueError("fragile step broke")
    return data + 1


@step
def total(values: np.ndarray) -> float:
    CALLS.append("total")
    return float(values.sum())


@pipeline
def chain(n: int = 4, factor: float = 2.0, note: str = "") -> None:
    total(scale(load(n=n, note=note), factor=factor))


@pipeline
def breaking(n: int = 4) -> None:
    total(fragile(load(n=n)))


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    CALLS.clear()
    SWITCH["fail"] = False
    yield
    SWITCH["fail"] = False


def statuses(run: Run) -> dict[str, str]:
    return {inv: sr.status for inv, sr in run.steps.items()}


def count_commits(store: Store) -> list[int]:
    """Count durable ledger commits by wrapping the KV's write (a back door)."""
    counter = [0]
    original = store.ledger.kv.write

    def write(fn: Callable[[Any], Any]) -> Any:
        counter[0] += 1
        return original(fn)

    store.ledger.kv.write = write  # type: ignore[method-assign]
    return counter


# -- definitions -------------------------------------------------------------------


def test_step_outside_a_pipeline_is_the_plain_function() -> None:
    assert list(load(n=2)) == [0.0, 1.0]
    assert scale(np.ones(2), factor=3.0).tolist() == [3.0, 3.0]


def test_decorators_with_and_without_arguments() -> None:
    @step(name="renamed", cache_version=2)
    def f() -> int:
        return 1

    @pipeline(name="p2", enable_cache=False)
    def p() -> None:
        f()

    assert f.name == "renamed" and f.cache_version == 2
    assert p.name == "p2" and p.enable_cache is False
    assert engine.step is step and engine.pipeline is pipeline


def test_a_pipeline_parameter_named_like_the_run_option_is_refused() -> None:
    with pytest.raises(PipelineError, match="enable_cache"):

        @pipeline
        def p(enable_cache: bool = True) -> None:
            pass


def test_wrong_arguments_to_a_step_raise_before_anything_runs(store: Store) -> None:
    @pipeline
    def p() -> None:
        scale(nonsense=1)

    head = store.head
    with pytest.raises(PipelineError, match="scale"):
        store.run(p)
    assert store.head == head


# -- running and caching ---------------------------------------------------------------


def test_rerun_is_all_cached_and_reuses_artifacts(store: Store) -> None:
    first = store.run(chain)
    assert first.status == "completed"
    assert statuses(first) == {"load": "completed", "scale": "completed", "total": "completed"}
    assert first.steps["total"].output.load() == 12.0
    CALLS.clear()
    second = store.run(chain)
    assert statuses(second) == {"load": "cached", "scale": "cached", "total": "cached"}
    assert CALLS == []
    for inv in ("load", "scale", "total"):
        cached, original = second.steps[inv], first.steps[inv]
        assert cached.source == original.id
        assert cached.output.id == original.output.id
        assert cached.cache_key == original.cache_key
    assert len(store.list_artifacts()) == 3


def test_default_artifact_names_use_pipeline_and_invocation(store: Store) -> None:
    run = store.run(chain)
    assert run.steps["scale"].output.name == "chain.scale.output"
    assert run.steps["scale"].output.producer.id == run.steps["scale"].id  # type: ignore[union-attr]


def test_changed_parameter_reruns_that_step_and_downstream_only(store: Store) -> None:
    store.run(chain, factor=2.0)
    CALLS.clear()
    run = store.run(chain, factor=3.0)
    assert statuses(run) == {"load": "cached", "scale": "completed", "total": "completed"}
    assert CALLS == ["scale", "total"]
    assert run.steps["scale"].cache_miss_reason == "parameter factor: 2.0 -> 3.0"
    assert store.explain(run.steps["scale"]) == ["parameter factor: 2.0 -> 3.0"]
    assert store.explain(run.steps["total"].id) == ["input values: new content"]
    assert store.explain(run.steps["load"]) == []
    assert run.steps["total"].output.load() == 18.0


def test_identical_input_content_from_another_upstream_run_hits(store: Store) -> None:
    store.run(chain, note="a")
    CALLS.clear()
    run = store.run(chain, note="b")  # load reruns, but writes the same bytes
    assert statuses(run) == {"load": "completed", "scale": "cached", "total": "cached"}
    assert CALLS == ["load"]
    loads = store.list_artifacts("chain.load.output")
    assert [a.version for a in loads] == [1, 2]
    assert loads[0].content_hash == loads[1].content_hash


def test_enable_cache_false_always_runs(store: Store) -> None:
    @step(enable_cache=False)
    def always(data: np.ndarray) -> float:
        CALLS.append("always")
        return float(data[0])

    @pipeline
    def p() -> None:
        always(load())

    store.run(p)
    CALLS.clear()
    run = store.run(p)
    assert statuses(run) == {"load": "cached", "always": "completed"}
    assert run.steps["always"].cache_miss_reason == "cache disabled"
    assert store.explain(run.steps["always"]) == ["cache disabled"]


def test_enable_cache_precedence_run_over_step_over_pipeline(store: Store) -> None:
    @step(enable_cache=True)
    def keen() -> int:
        CALLS.append("keen")
        return 1

    @step
    def plain() -> int:
        CALLS.append("plain")
        return 2

    @pipeline(enable_cache=False)
    def p() -> None:
        keen()
        plain()

    store.run(p)
    CALLS.clear()
    assert statuses(store.run(p)) == {"keen": "cached", "plain": "completed"}
    CALLS.clear()
    assert statuses(store.run(p, enable_cache=False)) == {
        "keen": "completed",
        "plain": "completed",
    }
    assert statuses(store.run(p, enable_cache=True)) == {"keen": "cached", "plain": "cached"}


def test_calling_the_pipeline_runs_on_the_active_store(store: Store) -> None:
    with engine.use_store(store):
        run = chain(factor=2.0)
        again = chain(2, enable_cache=False)  # positional parameters bind too
    assert run.status == "completed"
    assert statuses(again) == {"load": "completed", "scale": "completed", "total": "completed"}
    assert [r.id for r in store.list_runs("chain")] == [run.id, again.id]
    assert again.params == {"n": 2, "factor": 2.0, "note": ""}


def test_expiry(store: Store) -> None:
    @step(cache_expires_after=timedelta(0))
    def stale() -> int:
        CALLS.append("stale")
        return 1

    @step(cache_expires_after=timedelta(hours=1))
    def fresh() -> int:
        CALLS.append("fresh")
        return 2

    @pipeline
    def p() -> None:
        stale()
        fresh()

    store.run(p)
    run = store.run(p)
    assert statuses(run) == {"stale": "completed", "fresh": "cached"}
    assert run.steps["stale"].cache_miss_reason == "expired"


def test_failure_then_resume_with_upstream_cached(store: Store) -> None:
    SWITCH["fail"] = True
    with pytest.raises(ValueError, match="fragile step broke"):
        store.run(breaking)
    assert store.ledger._deferred == []  # every event of the run is in the log
    (run,) = store.list_runs("breaking")
    assert run.status == "failed"
    assert "fragile step broke" in run.error
    assert statuses(run) == {"load": "completed", "fragile": "failed", "total": "skipped"}
    assert "ValueError" in run.steps["fragile"].error
    assert store.explain(run.steps["total"]) == ["skipped: upstream step fragile failed"]
    types_logged = [e.type for e in store.events()]
    assert types_logged[-3:] == ["step.failed", "step.skipped", "run.failed"]

    SWITCH["fail"] = False
    CALLS.clear()
    resumed = store.run(breaking)
    assert resumed.status == "completed"
    assert statuses(resumed) == {"load": "cached", "fragile": "completed", "total": "completed"}
    assert CALLS == ["fragile", "total"]
    assert resumed.steps["load"].output.id == run.steps["load"].output.id


def test_named_and_repeated_outputs(store: Store) -> None:
    @step
    def split(
        data: np.ndarray,
    ) -> tuple[Annotated[np.ndarray, "head"], Annotated[np.ndarray, "tail"]]:
        return data[:1], data[1:]

    @step
    def pair() -> tuple[int, str]:
        return 1, "one"

    @step
    def summed(values: np.ndarray) -> Annotated[float, "the_sum"]:
        return float(values.sum())

    @pipeline
    def p() -> None:
        head, tail = split(load())
        pair()
        summed(head)
        summed(tail)
        total(split(load(n=3))["tail"])  # outputs by name, too

    run = store.run(p)
    steps = run.steps
    assert list(steps) == [
        "load",
        "split",
        "pair",
        "summed",
        "summed_2",
        "load_2",
        "split_2",
        "total",
    ]
    assert set(steps["split"].outputs) == {"head", "tail"}
    # named tuple elements are named artifacts, like a single Annotated output
    assert steps["split"].outputs["tail"].name == "tail"
    assert steps["split_2"].outputs["tail"].name == "tail"
    assert [a.version for a in store.list_artifacts("tail")] == [1, 2]
    assert set(steps["pair"].outputs) == {"output_0", "output_1"}
    assert steps["pair"].outputs["output_1"].load() == "one"
    assert steps["summed"].output.name == "the_sum"
    assert steps["summed"].output.load() == 0.0
    assert steps["summed_2"].output.load() == 6.0
    assert [a.version for a in store.list_artifacts("the_sum")] == [1, 2]
    assert steps["total"].output.load() == 3.0


def test_output_materializers_override_the_registry(store: Store) -> None:
    @step(output_materializers=CloudpickleMaterializer)
    def conf() -> dict[str, int]:
        return {"a": 1}

    @step(output_materializers={"b": CloudpickleMaterializer})
    def two() -> tuple[Annotated[int, "a"], Annotated[int, "b"]]:
        return 1, 2

    @pipeline
    def p() -> None:
        conf()
        two()

    run = store.run(p)
    assert run.steps["conf"].output.materializer.endswith(":CloudpickleMaterializer")
    assert run.steps["conf"].output.load() == {"a": 1}
    outs = run.steps["two"].outputs
    assert not outs["a"].materializer.endswith(":CloudpickleMaterializer")
    assert outs["b"].materializer.endswith(":CloudpickleMaterializer")


def test_wrong_number_of_outputs_fails_the_step(store: Store) -> None:
    @step
    def bad() -> tuple[int, int]:
        return 1  # type: ignore[return-value]

    @pipeline
    def p() -> None:
        bad()

    with pytest.raises(PipelineError, match="declares 2 outputs"):
        store.run(p)
    assert store.list_runs("p")[0].status == "failed"


def test_unencodable_parameter_raises_and_records_nothing(store: Store) -> None:
    @step
    def locked(lock: Any) -> int:
        return 1

    @step(enable_cache=False)
    def uncached(lock: Any) -> int:
        return 2

    @pipeline
    def p(which: str = "locked") -> None:
        (locked if which == "locked" else uncached)(lock=threading.Lock())

    head = store.head
    with pytest.raises(UnhashableParameterError, match="lock"):
        store.run(p)
    assert store.head == head
    assert store.list_runs() == []
    run = store.run(p, which="uncached")
    assert run.steps["uncached"].status == "completed"
    assert run.steps["uncached"].cache_key is None


# -- group commit ----------------------------------------------------------------------


def test_a_fully_cached_run_costs_one_durable_commit(store: Store) -> None:
    store.run(chain)
    commits = count_commits(store)
    run = store.run(chain)
    assert statuses(run) == {"load": "cached", "scale": "cached", "total": "cached"}
    assert commits[0] == 1
    types_logged = [e.type for e in store.events(run.seq)]
    assert types_logged == ["run.started"] + ["step.cached"] * 3 + ["run.completed"]


def test_each_executed_step_is_one_commit_plus_the_run_end(store: Store) -> None:
    # Steps over the deferral budget (here 0) each commit durably before the next starts.
    store.ledger.budget_commits = 0
    commits = count_commits(store)
    store.run(chain)
    assert commits[0] == 3 + 1


# -- cache hits never point at missing data ----------------------------------------------


def test_a_deleted_output_is_not_a_cache_hit(store: Store) -> None:
    first = store.run(chain)
    store.delete_artifact(first.steps["scale"].output)
    store.gc()
    run = store.run(chain)
    assert statuses(run) == {"load": "cached", "scale": "completed", "total": "cached"}
    assert run.steps["scale"].cache_miss_reason == "outputs deleted or collected"
    assert run.steps["scale"].output.load().tolist() == [0.0, 2.0, 4.0, 6.0]


def test_a_collected_chunk_is_not_a_cache_hit(store: Store) -> None:
    first = store.run(chain)
    art = first.steps["load"].output
    digests = [d for f in art.record()["files"] for d in f[3]]

    def drop(txn: Any) -> None:  # back door: the chunk index loses the bytes
        for d in digests:
            txn.delete("chunks", d)

    store.ledger.kv.write(drop)
    run = store.run(chain)
    assert run.steps["load"].status == "completed"
    assert run.steps["load"].cache_miss_reason == "outputs deleted or collected"
    assert run.steps["load"].output.id != art.id
    assert run.steps["load"].output.load().tolist() == [0.0, 1.0, 2.0, 3.0]


def test_a_deleted_run_is_not_a_cache_source(store: Store) -> None:
    first = store.run(chain)
    store.delete_run(first)
    run = store.run(chain)
    assert run.steps["load"].status == "completed"


# -- code changes ----------------------------------------------------------------------

_MODULE = """
import numpy as np
from engine import pipeline, step

def helper(x):
    return x * HELPER_FACTOR

HELPER_FACTOR = 2

@step
def work(n: int = 3) -> float:
    return float(helper(np.arange(n)).sum()) + OFFSET

@step
def after(value: float) -> float:
    return value + 1

@pipeline(name="codepipe")
def codepipe(n: int = 3):
    after(work(n=n))
"""

_counter = itertools.count()


def import_source(tmp_path: Path, source: str) -> types.ModuleType:
    """Write ``source`` to one file and import it under a fresh module name."""
    path = tmp_path / "user_pipeline.py"
    path.write_text(source)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + next(_counter) * 10**9 + 10**9))
    name = f"user_pipeline_{next(_counter)}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (("+ OFFSET", "+ OFFSET + 0.5"), "code of step work() changed"),
        (("return x * HELPER_FACTOR", "return x * HELPER_FACTOR + 1"), "code of helper() changed"),
        (("HELPER_FACTOR = 2", "HELPER_FACTOR = 3"), "module constant HELPER_FACTOR changed"),
    ],
)
def test_a_code_change_in_the_step_or_a_helper_reruns_it(
    store: Store, tmp_path: Path, edit: tuple[str, str], reason: str
) -> None:
    source = _MODULE + "\nOFFSET = 0\n"
    first = store.run(import_source(tmp_path, source).codepipe)
    assert statuses(first) == {"work": "completed", "after": "completed"}
    same = store.run(import_source(tmp_path, "# a comment\n" + source).codepipe)
    assert statuses(same) == {"work": "cached", "after": "cached"}
    changed = store.run(import_source(tmp_path, source.replace(*edit)).codepipe)
    assert changed.steps["work"].status == "completed"
    assert reason in store.explain(changed.steps["work"])


def test_editing_only_caching_options_keeps_the_cache(store: Store, tmp_path: Path) -> None:
    source = _MODULE + "\nOFFSET = 0\n"
    store.run(import_source(tmp_path, source).codepipe)
    edited = source.replace(
        "@step\ndef work", "@step(enable_cache=True, cache_expires_after=None)\ndef work"
    )
    run = store.run(import_source(tmp_path, edited).codepipe)
    assert statuses(run) == {"work": "cached", "after": "cached"}


def test_cache_version_invalidates(store: Store) -> None:
    def make(version: int) -> Any:
        @step(cache_version=version, name="versioned")
        def versioned() -> int:
            return 1

        @pipeline(name="vp")
        def vp() -> None:
            versioned()

        return vp

    store.run(make(1))
    assert store.run(make(1)).steps["versioned"].status == "cached"
    run = store.run(make(2))
    assert run.steps["versioned"].status == "completed"
    assert store.explain(run.steps["versioned"]) == ["cache_version: '1' -> '2'"]


def test_store_run_refuses_a_plain_function(store: Store) -> None:
    with pytest.raises(PipelineError, match="@pipeline"):
        store.run(lambda: None)


def test_demo_runs_twice_and_the_second_run_is_cached(store: Store) -> None:
    import io

    from rich.console import Console

    from engine.cli.demo import run_demo

    out = io.StringIO()
    run_demo(store, Console(file=out, width=160))
    text = out.getvalue()
    assert "no earlier run" in text and "cache hit" in text
    assert "demo.metrics" in text and "lineage of demo.metrics:1" in text
    runs = store.list_runs("demo")
    assert [r.status for r in runs] == ["completed", "completed"]
    assert {sr.status for sr in runs[1].steps.values()} == {"cached"}
