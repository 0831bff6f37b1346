"""Scenario 3: many small artifacts — how costs grow with the number stored."""

from __future__ import annotations

import math
import random
import statistics
import time
from typing import Any

from bench import synth
from bench.common import (
    Context,
    Result,
    Row,
    Series,
    disk_bytes,
    fault_stats,
    faulting,
    latencies,
    pct,
)
from engine.ledger.artifacts import commit_artifacts, prepare

TITLE = "Many small artifacts"
ABOUT = (
    "A store grown to N small artifacts (a dict each, 10 versions per name). The store is "
    "filled in batches (`prepare` + one `commit_artifacts` per 1,000 artifacts); at each "
    "checkpoint: single durable `save_artifact` latency, fill throughput, bytes on disk per "
    "artifact, `Store.open` time, and `get_artifact` / `list_artifacts(name)` latency p50/p99 "
    "over random names. Flat or logarithmic growth is the goal; rows compare the largest N "
    "with the smallest. Each `get_artifact` latency pass runs on a freshly opened store over "
    "names not read before, so a call pays the page faults of the index pages it touches first; "
    "a separate pass counts those faults per call (`getrusage`) and reports the latency of the "
    "calls that took none. Last, cache lookups (`engine.pipelines.cache.lookup`, hits on "
    "random keys) on a synthetic pipeline log (`bench/synth.py`) at growing event counts, "
    "with the same fault accounting."
)
PARAMS: dict[str, dict[str, Any]] = {
    "tiny": {
        "checkpoints": [200, 600],
        "samples": 30,
        "saves": 20,
        "budget_s": 20,
        "events": [3000, 9000],
        "lookups": 200,
        "events_budget_s": 20,
    },
    "small": {
        "checkpoints": [1000, 10_000, 30_000, 100_000],
        "samples": 300,
        "saves": 200,
        "budget_s": 300,
        "events": [10_000, 100_000],
        "lookups": 2000,
        "events_budget_s": 60,
    },
    "full": {
        "checkpoints": [10_000, 30_000, 100_000, 300_000, 1_000_000],
        "samples": 1000,
        "saves": 500,
        "budget_s": 720,
        "events": [100_000, 5_000_000],
        "lookups": 10_000,
        "events_budget_s": 150,
    },
}
BATCH = 1000
PER_NAME = 10
OPENS = 7


def _fill(store: Any, start: int, stop: int) -> None:
    for lo in range(start, stop, BATCH):
        prepared = [
            prepare(
                store.ledger, {"i": i, "loss": 0.5 / (i + 1), "tag": "x"}, f"item{i // PER_NAME}"
            )
            for i in range(lo, min(stop, lo + BATCH))
        ]
        commit_artifacts(store.ledger, prepared)


