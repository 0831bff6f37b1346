"""Scenario 3: many small artifacts — how costs grow with the number stored."""

from __future__ import annotations

import random
import statistics
import time
from typing import Any

from bench.common import Context, Result, Row, Series, disk_bytes, latencies, pct
from engine.ledger.artifacts import commit_artifacts, prepare

TITLE = "Many small artifacts"
ABOUT = (
    "A store grown to N small artifacts (a dict each, 10 versions per name). The store is "
    "filled in batches (`prepare` + one `commit_artifacts` per 1,000 artifacts); at each "
    "checkpoint: single durable `save_artifact` latency, fill throughput, bytes on disk per "
    "artifact, `Store.open` time, and `get_artifact` / `list_artifacts(name)` latency p50/p99 "
    "over random names. Flat or logarithmic growth is the goal; rows compare the largest N "
    "with the smallest."
)
PARAMS: dict[str, dict[str, Any]] = {
    "tiny": {"checkpoints": [200, 600], "samples": 30, "saves": 20, "budget_s": 20},
    "small": {
        "checkpoints": [1000, 10_000, 30_000, 100_000],
        "samples": 300,
        "saves": 200,
        "budget_s": 300,
    },
    "full": {
        "checkpoints": [10_000, 30_000, 100_000, 300_000, 1_000_000],
        "samples": 1000,
        "saves": 500,
        "budget_s": 720,
    },
}
BATCH = 1000
PER_NAME = 10


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
            for _ in range(3):
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
        ("disk bytes per artifact", "bytes_per", 1, "B", None),
    ]
    for metric, key, scale, unit, goal in specs:
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
    return res
