"""Shared stores on real servers: PostgreSQL 15 for the log and SeaweedFS as
the S3 object store, both started by the tests (tests/servers_pg.py,
tests/servers_s3.py). Each "machine" is its own replica directory; the
slow tests run writers in separate processes."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from servers_pg import PgServer, pg_server  # noqa: F401 - fixtures
from servers_s3 import S3Server, s3_server  # noqa: F401 - fixtures

from engine import Store, pipeline, step
from engine.errors import SharedStoreUnavailableError

ROOT = Path(__file__).resolve().parent.parent


class Team:
    """One shared store (a fresh database and bucket prefix) and its machines."""

    def __init__(self, pg: PgServer, s3: S3Server, tmp: Path, name: str) -> None:
        self.pg, self.s3, self.tmp = pg, s3, tmp
        self.log = pg.new_database("shared")
        s3.make_bucket("team")
        self.prefix = f"{name}-{os.getpid()}-{time.monotonic_ns()}"
        self.chunks = f"s3://team/{self.prefix}"
        self.env = {**os.environ, **s3.env}
        self.opened: list[Store] = []

    def machine(self, name: str, **kw: object) -> Store:
        s = Store.open(self.tmp / name, log=self.log, chunks=self.chunks, **kw)  # type: ignore[arg-type]
        self.opened.append(s)
        return s

    def objects(self) -> list[tuple[str, int]]:
        client = self.s3.client()
        out: list[tuple[str, int]] = []
        for page in client.get_paginator("list_objects_v2").paginate(
            Bucket="team", Prefix=self.prefix + "/"
        ):
            out += [(o["Key"], o["Size"]) for o in page.get("Contents", [])]
        return out

    def close(self) -> None:
        for s in self.opened:
            with contextlib.suppress(Exception):
                s.close()


@pytest.fixture
def team(
    pg_server: PgServer,  # noqa: F811
    s3_server: S3Server,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> Iterator[Team]:
    for k, v in s3_server.env.items():
        monkeypatch.setenv(k, v)
    t = Team(pg_server, s3_server, tmp_path, request.node.name[:40].replace("[", "-"))
    yield t
    t.close()


def test_two_machines_share_one_store(team: Team) -> None:
    a = team.machine("a")
    data = np.arange(300_000, dtype=np.int64)
    a.save_artifact(data, "features")
    b = team.machine("b")
    np.testing.assert_array_equal(b.load_artifact("features"), data)
    b.save_artifact(data * 2, "features")
    a.save_artifact({"k": 1}, "features")  # a catches up under the lock
    for s in (a, b):
        s.sync()
        assert [v.version for v in s.list_artifacts("features")] == [1, 2, 3]
        assert s.verify().ok, s.verify().problems
    # The URLs are recorded (without secrets): the path alone reconnects.
    recorded = json.loads((team.tmp / "a" / "shared.json").read_text())
    assert recorded == {"log": team.log, "chunks": team.chunks}
    a.close()
    again = Store.open(team.tmp / "a")
    team.opened.append(again)
    assert again.load_artifact("features", version=3) == {"k": 1}


def test_a_pipeline_on_b_after_a_is_cached_and_lineage_crosses(team: Team) -> None:
    calls: list[int] = []

    @step
    def load(n: int) -> np.ndarray:
        calls.append(n)
        return np.arange(n, dtype=np.float64)

    @step
    def total(x: np.ndarray) -> float:
        return float(x.sum())

    @pipeline
    def p(n: int) -> float:
        return total(load(n))

    a, b = team.machine("a"), team.machine("b")
    a.run(p, n=50_000)
    run = b.run(p, n=50_000)
    assert calls == [50_000]
    assert {s.status for s in run.steps.values()} == {"cached"}
    out = run.steps["total"].outputs["output"]
    up = b.lineage(out, "upstream")
    assert any(n["kind"] == "step" and "load" in n["name"] for n in up.nodes.values()), up.nodes


def test_the_same_bytes_from_two_machines_are_stored_once(team: Team) -> None:
    a, b = team.machine("a"), team.machine("b")
    big = np.random.default_rng(7).random(4 << 20)  # 32 MiB of float64
    a.save_artifact(big, "weights")
    before = team.objects()
    b.save_artifact(big, "weights-copy")
    after = team.objects()
    assert after == before
    assert sum(size for _, size in after) < big.nbytes * 1.01
    a.sync()
    np.testing.assert_array_equal(a.load_artifact("weights-copy"), big)


def test_a_deleted_replica_is_rebuilt_equal(team: Team) -> None:
    a = team.machine("a")
    for i in range(5):
        a.save_artifact(np.full(10_000, i), f"n{i}")
    with a.ledger.snapshot() as txn:
        events = list(txn.scan("events"))
    a.close()
    import shutil

    shutil.rmtree(team.tmp / "a")
    b = team.machine("a")
    with b.ledger.snapshot() as txn:
        assert list(txn.scan("events")) == events
    np.testing.assert_array_equal(b.load_artifact("n4"), np.full(10_000, 4))
    assert b.verify().ok


def test_a_damaged_replica_is_moved_aside_and_rebuilt(team: Team) -> None:
    a = team.machine("a")
    a.save_artifact(np.arange(50_000), "x")
    a.close()
    data = team.tmp / "a" / "ledger" / "data.mdb"
    with open(data, "r+b") as f:
        f.truncate(data.stat().st_size // 3)  # a truncated LMDB file would crash a reader
    b = team.machine("a")
    np.testing.assert_array_equal(b.load_artifact("x"), np.arange(50_000))
    assert b.verify().ok
    assert [p.name for p in (team.tmp / "a").glob("ledger.damaged-*")]


def test_gc_deletes_dead_and_orphan_objects_only(team: Team) -> None:
    a, b = team.machine("a"), team.machine("b")
    keep = np.random.default_rng(1).random(300_000)
    drop = np.random.default_rng(2).random(300_000)
    a.save_artifact(keep, "keep")
    dead = a.save_artifact(drop, "drop")
    # An upload whose commit never came: the object is there, no event names it.
    blobs = b.ledger.blobs
    with b.ledger.chunks.session() as session:
        orphan = session.writer("orphan", lambda entry: None)
        orphan.write(np.random.default_rng(3).random(300_000).tobytes())
        orphan.close()
        blobs.flush(session.held)
    objects = len(team.objects())
    a.delete_artifact(dead)
    young = a.gc()  # the orphan is younger than the grace period: kept
    assert young.chunks_reclaimed > 0
    after_young = len(team.objects())
    assert after_young < objects
    old = b.gc(grace=0.0)
    assert old.objects_deleted > 0
    assert len(team.objects()) < after_young
    for s in (a, b):
        s.sync()
        np.testing.assert_array_equal(s.load_artifact("keep"), keep)
        assert s.verify().ok, s.verify().problems
    b.save_artifact(drop, "drop-again")  # uploaded again, not deduplicated against the dead
    a.sync()
    np.testing.assert_array_equal(a.load_artifact("drop-again"), drop)


def test_verify_names_a_tampered_row_in_postgresql(team: Team) -> None:
    import psycopg

    from engine.storage.log import pack, seq_key, unpack

    a = team.machine("a")
    for i in range(3):
        a.save_artifact(i, "x")
    with psycopg.connect(team.log, autocommit=True) as conn:
        raw = conn.execute(
            "SELECT v FROM artledger_kv WHERE db = 'events' AND k = %s", (seq_key(3),)
        ).fetchone()[0]
        env = unpack(bytes(raw))
        env["data"]["name"] = "forged"
        conn.execute(
            "UPDATE artledger_kv SET v = %s WHERE db = 'events' AND k = %s",
            (pack(env), seq_key(3)),
        )
    problems = a.verify().problems
    assert any("event 4: hash chain broken" in p and "shared log" in p for p in problems)


def test_postgresql_down_writes_fail_fast_and_reads_work(team: Team) -> None:
    a = team.machine("a", timeout=3.0)
    a.save_artifact(np.arange(1000), "x")
    team.pg.stop()
    try:
        t0 = time.monotonic()
        with pytest.raises(SharedStoreUnavailableError):
            a.save_artifact(np.arange(2000), "x")
        assert time.monotonic() - t0 < 3.0 * 3 + 2
        np.testing.assert_array_equal(a.load_artifact("x"), np.arange(1000))
        status = a.replica_status()
        assert status is not None and not status.online
        a.close()
        offline = team.machine("a", timeout=3.0)  # an existing replica opens offline
        assert offline.load_artifact("x").shape == (1000,)
    finally:
        team.pg.start()
    offline.save_artifact(np.arange(3000), "x")
    assert [v.version for v in offline.list_artifacts("x")] == [1, 2]
    assert offline.verify().ok


def test_s3_down_a_save_fails_cleanly(team: Team) -> None:
    a = team.machine("a", timeout=3.0)
    a.save_artifact(np.arange(1000.0), "x")
    head = a.replica_status().head  # type: ignore[union-attr]
    team.s3.stop()
    try:
        with pytest.raises(SharedStoreUnavailableError):
            a.save_artifact(np.random.default_rng(1).random(500_000), "x")
        assert a.sync().head == head  # type: ignore[union-attr]
    finally:
        team.s3.start()
    a.save_artifact(np.arange(5.0), "x")
    assert [v.version for v in a.list_artifacts("x")] == [1, 2]
    assert a.verify().ok


def test_an_embedded_store_moves_into_a_shared_one(team: Team, tmp_path: Path) -> None:
    with Store.open(tmp_path / "embedded") as old:
        for i in range(3):
            old.save_artifact(np.arange(i * 1000), "m")
        old.export(tmp_path / "all.alx")
    shared = team.machine("a")
    Store.import_(tmp_path / "all.alx", into=shared)
    b = team.machine("b")
    assert [v.version for v in b.list_artifacts("m")] == [1, 2, 3]
    np.testing.assert_array_equal(b.load_artifact("m"), np.arange(2000))
    assert b.verify().ok


WRITER = """
import json, sys, numpy as np
from engine import Store, pipeline, step
root, log, chunks, k, n, out = sys.argv[1:7]
k, n = int(k), int(n)