def run(ctx: Context) -> Result:
    from engine import Store

    p = PARAMS[ctx.size]
    res = Result("small_artifacts", TITLE, ABOUT)
    rng = random.Random(0)
    points: list[dict[str, float]] = []
    started = time.perf_counter()
    with ctx.tempdir("small") as tmp:
        path = tmp / "store"
        store = Store.open(path)
        n = 0
        for target in p["checkpoints"]:
            if points and time.perf_counter() - started > p["budget_s"]:
                res.notes.append(
                    f"Stopped at N={n:,}: the next checkpoint ({target:,}) would not fit the "
                    f"{p['budget_s']} s budget of this scenario at size {ctx.size}."
                )
                break
            ctx.log(f"small: filling to {target:,}")
            t = time.perf_counter()
            saves = p["saves"]
            _fill(store, n, target - saves)
            fill_s = time.perf_counter() - t
            filled = target - saves - n
            base = target - saves
            lat = latencies(
                lambda i, base=base, store=store: store.save_artifact(
                    {"i": base + i, "loss": 0.1, "tag": "x"}, f"item{(base + i) // PER_NAME}"
                ),
                saves,
            )
            n = target
            store.close()
            size = disk_bytes(path)
            opens = []
            for _ in range(OPENS):
                t = time.perf_counter()
                store = Store.open(path)
                opens.append(time.perf_counter() - t)
                store.close()
            store = Store.open(path)
            names = [f"item{rng.randrange(n // PER_NAME)}" for _ in range(p["samples"])]
            get_latest = latencies(
                lambda i, names=names, store=store: store.get_artifact(names[i]), len(names)
            )
            get_v = latencies(
                lambda i, names=names, store=store: store.get_artifact(names[i], 5), len(names)
            )
            lst = latencies(
                lambda i, names=names, store=store: store.list_artifacts(names[i]), len(names)
            )
            assert len(store.list_artifacts(names[0])) == PER_NAME
            store.close()
            store = Store.open(path)
            fresh = [f"item{rng.randrange(n // PER_NAME)}" for _ in range(p["samples"])]
            counted = fault_stats(
                "get",
                faulting(
                    lambda i, fresh=fresh, store=store: store.get_artifact(fresh[i]), len(fresh)
                ),
            )
            points.append(
                {
                    "n": n,
                    "fill_per_s": filled / fill_s if fill_s > 0 else float("nan"),
                    "save_p50": pct(lat, 50),
                    "save_p99": pct(lat, 99),
                    "bytes_per": size / n,
                    "open": statistics.median(opens),
                    "get_p50": pct(get_latest, 50),
                    "get_p99": pct(get_latest, 99),
                    "getv_p50": pct(get_v, 50),
                    "list_p50": pct(lst, 50),
                    "list_p99": pct(lst, 99),
                    **counted,
                }
            )
            ctx.log(
                f"small: N={n:,} save p50 {pct(lat, 50) * 1e3:.2f} ms, get p50 "
                f"{pct(get_latest, 50) * 1e6:.0f} µs, {size / n:.0f} B/artifact"
            )
        store.close()

    first, last = points[0], points[-1]
    nf, nl = f"N={int(first['n']):,}", f"N={int(last['n']):,}"
    growth = ("ratio>=", 0.5)
    gtext = "≤ 2x the smallest N"
    specs = [
        ("save_artifact p50", "save_p50", 1e3, "ms", None),
        ("save_artifact p99", "save_p99", 1e3, "ms", None),
        ("get_artifact(name) latest p50", "get_p50", 1e6, "µs", growth),
        ("get_artifact(name) latest p99", "get_p99", 1e6, "µs", growth),
        ("get_artifact(name, 5) p50", "getv_p50", 1e6, "µs", growth),
        ("list_artifacts(name) p50", "list_p50", 1e6, "µs", growth),
        ("list_artifacts(name) p99", "list_p99", 1e6, "µs", growth),
        ("Store.open", "open", 1e3, "ms", growth),
        (
            "get_artifact(name) latest p50, calls without a page fault",
            "get_clean_p50",
            1e6,
            "µs",
            None,
        ),
        (
            "get_artifact(name) latest p99, calls without a page fault",
            "get_clean_p99",
            1e6,
            "µs",
            None,
        ),
        ("page faults per get_artifact(name) latest (minor)", "get_minflt", 1, "", None),
        ("page faults per get_artifact(name) latest (major)", "get_majflt", 1, "", None),
        ("disk bytes per artifact", "bytes_per", 1, "B", None),
    ]
    for metric, key, scale, unit, goal in specs:
        if not (math.isfinite(last[key]) and math.isfinite(first[key])):
            res.notes.append(f"{metric}: no call qualified at {nf} or {nl}.")
            continue
        res.add(
            Row(
                f"{metric} at {nl}",
                last[key] * scale,
                unit,
                first[key] * scale,
                f"same at {nf}",
                goal=goal,
                goal_text=gtext if goal else "",
            )
        )
    res.add(
        Row(
            f"batched fill throughput at {nl}",
            last["fill_per_s"],
            "artifacts/s",
            first["fill_per_s"],
            f"same at {nf}",
            lower_is_better=False,
        )
    )
    res.add(
        Row(
            f"durable save_artifact throughput at {nl}",
            1 / last["save_p50"],
            "saves/s",
            None,
            note="one fsynced LMDB commit (plus pack work) per save",
            lower_is_better=False,
        )
    )
    xs = [pt["n"] for pt in points]
    res.series.append(
        Series(
            "Cost per operation vs artifacts stored",
            "artifacts stored (N)",
            "seconds",
            xs,
            {
                "save_artifact p50": [pt["save_p50"] for pt in points],
                "get_artifact p50": [pt["get_p50"] for pt in points],
                "get_artifact p99": [pt["get_p99"] for pt in points],
                "list_artifacts(name) p50": [pt["list_p50"] for pt in points],
                "list_artifacts(name) p99": [pt["list_p99"] for pt in points],
                "Store.open": [pt["open"] for pt in points],
            },
            loglog=True,
        )
    )
    res.notes.append(
        "Checkpoints: "
        + "; ".join(
            f"N={int(pt['n']):,}: save p50 {pt['save_p50'] * 1e3:.2f} ms, get p50 "
            f"{pt['get_p50'] * 1e6:.0f} µs, list p50 {pt['list_p50'] * 1e6:.0f} µs, open "
            f"{pt['open'] * 1e3:.1f} ms, {pt['bytes_per']:.0f} B/artifact, fill "
            f"{pt['fill_per_s']:,.0f}/s"
            for pt in points
        )
    )
    res.notes.append(
        "Checkpoints, page faults: "
        + "; ".join(
            f"N={int(pt['n']):,}: get_artifact latest {pt['get_minflt']:.2f} minor and "
            f"{pt['get_majflt']:.3f} major faults per call, {pt['get_clean_share']:.0%} of "
            f"calls took none (their p50 {pt['get_clean_p50'] * 1e6:.1f} µs)"
            for pt in points
        )
    )
    _cache_lookups(ctx, p, res)
    return res


