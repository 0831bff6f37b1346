"""Scenario 6: history at scale — rebuild, as_of, lineage depth, cache lookups."""

from __future__ import annotations

import random
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
    median_time,
    pct,
)

TITLE = "History at scale"
ABOUT = (
    "A long synthetic log of pipeline-shaped events (step.started, artifact.written, "
    "step.completed per step; runs of 1,000 steps; the first 10,000 steps one chain across "
    "runs), appended in batches through the live fold. Then: `rebuild()` events/s against "
    "the floor of scanning and unpacking the same log in the same run; opening `as_of` views "
    "(they read the temporal index) and their queries against the same live queries; "
    "upstream lineage at depths 10 to 10,000; cache lookup p50/p99 (`pipelines.cache.lookup`)."
)
PARAMS: dict[str, dict[str, Any]] = {
    "tiny": {
        "events": 3_000,
        "deep": 300,
        "depths": [10, 100, 300],
        "as_of": [1_000],
        "budget_s": 20,
        "lookups": 50,
    },
    "small": {
        "events": 300_000,
        "deep": 10_000,
        "depths": [10, 100, 1000, 10_000],
        "as_of": [10_000, 100_000],
        "budget_s": 60,
        "lookups": 2000,
    },
    "full": {
        "events": 10_000_000,
        "deep": 10_000,
        "depths": [10, 100, 1000, 10_000],
        "as_of": [100_000, 500_000],
        "budget_s": 200,
        "lookups": 10_000,
    },
}


def _scan_floor(store: Any) -> tuple[int, float]:
    """Events/s of reading and unpacking the whole log in one snapshot."""
    t = time.perf_counter()
    with store.ledger.kv.snapshot() as txn:
        n = sum(1 for _ in store.ledger.log.read(txn))
    return n, time.perf_counter() - t