@step
def square(x: int) -> int:
    return x * x

@pipeline
def p(x: int) -> int:
    return square(x)

with Store.open(root, log=log, chunks=chunks) as s, open(out, "a") as acks:
    for i in range(n):
        value = np.full(1000 + i, k * 100_000 + i, dtype=np.int64) if i % 5 == 0 else [k, i]
        art = s.save_artifact(value, f"w{k % 2}")
        acks.write(json.dumps([art.id, k, i]) + "\\n"); acks.flush()
        if i % 50 == 0:
            s.run(p, x=i)
"""


@pytest.mark.slow
def test_four_writer_processes_lose_nothing(team: Team) -> None:
    n = 250
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                WRITER,
                str(team.tmp / f"m{k}"),
                team.log,
                team.chunks,
                str(k),
                str(n),
                str(team.tmp / f"acks{k}"),
            ],
            env=team.env,
        )
        for k in range(4)
    ]
    for proc in procs:
        assert proc.wait(timeout=600) == 0
    stores = [team.machine(f"m{k}") for k in range(4)] + [team.machine("fresh")]
    acked = [
        json.loads(line)
        for k in range(4)
        for line in (team.tmp / f"acks{k}").read_text().splitlines()
    ]
    assert len(acked) == 4 * n
    heads = set()
    for s in stores:
        s.sync()
        for name in ("w0", "w1"):
            versions = [v.version for v in s.list_artifacts(name)]
            assert versions == list(range(1, len(versions) + 1))
        for aid, k, i in acked if s is stores[-1] else acked[::37]:
            got = s.get_artifact_by_id(aid).load()
            if i % 5 == 0:
                np.testing.assert_array_equal(got, np.full(1000 + i, k * 100_000 + i))
            else:
                assert got == [k, i]
        heads.add(s.replica_status().head)  # type: ignore[union-attr]
        assert s.verify().ok
    assert len(heads) == 1
    every = {a.id for a in stores[-1].list_artifacts()}
    assert {aid for aid, _, _ in acked} <= every


@pytest.mark.slow
@pytest.mark.parametrize(
    "point", ["commit.before_txn", "commit.in_txn", "shared.after_commit", "commit.after"]
)
def test_a_killed_writer_loses_no_acknowledged_save(team: Team, point: str) -> None:
    env = {**team.env, "ARTLEDGER_FAILPOINTS": f"{point}=kill@6"}
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            WRITER,
            str(team.tmp / "k"),
            team.log,
            team.chunks,
            "0",
            "20",
            str(team.tmp / "acks"),
        ],
        env=env,
        timeout=300,
    )
    assert proc.returncode == -9
    acked = [json.loads(line) for line in (team.tmp / "acks").read_text().splitlines()]
    for where in ("k", "other"):  # the killed replica reopens; another one joins
        s = team.machine(where)
        ids = {a.id for a in s.list_artifacts()}
        assert {aid for aid, _, _ in acked} <= ids
        versions = [v.version for v in s.list_artifacts("w0")]
        assert versions == list(range(1, len(versions) + 1))
        assert s.verify().ok, s.verify().problems


def test_the_shared_docs_blocks_run_on_real_servers(
    team: Team, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import re

    text = (ROOT / "docs" / "shared.md").read_text()
    blocks = re.findall(r"^```python\n(.*?)^```", text, re.S | re.M)
    assert blocks
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "doc_shared"}
    for i, code in enumerate(blocks):
        code = (
            code.replace("postgresql://ml@db.internal:5432/artledger", team.log)
            .replace("s3://ml-artifacts/artledger", team.chunks)
            .replace("~/.artledger-replica", str(tmp_path / "replica"))
        )
        exec(compile(code, f"shared.md[block {i}]", "exec"), namespace)
    for value in namespace.values():
        if isinstance(value, Store):
            value.close()


def test_s3_stopped_mid_upload_the_save_fails_cleanly(team: Team) -> None:
    import threading

    a = team.machine("a", timeout=3.0)
    a.save_artifact(1, "before")
    big = np.random.default_rng(5).random(8 << 20)  # 64 MiB: 16 uploads
    outcome: list[BaseException | None] = []

    def save() -> None:
        try:
            a.save_artifact(big, "big")
            outcome.append(None)
        except BaseException as e:
            outcome.append(e)

    thread = threading.Thread(target=save)
    thread.start()
    time.sleep(0.15)
    team.s3.stop()
    thread.join(60)
    try:
        assert outcome and (
            outcome[0] is None or isinstance(outcome[0], SharedStoreUnavailableError)
        )
    finally:
        team.s3.start()
    names = {v.name for v in a.list_artifacts()}
    if outcome[0] is not None:
        assert names == {"before"}  # nothing half-written
    else:
        np.testing.assert_array_equal(a.load_artifact("big"), big)
    fresh = team.machine("b")
    assert fresh.verify().ok, fresh.verify().problems  # no event references a missing chunk


def test_postgresql_stopped_mid_run_then_restarted(team: Team) -> None:
    a = team.machine("a", timeout=3.0)
    pg = team.pg

    @step
    def first() -> int:
        return 1

    @step
    def stops_the_server(x: int) -> int:
        pg.stop()
        return x + 1

    @pipeline
    def p() -> int:
        return stops_the_server(first())

    try:
        with pytest.raises(SharedStoreUnavailableError):
            a.run(p)
    finally:
        pg.start()

    @step
    def fine(x: int) -> int:
        return x + 1

    @pipeline
    def q() -> int:
        return fine(first())

    run = a.run(q)
    assert run.status == "completed"
    b = team.machine("b")
    assert b.verify().ok, b.verify().problems
    statuses = {r.pipeline: r.status for r in b.list_runs()}
    assert statuses["q"] == "completed"


def test_the_cli_joins_syncs_and_reconnects(team: Team, capsys: pytest.CaptureFixture[str]) -> None:
    from engine.cli.main import main

    a = team.machine("a")
    a.save_artifact(np.arange(10), "x")
    replica = str(team.tmp / "cli")
    assert main(["--store", replica, "--log", team.log, "--chunks", team.chunks, "sync"]) == 0
    assert "head is event" in capsys.readouterr().out
    before = a.replica_status().head  # type: ignore[union-attr]
    a.save_artifact(np.arange(20), "x")
    assert main(["--store", replica, "sync", "--json"]) == 0  # the URLs were recorded
    assert json.loads(capsys.readouterr().out)["head"] > before
    assert main(["--store", replica, "artifacts", "--json"]) == 0
    assert "x" in capsys.readouterr().out
    team.pg.stop()
    try:
        assert main(["--store", replica, "artifacts"]) == 0  # offline: read as it is
        err = capsys.readouterr().err
        assert "offline" in err and "last synced" in err
    finally:
        team.pg.start()
    assert main(["--store", str(team.tmp / "embedded"), "sync"]) == 1  # no store there


CHURN = """
import json, sys, numpy as np
from engine import Store
from engine.errors import ConcurrentGcError
root, log, chunks, k, n, out = sys.argv[1:7]
with Store.open(root, log=log, chunks=chunks) as s, open(out, "a") as acks:
    for i in range(int(n)):
        # Kept versions share five contents; deleted ones four others, which gc
        # collects while later saves of the same bytes deduplicate against them.
        keep = i % 3 != 0
        content = i % 5 if keep else 100 + i % 4
        try:
            art = s.save_artifact(np.random.default_rng(content).random(5000), f"c{k}")
        except ConcurrentGcError:
            continue  # refused (nothing committed) after one retry: allowed, not acknowledged
        if not keep:
            s.delete_artifact(art)
        acks.write(json.dumps([art.id, content, keep]) + "\\n"); acks.flush()