def _cache_lookups(ctx: Context, p: dict[str, Any], res: Result) -> None:
    """Cache lookup hits on random keys of a synthetic pipeline log at each
    event count of ``p["events"]``, on a freshly opened store each time."""
    from engine import Store
    from engine.pipelines.cache import lookup

    rng = random.Random(3)
    points: list[dict[str, float]] = []
    with ctx.tempdir("lookups") as tmp:
        path = tmp / "store"
        keys: list[str] = []
        events = 0
        deadline = time.perf_counter() + p["events_budget_s"]
        for target in p["events"]:
            ctx.log(f"small: synthetic log to {target:,} events")
            with Store.open(path) as store:
                gen = synth.generate(
                    store, target - events, budget_s=max(1.0, deadline - time.perf_counter())
                )
                events = store.head
            keys += gen.keys
            with Store.open(path) as store:
                sample = [rng.choice(keys) for _ in range(p["lookups"])]
                got = faulting(lambda i, s=store, k=sample: lookup(s, k[i]), len(sample))
                miss = latencies(lambda i, s=store: lookup(s, f"{i:031x}z"), len(sample))
            points.append(
                {
                    "events": events,
                    "hit_p50": pct(got[0], 50),
                    "hit_p99": pct(got[0], 99),
                    "miss_p99": pct(miss, 99),
                    **fault_stats("hit", got),
                }
            )
            if gen.truncated_by_time:
                res.notes.append(
                    f"Cache lookups: the synthetic log stopped at {events:,} events, not "
                    f"{target:,} (its {p['events_budget_s']} s budget at size {ctx.size})."
                )
                break
    first, last = points[0], points[-1]
    at, base = f"at {int(last['events']):,} events", f"same at {int(first['events']):,} events"
    for metric, key, goal in (
        ("cache lookup hit p50", "hit_p50", None),
        ("cache lookup hit p99", "hit_p99", ("ours<=", 20.0)),
        ("cache lookup miss p99", "miss_p99", ("ours<=", 20.0)),
        ("cache lookup hit p50, calls without a page fault", "hit_clean_p50", None),
        ("cache lookup hit p99, calls without a page fault", "hit_clean_p99", None),
    ):
        if not (math.isfinite(last[key]) and math.isfinite(first[key])):
            res.notes.append(f"{metric}: no call qualified.")
            continue
        res.add(
            Row(
                f"{metric} {at}",
                last[key] * 1e6,
                "µs",
                first[key] * 1e6,
                base,
                goal=goal,
                goal_text="≤ 20 µs" if goal else "",
            )
        )
    res.notes.append(
        "Cache lookups: "
        + "; ".join(
            f"{int(pt['events']):,} events: hit p50 {pt['hit_p50'] * 1e6:.1f} µs, p99 "
            f"{pt['hit_p99'] * 1e6:.1f} µs; calls without a page fault "
            f"{pt['hit_clean_share']:.0%} (p99 {pt['hit_clean_p99'] * 1e6:.1f} µs); page "
            f"faults per call {pt['hit_minflt']:.2f} minor, {pt['hit_majflt']:.3f} major"
            for pt in points
        )
    )
