"""Scenario 5: pipelines — per-step overhead executed and cached, lineage, lookups, as_of."""

from __future__ import annotations

import itertools
import random
import time
from typing import Any

from bench import synth
from bench.common import Context, Result, Row, latencies, median_time, pct

TITLE = "Pipelines"
ABOUT = (
    "A chain of trivial steps (each reads the previous output) and a wide fan-out (one "
    "source, many leaves), run once executed (new input: every step misses) and again fully "
    "cached, through `store.run`; per-step cost against `joblib.Memory` on the same function "
    "(miss and hit) in the same run. A chain of steps doing 50 ms of work each (a sleep): the "
    "overhead per step over calling the same function directly. The lineage of the chain's "
    "last artifact, a cache lookup (`pipelines.cache.lookup`), and opening an `as_of` view "
    "of a 100k-event log (synthetic pipeline events)."
)
PARAMS: dict[str, dict[str, Any]] = {
    "tiny": {"chain": 20, "fan": 20, "events": 3_000, "lookups": 50, "work": 4},
    "small": {"chain": 1000, "fan": 1000, "events": 100_000, "lookups": 2000, "work": 20},
    "full": {"chain": 1000, "fan": 1000, "events": 100_000, "lookups": 5000, "work": 20},
}
_seed = itertools.count(int(time.time()) % 100_000 * 10_000)


def _pipeline_api() -> str | None:
    """None when the pipeline API is usable, else why not."""
    try:
        import engine
        from engine.store import Store

        engine.step  # noqa: B018
        engine.pipeline  # noqa: B018
        if not hasattr(Store, "run"):
            return "Store.run is missing"
        import bench._pipeline_steps  # noqa: F401
    except Exception as e:
        return f"{type(e).__name__}: {e}"
    return None


def _joblib(ctx: Context, tmp: Any, length: int) -> tuple[float, float]:
    import joblib

    from bench._pipeline_steps import inc_plain

    mem = joblib.Memory(str(tmp / "joblib"), verbose=0)
    f = mem.cache(inc_plain)
    x0 = next(_seed) * 1000

    def go(_: Any) -> None:
        x = x0
        for _ in range(length):
            x = f(x)

    miss = median_time(go, 1)
    hit = median_time(go, max(1, ctx.repeats))
    return miss / length, hit / length


def _run_pipelines(ctx: Context, res: Result, tmp: Any) -> None:
    from bench import _pipeline_steps as ps
    from engine import Store

    p = PARAMS[ctx.size]
    with Store.open(tmp / "pipes") as s:
        s.run(ps.chain, n=-1, length=3)  # warm: code fingerprints, imports
        for name, pipe, kw, size in (
            ("chain", ps.chain, "length", p["chain"]),
            ("fan-out", ps.fanout, "width", p["fan"]),
        ):
            ctx.log(f"pipelines: {size}-step {name}")
            n = next(_seed)
            t = time.perf_counter()
            run = s.run(pipe, n=n, **{kw: size})
            executed = (time.perf_counter() - t) / size
            statuses = {st.status for st in run.steps.values()}
            cached = (
                median_time(
                    lambda _, pipe=pipe, n=n, kw=kw, size=size: s.run(pipe, n=n, **{kw: size}),
                    ctx.repeats,
                )
                / size
            )
            again = s.run(pipe, n=n, **{kw: size})
            hits = sum(st.status == "cached" for st in again.steps.values())
            jl_miss, jl_hit = _joblib(ctx, tmp / name, size)
            res.add(
                Row(
                    f"{size}-step {name}: executed step",
                    executed * 1e3,
                    "ms",
                    jl_miss * 1e3,
                    "joblib.Memory miss",
                    goal=("ours<=", 0.3 if name == "chain" else 1.0),
                    note=f"first run statuses: {sorted(statuses)}",
                )
            )
            if name == "chain":
                res.add(
                    Row(
                        f"{size}-step chain: executed step vs joblib.Memory miss",
                        executed * 1e3,
                        "ms",
                        jl_miss * 1e3,
                        "joblib.Memory miss",
                        goal=("ratio>=", 2.0),
                        goal_text="ours ≤ 0.5x the baseline",
                        note="the same run's figures as the row above",
                    )
                )
            res.add(
                Row(
                    f"{size}-step {name}: cached step",
                    cached * 1e3,
                    "ms",
                    jl_hit * 1e3,
                    "joblib.Memory hit",
                    goal=("ours<=", 0.2),
                    note=f"{hits} of {len(again.steps)} steps cached on rerun",
                )
            )
            if name == "chain":
                last = list(run.steps.values())[-1].output
                lin = median_time(lambda _, a=last: s.lineage(a), ctx.repeats)
                g = s.lineage(last)
                res.add(
                    Row(
                        f"lineage of a {size}-step chain (pipeline run)",
                        lin * 1e3,
                        "ms",
                        goal=("ours<=", 20.0),
                        note=f"{len(g.nodes)} nodes, {len(g.edges)} edges",
                    )
                )
        _work_overhead(ctx, res, s)


