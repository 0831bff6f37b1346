"""The dashboard at scale: server time per page against the same query through
the Python API, live and ``as_of``.

``python -m bench.ui --runs 10000 --steps 10 --out bench/results/ui.md`` builds
a store of 10,000 runs of 10 steps (100,000 artifact versions under 1,000
names, every 100th tagged ``best``; about 320,000 events, appended in batches
through the live fold as ``bench/synth.py`` does), then times every page:

- *server*: the whole request in process (routing, query, template or JSON,
  headers) through the ASGI application, no network;
- *API*: what a Python user calls for the same answer with the public API
  (``list_runs``, ``list_artifacts``, ``get_run`` + ``explain``, ``lineage``,
  ``events``), where the dashboard uses ``engine.query.pages`` instead;
- each live and ``as_of`` half-way through the log (the folded view is cached by
  the server; the one-off fold is reported on its own).

Medians of ``--repeats`` requests after one warm-up. ``tests/test_bench_ui.py``
runs a tiny store so this cannot rot.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

GOAL_MS = 200.0


@dataclass
class Row:
    page: str
    server_ms: float
    api_ms: float | None
    past_server_ms: float
    past_api_ms: float | None
    status: int


def build(path: Path, runs: int, steps: int, pipelines: int = 100) -> dict[str, Any]:
    """A store of ``runs`` runs of ``steps`` chained steps each (one artifact per step)."""
    from bench.synth import seed_artifact
    from engine import Store
    from engine.projections import apply

    t0 = time.perf_counter()
    with Store.open(path) as store:
        seed, base = seed_artifact(store)
        batch: list[tuple[str, dict[str, Any]]] = []
        n = 0

        def flush() -> None:
            records = list(batch)

            def fn(txn: Any) -> None:
                for e in store.ledger.log.append(txn, records):
                    apply(txn, e)

            store.ledger.kv.write(fn)
            batch.clear()

        for r in range(runs):
            pipe = f"pipe{r % pipelines:02d}"
            rid = f"r{r:015x}"
            batch.append(("run.started", {"id": rid, "pipeline": pipe, "params": {"i": r}}))
            prev = seed.id
            for k in range(steps):
                sid, aid, inv = f"s{n:015x}", f"a{n:015x}", f"step_{k}"
                batch.append(
                    (
                        "step.started",
                        {
                            "id": sid,
                            "run": rid,
                            "invocation": inv,
                            "step": inv,
                            "cache_key": f"{n:032x}",
                            "components": None,
                            "cache_miss_reason": "parameter i changed",
                            "pipeline": pipe,
                        },
                    )
                )
                d = dict(base)
                d.update(
                    id=aid,
                    name=f"{pipe}.{inv}.output",
                    version=r // pipelines + 1,
                    visualizations=[],
                    user_metadata={"n": n},
                    tags=["best"] if n % 100 == 0 else [],
                    producer=sid,
                    run=rid,
                    size=int(base["size"]),
                )
                batch.append(("artifact.written", d))
                batch.append(
                    (
                        "step.completed",
                        {"id": sid, "run": rid, "inputs": {"x": prev}, "outputs": {"output": aid}},
                    )
                )
                prev = aid
                n += 1
            batch.append(("run.completed", {"id": rid}))
            if len(batch) >= 20_000:
                flush()
        if batch:
            flush()
        head = store.head
    return {"events": head, "versions": n, "build_s": time.perf_counter() - t0}


async def _get(app: Any, path: str, query: str = "") -> tuple[int, int]:
    status = 0
    size = 0

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status, size
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            size += len(message.get("body", b""))

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "headers": [(b"host", b"bench")],
        "client": ("127.0.0.1", 1),
        "server": ("bench", 80),
        "root_path": "",
    }
    await app(scope, receive, send)
    return status, size


def _rss_mib() -> float:
    """Resident memory of this process, MiB (Linux; 0 elsewhere)."""
    import gc

    gc.collect()
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0.0
    return pages * 4096 / 2**20


def _median_ms(fn: Callable[[], Any], repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def _server(
    loop: asyncio.AbstractEventLoop, app: Any, path: str, query: str, statuses: set[int]
) -> Callable[[], None]:
    def call() -> None:
        statuses.add(loop.run_until_complete(_get(app, path, query))[0])

    return call


def measure(path: Path, repeats: int = 7) -> tuple[list[Row], dict[str, Any]]:
    """Time every page of the store at ``path``, live and as of half-way."""
    from engine import Store
    from engine.ui.app import create_app

    loop = asyncio.new_event_loop()
    rows: list[Row] = []
    info: dict[str, Any] = {}
    with Store.open(path, readonly=True) as store:
        app = create_app(store)
        head = store.head
        past_seq = head // 2
        rss = _rss_mib()
        t = time.perf_counter()
        past = store.as_of(past_seq)
        info["fold_s"] = time.perf_counter() - t
        info["view_mib"] = _rss_mib() - rss
        info["head"], info["as_of"] = head, past_seq
        # Warm the server's cache for the as_of view (the one-off fold above, again).
        t = time.perf_counter()
        loop.run_until_complete(_get(app, "/api/", f"as_of={past_seq}"))
        info["server_first_as_of_s"] = time.perf_counter() - t
        # The slider moved forward a little: a copy of the cached view plus the difference.
        step = max(1, head // 100)
        t = time.perf_counter()
        loop.run_until_complete(_get(app, "/api/", f"as_of={past_seq + step}"))
        info["advance_s"], info["advance_events"] = time.perf_counter() - t, step

        def pick(cat: Any) -> dict[str, Any]:
            run = cat.list_runs()[len(cat.list_runs()) // 2]
            art = (
                run.steps["step_5"].output if "step_5" in run.steps else run.steps["step_0"].output
            )
            return {"run": run.id, "name": art.name, "version": art.version}

        live_t, past_t = pick(store), pick(past)

        def api_runs(cat: Any) -> Any:
            runs = list(reversed(cat.list_runs()))[:50]
            return [[s.status for s in r.steps.values()] for r in runs]

        def api_run(cat: Any, t: dict[str, Any]) -> Any:
            run = cat.get_run(t["run"])
            from engine.pipelines.explain import explain, run_graph

            return [(explain(s), s.inputs, s.outputs) for s in run.steps.values()], run_graph(
                cat, run
            )

        def api_artifacts(cat: Any) -> Any:
            latest: dict[str, Any] = {}
            for a in cat.list_artifacts():
                latest[a.name] = a
            return sorted(latest)[:50]

        def api_artifact(cat: Any, t: dict[str, Any]) -> Any:
            a = cat.get_artifact(t["name"], t["version"])
            return a.metadata, a.producer, cat.consumers(a), a.visualizations, a.files

        def api_lineage(cat: Any, t: dict[str, Any]) -> Any:
            return cat.lineage(cat.get_artifact(t["name"], t["version"]), "upstream", depth=8)

        def api_log(cat: Any) -> Any:
            h = cat.head
            return list(cat.events(h - 99, h + 1))

        pages: list[tuple[str, Callable[[dict[str, Any]], str], str, Callable[..., Any] | None]] = [
            ("runs `/`", lambda t: "/", "", lambda c, t: api_runs(c)),
            ("run `/runs/{id}`", lambda t: f"/runs/{t['run']}", "", api_run),
            ("artifacts `/artifacts`", lambda t: "/artifacts", "", lambda c, t: api_artifacts(c)),
            (
                "artifacts by tag `/artifacts?tag=best`",
                lambda t: "/artifacts",
                "tag=best",
                lambda c, t: c.list_artifacts(tag="best"),
            ),
            (
                "artifact `/artifacts/{name}/{version}`",
                lambda t: f"/artifacts/{t['name']}/{t['version']}",
                "",
                api_artifact,
            ),
            (
                "lineage `/lineage/...` (upstream, depth 8)",
                lambda t: f"/lineage/{t['name']}/{t['version']}",
                "direction=upstream",
                api_lineage,
            ),
            ("log `/log`", lambda t: "/log", "", lambda c, t: api_log(c)),
            ("runs JSON `/api/`", lambda t: "/api/", "", None),
            ("run JSON `/api/runs/{id}`", lambda t: f"/api/runs/{t['run']}", "", None),
        ]
        for label, path_of, query, api in pages:
            pq = f"{query}&as_of={past_seq}" if query else f"as_of={past_seq}"
            statuses: set[int] = set()
            live = _median_ms(_server(loop, app, path_of(live_t), query, statuses), repeats)
            then = _median_ms(_server(loop, app, path_of(past_t), pq, statuses), repeats)
            a_live = a_past = None
            if api is not None:
                a_live = _median_ms(partial(api, store, live_t), max(1, repeats // 2))
                a_past = _median_ms(partial(api, past, past_t), max(1, repeats // 2))
            rows.append(Row(label, live, a_live, then, a_past, max(statuses)))
        info["folds"] = app.state.dashboard.views.folds
        info["load"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
        info["cores"] = os.cpu_count()
    loop.close()
    return rows, info


def report(rows: list[Row], info: dict[str, Any], command: str) -> str:
    def ms(v: float | None) -> str:
        return "—" if v is None else f"{v:.1f}"

    worst = max(r.server_ms for r in rows)
    worst_past = max(r.past_server_ms for r in rows)
    ratio = max(r.past_server_ms / r.server_ms for r in rows)
    lines = [
        "# Dashboard speed (`artledger ui`)",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {platform.processor() or platform.machine()}, Python "
        f"{platform.python_version()}, {platform.system()} {platform.release()}, "
        f"{info['cores']} cores shared with other work (1-minute load average "
        f"{info['load']:.1f} at the end of the run).",
        "",
        f"Store: {info['runs']:,} runs of {info['steps']} steps, {info['versions']:,} artifact "
        f"versions, {info['events']:,} events (built in {info['build_s']:.1f} s). "
        f"`as_of` pages are as of event {info['as_of']:,} of {info['head']:,}.",
        "",
        "Server time is the whole request in process through the ASGI app (routing, query, "
        "template or JSON); API is the same answer through the public Python API. Medians, ms.",
        "",
        "| page | HTTP status | server live | API live | server as_of | API as_of | as_of / live |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r.page} | {r.status} | {ms(r.server_ms)} | {ms(r.api_ms)} | "
            f"{ms(r.past_server_ms)} | {ms(r.past_api_ms)} | {r.past_server_ms / r.server_ms:.2f} |"
        )
    lines += [
        "",
        f"- Slowest page: {worst:.1f} ms live, {worst_past:.1f} ms as_of "
        f"(goal ≤ {GOAL_MS:.0f} ms: {'met' if max(worst, worst_past) <= GOAL_MS else 'NOT met'}); "
        f"as_of / live at most {ratio:.2f}x (goal ≤ 2x: {'met' if ratio <= 2 else 'NOT met'}).",
        f"- Folding the log up to event {info['as_of']:,} (`store.as_of`) takes "
        f"{info['fold_s']:.2f} s once; the server keeps the folded view (the last 4 points in "
        f"history), so only the first request at a new point pays it "
        f"({info['server_first_as_of_s']:.2f} s here). A point later than a cached one "
        f"starts from a copy of it: {info['advance_events']:,} events further on, the first "
        f"request took {info['advance_s']:.2f} s. One folded view holds about "
        f"{info['view_mib']:.0f} MiB. Folds during the timed requests: {info['folds']}.",
        "- The API column for runs and artifacts is `list_runs()` / `list_artifacts()`, which "
        "read every record; the dashboard reads one page through `engine.query.pages`.",
        "",
    ]
    return "\n".join(lines)


def run(runs: int, steps: int, repeats: int, workdir: Path) -> tuple[list[Row], dict[str, Any]]:
    path = workdir / "ui-bench-store"
    info = build(path, runs, steps, pipelines=min(100, runs))
    rows, more = measure(path, repeats)
    info.update(more, runs=runs, steps=steps)
    return rows, info


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.ui", description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=10_000)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--out", type=Path, default=None, help="write the Markdown report here")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="artledger-ui-bench-") as tmp:
        rows, info = run(args.runs, args.steps, args.repeats, Path(tmp))
    command = "python -m bench.ui " + " ".join(argv if argv is not None else sys.argv[1:])
    text = report(rows, info, command.strip())
    if args.out:
        args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