"""

GC_LOOP = """
import sys, time
from engine import Store
root, log, chunks, seconds = sys.argv[1:5]
with Store.open(root, log=log, chunks=chunks) as s:
    end = time.monotonic() + float(seconds)
    reclaimed = 0
    while time.monotonic() < end:
        reclaimed += s.gc(grace=30.0).chunks_reclaimed
print("RECLAIMED", reclaimed)
"""


@pytest.mark.slow
def test_gc_on_one_machine_while_two_others_write(team: Team) -> None:
    team.machine("init").close()
    writers = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                CHURN,
                str(team.tmp / f"w{k}"),
                team.log,
                team.chunks,
                str(k),
                "120",
                str(team.tmp / f"churn{k}"),
            ],
            env=team.env,
        )
        for k in range(2)
    ]
    gc = subprocess.Popen(
        [sys.executable, "-c", GC_LOOP, str(team.tmp / "gc"), team.log, team.chunks, "15"],
        env=team.env,
        stdout=subprocess.PIPE,
        text=True,
    )
    for proc in writers:
        assert proc.wait(timeout=600) == 0
    out, _ = gc.communicate(timeout=600)
    assert gc.returncode == 0
    assert int(out.split("RECLAIMED")[1]) > 0  # gc did collect while the writers ran
    s = team.machine("check")
    kept = 0
    for k in range(2):
        for line in (team.tmp / f"churn{k}").read_text().splitlines():
            aid, content, keep = json.loads(line)
            if keep:
                kept += 1
                got = s.get_artifact_by_id(aid).load()
                np.testing.assert_array_equal(got, np.random.default_rng(content).random(5000))
    assert kept > 100
    assert s.verify().ok, s.verify().problems