def _work_overhead(ctx: Context, res: Result, s: Any) -> None:
    """Steps with 50 ms of work each: time per step over the plain call's."""
    from bench import _pipeline_steps as ps

    length, ms = PARAMS[ctx.size]["work"], 50.0
    ctx.log(f"pipelines: {length} steps of {ms:g} ms")
    t = time.perf_counter()
    run = s.run(ps.work_chain, n=next(_seed), length=length, ms=ms)
    total = time.perf_counter() - t
    assert all(st.status == "completed" for st in run.steps.values())
    t = time.perf_counter()
    for i in range(length):
        ps.work_plain(i, ms)
    plain = (time.perf_counter() - t) / length
    # Everything the run costs beyond the work itself is overhead: the trivial
    # first step, the run's start and end, every step's commits.
    overhead = (total - plain * length) / (plain * length) * 100
    res.add(
        Row(
            f"a step with {ms:g} ms of work: overhead",
            overhead,
            "%",
            goal=("ours<=", 5.0),
            note=(
                f"{length} steps: {total / length * 1e3:.2f} ms per step (the whole run) "
                f"against {plain * 1e3:.2f} ms for the plain call"
            ),
        )
    )


def run(ctx: Context) -> Result:
    from engine import Store

    p = PARAMS[ctx.size]
    res = Result("pipelines", TITLE, ABOUT)
    with ctx.tempdir("pipelines") as tmp:
        why = _pipeline_api()
        if why is None:
            _run_pipelines(ctx, res, tmp)
        else:
            res.notes.append(
                f"Executed/cached step overhead skipped: the pipeline API is not usable ({why})."
            )
        ctx.log(f"pipelines: {p['events']:,} synthetic events")
        with Store.open(tmp / "synth") as s:
            gen = synth.generate(s, p["events"], deep=p["chain"])
            last = s.get_artifact_by_id(gen.chain[-1])
            lin = median_time(lambda _: s.lineage(last), ctx.repeats)
            g = s.lineage(last)
            res.add(
                Row(
                    f"lineage of a {p['chain']}-step chain (synthetic log)",
                    lin * 1e3,
                    "ms",
                    goal=("ours<=", 20.0),
                    note=f"{len(g.nodes)} nodes; {gen.events:,} events in the store",
                )
            )
            try:
                from engine.pipelines.cache import lookup
            except ImportError:
                lookup = None
            if lookup is not None:
                rng = random.Random(1)
                keys = [rng.choice(gen.keys) for _ in range(p["lookups"])]
                assert lookup(s, keys[0]) is not None
                lat = latencies(lambda i: lookup(s, keys[i]), len(keys))
                for q in (50, 99):
                    res.add(
                        Row(
                            f"cache lookup (hit) p{q}",
                            pct(lat, q) * 1e6,
                            "µs",
                            goal=("ours<=", 20.0),
                            note=f"cache lookup over {gen.steps:,} cached step runs",
                        )
                    )
            else:
                res.notes.append(
                    "engine.pipelines.cache.lookup is not available: cache lookup skipped."
                )
            head = s.head
            t = median_time(lambda _: s.as_of(head), max(3, ctx.repeats))
            how = "reads the temporal index" if s.as_of(head).indexed else "folds the log"
            res.add(
                Row(
                    f"as_of over {head:,} events",
                    t * 1e3,
                    "ms",
                    goal=("ours<=", 10.0),
                    note=f"opening the view ({how})",
                )
            )
    return res