def _view_queries(ctx: Context, res: Result, s: Any, gen: Any) -> None:
    """Queries on a view halfway through the log against the same live queries."""
    from engine.pipelines.cache import lookup

    mid = s.head // 2
    view = s.as_of(mid)
    rng = random.Random(5)
    names = [s.get_artifact_by_id(rng.choice(gen.chain)).name for _ in range(200)]
    early = gen.keys[: max(1, len(gen.keys) * 4 // 10)]  # steps folded before the middle
    keys = [rng.choice(early) for _ in range(p_lookups(ctx))]
    depth = min(len(gen.chain), 1000)
    deep = s.get_artifact_by_id(gen.chain[depth - 1])
    checks = (
        ("get_artifact(name) latest p50", lambda src, i: src.get_artifact(names[i % len(names)])),
        ("cache lookup hit p50", lambda src, i: lookup(src, keys[i % len(keys)])),
        (f"upstream lineage, depth {depth:,}", lambda src, i: src.lineage(deep)),
    )
    for label, fn in checks:
        ctx.log(f"history: as_of view vs live: {label}")
        n = 20 if "lineage" in label else len(keys)
        live = pct(latencies(lambda i, fn=fn: fn(s, i), n), 50)
        past = pct(latencies(lambda i, fn=fn: fn(view, i), n), 50)
        scale, unit = (1e3, "ms") if "lineage" in label else (1e6, "µs")
        res.add(
            Row(
                f"as_of({mid:,}) view: {label}",
                past * scale,
                unit,
                live * scale,
                "the same query live",
                goal=("ratio>=", 0.5),
            )
        )


def p_lookups(ctx: Context) -> int:
    return int(PARAMS[ctx.size]["lookups"])


def run(ctx: Context) -> Result:
    from engine import Store

    p = PARAMS[ctx.size]
    res = Result("history", TITLE, ABOUT)
    with ctx.tempdir("history") as tmp, Store.open(tmp / "s") as s:
        ctx.log(f"history: generating up to {p['events']:,} events ({p['budget_s']} s budget)")
        last_log = [time.perf_counter()]

        def progress(n: int) -> None:
            if time.perf_counter() - last_log[0] > 15:
                last_log[0] = time.perf_counter()
                ctx.log(f"history: {n:,} events")

        gen = synth.generate(
            s, p["events"], deep=p["deep"], budget_s=p["budget_s"], progress=progress
        )
        head = s.head
        if gen.truncated_by_time:
            res.notes.append(
                f"Generated {head:,} events, not {p['events']:,}: generation "
                f"({gen.events / gen.seconds:,.0f} events/s) hit its {p['budget_s']} s budget; "
                f"at the rebuild rate measured below the full count would not fit the "
                f"30-minute run."
            )
        res.add(
            Row(
                "synthetic append + live fold",
                gen.events / gen.seconds,
                "events/s",
                lower_is_better=False,
                note=f"{gen.events:,} events in {gen.seconds:.0f} s, batches of "
                f"{synth.BATCH_STEPS * 3:,} per transaction (batched fold, temporal index "
                f"included); "
                f"{disk_bytes(tmp / 's') / head:,.0f} B on disk per event",
            )
        )
        ctx.log(f"history: scan floor over {head:,} events")
        n, scan_s = _scan_floor(s)
        ctx.log("history: rebuild")
        t = time.perf_counter()
        folded = s.rebuild()
        rebuild_s = time.perf_counter() - t
        res.add(
            Row(
                f"rebuild() over {folded:,} events",
                folded / rebuild_s,
                "events/s",
                n / scan_s,
                "scan+unpack floor",
                lower_is_better=False,
                goal=("ours>=", 200_000),
                note=f"{rebuild_s:.1f} s; floor {scan_s:.1f} s",
            )
        )
        points = sorted({q for q in p["as_of"] if q <= head} | {head // 2, head})
        for seq in points:
            ctx.log(f"history: as_of({seq:,})")
            t_as = median_time(lambda _, seq=seq: s.as_of(seq), max(3, ctx.repeats))
            how = "reads the temporal index" if s.as_of(seq).indexed else "folds the log"
            res.add(
                Row(
                    f"as_of({seq:,})",
                    t_as * 1e3,
                    "ms",
                    goal=("ours<=", 10.0),
                    note=f"opening the view ({how}); {head:,} events in the store",
                )
            )
        _view_queries(ctx, res, s, gen)
        ctx.log("history: lineage at depth")
        lin_x: list[float] = []
        lin_y: list[float | None] = []
        for d in p["depths"]:
            if d > len(gen.chain):
                continue
            art = s.get_artifact_by_id(gen.chain[d - 1])
            t_l = median_time(lambda _, art=art: s.lineage(art), max(1, ctx.repeats))
            g = s.lineage(art)
            lin_x.append(d)
            lin_y.append(t_l)
            res.add(
                Row(
                    f"upstream lineage, depth {d:,}",
                    t_l * 1e3,
                    "ms",
                    goal=("ours<=", 20.0) if d == 1000 else None,
                    note=f"{len(g.nodes):,} nodes; {t_l / len(g.nodes) * 1e6:.1f} µs per node",
                )
            )
        res.series.append(
            Series(
                "Upstream lineage vs depth",
                "depth (steps)",
                "seconds",
                lin_x,
                {"lineage": lin_y},
                loglog=True,
            )
        )
        try:
            from engine.pipelines.cache import lookup
        except ImportError:
            res.notes.append(
                "engine.pipelines.cache.lookup is not available: cache lookups skipped."
            )
        else:
            rng = random.Random(3)
            keys = [rng.choice(gen.keys) for _ in range(p["lookups"])]
            got = faulting(lambda i: lookup(s, keys[i]), len(keys))
            lat = got[0]
            miss = latencies(lambda i: lookup(s, f"{i:031x}z"), len(keys))
            st = fault_stats("hit", got)
            faults = (
                f"{st['hit_minflt']:.2f} minor and {st['hit_majflt']:.2f} major page faults per "
                f"call; {st['hit_clean_share']:.0%} of calls took none"
            )
            for q in (50, 99):
                res.add(
                    Row(
                        f"cache lookup hit p{q}",
                        pct(lat, q) * 1e6,
                        "µs",
                        goal=("ours<=", 20.0),
                        note=faults if q == 99 else "",
                    )
                )
                res.add(
                    Row(
                        f"cache lookup hit p{q}, calls without a page fault",
                        st[f"hit_clean_p{q}"] * 1e6,
                        "µs",
                    )
                )
            res.add(Row("cache lookup miss p99", pct(miss, 99) * 1e6, "µs", goal=("ours<=", 20.0)))
            res.notes.append(
                "Cache lookups run on the store just written and rebuilt: random keys touch "
                "index pages for the first time (a page fault each), and this machine's kernel "
                "evicts idle page cache, so some faults read the disk. The rows without a page "
                "fault show the lookup itself."
            )
    return res
