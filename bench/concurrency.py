"""Scenario 7: several writer processes on one store — throughput, and nothing lost."""

from __future__ import annotations

import multiprocessing as mp
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import Context, Result, Row, Series

TITLE = "Concurrency"
ABOUT = (
    "1, 2, 4 and 8 processes each doing durable small `save_artifact` calls on one store "
    "(a fresh store per count), alternating their own name and one shared name. Total "
    "throughput from the first start to the last end (all start together at a barrier); "
    "then checks that nothing was lost: every version of every name gapless, the log's "
    "sequence numbers gapless with the expected count, and `verify()` ok."
)
PARAMS: dict[str, dict[str, Any]] = {
    "tiny": {"writers": [1, 2], "saves": 15},
    "small": {"writers": [1, 2, 4, 8], "saves": 150},
    "full": {"writers": [1, 2, 4, 8], "saves": 400},
}


def _writer(path: str, wid: int, saves: int, barrier: Any, out: Any) -> None:
    from engine import Store

    s = Store.open(Path(path))
    barrier.wait()
    t0 = time.perf_counter()
    for i in range(saves):
        name = "shared" if i % 2 else f"w{wid}"
        s.save_artifact({"w": wid, "i": i}, name)
    t1 = time.perf_counter()
    s.close()
    out.put((wid, t0, t1))


def _check(path: Path, writers: int, saves: int) -> list[str]:
    from engine import Store

    problems: list[str] = []
    with Store.open(path) as s:
        expected = {f"w{w}": saves - saves // 2 for w in range(writers)}
        expected["shared"] = writers * (saves // 2)
        for name, count in expected.items():
            versions = [a.version for a in s.list_artifacts(name)]
            if versions != list(range(1, count + 1)):
                problems.append(f"{name}: versions {versions[:5]}... not 1..{count}")
        seqs = [e.seq for e in s.events()]
        if seqs != list(range(1, len(seqs) + 1)):
            problems.append("log sequence numbers have gaps")
        if s.stats()["artifacts"] != writers * saves:
            problems.append(f"{s.stats()['artifacts']} artifacts, expected {writers * saves}")
        report = s.verify()
        if not report.ok:
            problems += report.problems[:5]
    return problems


def run(ctx: Context) -> Result:
    from engine import Store

    p = PARAMS[ctx.size]
    res = Result("concurrency", TITLE, ABOUT)
    # fork is fastest; Python 3.12+ warns about forking a process with threads.
    mpc = mp.get_context("fork" if sys.version_info < (3, 12) else "forkserver")
    rates: dict[int, float] = {}
    for n in p["writers"]:
        ctx.log(f"concurrency: {n} writers x {p['saves']} saves")
        with ctx.tempdir("conc") as tmp:
            path = tmp / "s"
            Store.open(path).close()
            barrier = mpc.Barrier(n)
            q = mpc.Queue()
            procs = [
                mpc.Process(target=_writer, args=(str(path), w, p["saves"], barrier, q))
                for w in range(n)
            ]
            for pr in procs:
                pr.start()
            got = [q.get(timeout=600) for _ in procs]
            for pr in procs:
                pr.join(timeout=60)
            codes = [pr.exitcode for pr in procs]
            wall = max(g[2] for g in got) - min(g[1] for g in got)
            rates[n] = n * p["saves"] / wall
            problems = _check(path, n, p["saves"])
            if any(codes):
                problems.append(f"writer exit codes {codes}")
        base = rates[p["writers"][0]]
        res.add(
            Row(
                f"{n} writers: total saves/s",
                rates[n],
                "saves/s",
                base,
                "1 writer",
                lower_is_better=False,
            )
        )
        res.add(
            Row(
                f"{n} writers: problems found (lost or gapped)",
                float(len(problems)),
                "",
                goal=("ours<=", 0),
                goal_text="0",
                note="; ".join(problems)
                if problems
                else "versions gapless, log gapless, verify ok",
            )
        )
    res.series.append(
        Series(
            "Durable saves/s by writer processes",
            "writer processes",
            "saves/s (total)",
            [float(n) for n in rates],
            {"artledger": list(rates.values())},
        )
    )
    res.notes.append(
        "Writers serialise on LMDB's write lock and each save is one fsynced commit, so on "
        "2 cores the total stays near the single-writer rate; the point is that nothing is lost."
    )
    return res
