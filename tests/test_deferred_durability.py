"""Durability that pays for itself: a run's executed steps commit in pending windows.

The rule (docs/design.md): a completed step's events wait in its thread's
pending window while the waiting steps' summed run time stays under a budget
(about 10 durable commits); a step over it commits durably before the next
starts; the run's end is one durable commit. Crashes are real SIGKILLs of a
child process on real LMDB; the overlay under the window passes the KV
contract.
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from engine import Store
from engine.projections.schema import STORE_DATABASES
from engine.storage.kv import KV, MemoryKV, Txn
from engine.storage.kv.overlay import Overlay
from engine.testing.kv import KVContract

T = Any

# -- the overlay behaves as a transaction ------------------------------------------------


class _OverlayKV(KV):
    """A MemoryKV whose writes run against two stacked overlays and are then
    applied (what a pending window and its settling do)."""

    def __init__(self) -> None:
        self.inner = MemoryKV(STORE_DATABASES)

    @property
    def databases(self) -> tuple[str, ...]:
        return self.inner.databases

    def read(self) -> Txn:
        return self.inner.read()

    def end_read(self, txn: Txn) -> None:
        self.inner.end_read(txn)

    def write(self, fn: Callable[[Txn], T]) -> T:
        base = self.inner.read()
        try:
            window = Overlay(base)
            child = Overlay(window)
            out = fn(child)
            window.absorb(child)
        finally:
            self.inner.end_read(base)
        self.inner.write(window.apply)
        return out


class TestOverlayKV(KVContract):
    def make_kv(self, tmp_path: Path) -> KV:
        return _OverlayKV()


def test_overlay_scans_equal_a_real_transaction_at_random() -> None:
    rng = random.Random(7)
    keys = [bytes([a, b]) for a in (0, 1, 2, 255) for b in (0, 1, 255)]
    for _ in range(60):
        real = MemoryKV(STORE_DATABASES)
        real.write(lambda t: [t.put("meta", k, b"base" + k) for k in rng.sample(keys, 6)])
        ops = [(rng.choice("pdp"), rng.choice(keys)) for _ in range(10)]
        base = real.read()
        over = Overlay(base)
        for op, k in ops:
            if op == "p":
                over.put("meta", k, b"new" + k)
            else:
                over.delete("meta", k)
        got = {
            (s, e, p, r): list(over.scan("meta", s, e, prefix=p, reverse=r))
            for s in (None, b"\x01")
            for e in (None, b"\x02\x01")
            for p in (None, b"\x02", b"\xff")
            for r in (False, True)
        }
        count = over.count("meta")
        real.end_read(base)

        def do(t: Txn, ops: list[tuple[str, bytes]] = ops) -> None:
            for op, k in ops:
                if op == "p":
                    t.put("meta", k, b"new" + k)
                else:
                    t.delete("meta", k)

        real.write(do)
        with real.snapshot() as t:
            want = {q: list(t.scan("meta", q[0], q[1], prefix=q[2], reverse=q[3])) for q in got}
            assert got == want
            assert count == t.count("meta")


# -- pipelines in a child process ---------------------------------------------------------

STEPS = """
import os, signal, sys, threading, time
from engine import Store, pipeline, step


@step
def first(x: int) -> int:
    time.sleep(float(os.environ.get("FIRST_SLEEP", "0")))
    return x + 1


@step
def second(y: int) -> int:
    if os.environ.get("KILL_IN") == "second":
        os.kill(os.getpid(), signal.SIGKILL)
    return y * 2


@step
def third(z: int) -> int:
    if os.environ.get("KILL_IN") == "third":
        os.kill(os.getpid(), signal.SIGKILL)
    return z - 1


@pipeline
def pipe(x: int):
    return third(second(first(x)))


def main() -> None:
    store = Store.open(sys.argv[1])
    store.ledger.budget_commits = float(os.environ.get("BUDGET_COMMITS", "10"))
    for i in range(3):  # acknowledged before the run
        a = store.save_artifact({"before": i}, "before")
        print("ack", a.name, a.version, flush=True)
    if os.environ.get("SAVER"):
        def saver() -> None:
            i = 0
            while True:
                a = store.save_artifact({"during": i}, "during")
                print("ack", a.name, a.version, flush=True)
                i += 1
        threading.Thread(target=saver, daemon=True).start()
        time.sleep(0.2)
    store.run(pipe, x=int(os.environ.get("X", "1")))
    print("returned", flush=True)


if __name__ == "__main__":
    main()
"""


def _child(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "steps.py"
    script.write_text(STEPS)
    return subprocess.run(
        [sys.executable, str(script), str(tmp_path / "store")],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def _rerun(tmp_path: Path) -> dict[str, str]:
    """Run the pipeline again (same code, no kill); each step's status."""
    proc = _child(tmp_path)
    assert proc.returncode == 0, proc.stderr
    with Store.open(tmp_path / "store") as s:
        run = s.list_runs("pipe")[-1]
        return {inv: sr.status for inv, sr in run.steps.items()}


def _consistent(path: Path) -> None:
    with Store.open(path) as s:
        report = s.verify()
        assert report.ok, report.problems
        before = [(a.id, a.name, a.version) for a in s.list_artifacts()]
        runs = [(r.id, r.status) for r in s.list_runs()]
        s.rebuild()
        assert [(a.id, a.name, a.version) for a in s.list_artifacts()] == before
        assert [(r.id, r.status) for r in s.list_runs()] == runs
        for name in {a.name for a in s.list_artifacts()}:
            versions = [a.version for a in s.list_artifacts(name)]
            assert versions == list(range(1, len(versions) + 1)), (name, versions)


def test_a_step_over_the_budget_is_durable_before_the_next_starts(tmp_path: Path) -> None:
    # The first step sleeps far over the budget (10 commits of at most a few ms).
    proc = _child(tmp_path, FIRST_SLEEP="0.5", KILL_IN="second")
    assert proc.returncode == -9, proc.stderr
    _consistent(tmp_path / "store")
    assert _rerun(tmp_path) == {"first": "cached", "second": "completed", "third": "completed"}


def test_steps_under_the_budget_wait_in_the_window(tmp_path: Path) -> None:
    # The counterpart: with an endless budget, the killed run left nothing of its steps.
    proc = _child(tmp_path, BUDGET_COMMITS="1e9", KILL_IN="third")
    assert proc.returncode == -9, proc.stderr
    assert _rerun(tmp_path) == {"first": "completed", "second": "completed", "third": "completed"}


def test_a_crash_in_a_window_loses_no_acknowledged_save(tmp_path: Path) -> None:
    proc = _child(tmp_path, BUDGET_COMMITS="1e9", KILL_IN="third", SAVER="1", FIRST_SLEEP="0.2")
    assert proc.returncode == -9, proc.stderr
    # Whole lines only: the kill can cut the last line a saving thread printed.
    acked = [m.groups() for m in re.finditer(r"^ack (\S+) (\d+)$", proc.stdout, re.M)]
    assert len([a for a in acked if a[0] == "during"]) > 2, proc.stdout
    with Store.open(tmp_path / "store") as s:
        for name, version in acked:
            obj = s.load_artifact(name, int(version))
            assert obj == {name: int(version) - 1}
    _consistent(tmp_path / "store")
    assert _rerun(tmp_path) == {"first": "completed", "second": "completed", "third": "completed"}
    _consistent(tmp_path / "store")


# -- in one process ------------------------------------------------------------------------


def _saving_pipeline(tag: str) -> Any:
    from engine import pipeline, step

    @step
    def make(n: int) -> list[int]:
        return list(range(n))

    @step
    def use(xs: list[int]) -> int:
        from engine import get_step_context

        store = get_step_context().store
        store.save_artifact({"side": tag}, f"side-{tag}")
        return sum(xs)

    @step
    def peek(total: int) -> dict[str, Any]:
        from engine import get_step_context

        store = get_step_context().store
        # What an earlier step of this run saved by name (still pending) is visible.
        return {"side": store.load_artifact(f"side-{tag}"), "total": total}

    @pipeline
    def saving(n: int):
        return peek(use(make(n)))

    return saving


def test_a_later_step_sees_what_an_earlier_pending_step_saved(disk_store: Store) -> None:
    disk_store.ledger.budget_commits = 1e9
    run = disk_store.run(_saving_pipeline("a"), n=5)
    assert run.steps["peek"].output.load() == {"side": {"side": "a"}, "total": 10}


def test_another_thread_committing_during_a_window_is_replayed_after(disk_store: Store) -> None:
    from engine import pipeline, step

    disk_store.ledger.budget_commits = 1e9
    go, done = threading.Event(), threading.Event()

    def other() -> None:
        go.wait(10)
        for i in range(3):
            disk_store.save_artifact({"other": i}, "shared-name")
        done.set()

    @step
    def a(x: int) -> int:
        return x + 1

    @step
    def b(y: int) -> int:
        go.set()
        assert done.wait(10)
        # This thread still reads its window: the other thread's saves commit
        # after the window's snapshot and are not visible until it settles.
        return y + 1

    @step
    def c(z: int) -> int:
        return z + 1

    @pipeline
    def p(x: int):
        return c(b(a(x)))

    disk_store.save_artifact({"first": 1}, "shared-name")
    t = threading.Thread(target=other)
    t.start()
    run = disk_store.run(p, x=1)
    t.join()
    assert run.status == "completed"
    assert run.steps["c"].output.load() == 4
    assert [a.version for a in disk_store.list_artifacts("shared-name")] == [1, 2, 3, 4]
    # The run's events come after the other thread's: replayed, chain intact.
    seqs = [e.seq for e in disk_store.events()]
    assert seqs == list(range(1, len(seqs) + 1))
    assert disk_store.verify().ok, disk_store.verify().problems
    lineage = disk_store.consumers(run.steps["a"].output)
    assert [sr.id for sr in lineage] == [run.steps["b"].id]
    _consistent(Path(disk_store.ledger.path))  # type: ignore[arg-type]


def test_another_process_committing_during_a_window(tmp_path: Path) -> None:
    from engine import pipeline, step

    path = tmp_path / "store"
    code = (
        "import sys\nfrom engine import Store\n"
        "with Store.open(sys.argv[1]) as s:\n"
        "    s.save_artifact({'proc': 1}, 'from-proc')\n"
    )

    @step
    def a(x: int) -> int:
        return x + 1

    @step
    def b(y: int) -> int:
        subprocess.run(
            [sys.executable, "-c", code, str(path)],
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
            check=True,
            timeout=60,
        )
        return y + 1

    @pipeline
    def p(x: int):
        return b(a(x))

    with Store.open(path) as s:
        s.ledger.budget_commits = 1e9
        run = s.run(p, x=1)
        assert run.status == "completed"
        assert s.load_artifact("from-proc") == {"proc": 1}
        assert s.verify().ok
        assert [sr.status for sr in run.steps.values()] == ["completed", "completed"]
    _consistent(path)


def test_a_failing_step_keeps_the_pending_completed_steps(disk_store: Store) -> None:
    from engine import pipeline, step

    disk_store.ledger.budget_commits = 1e9

    @step
    def ok(x: int) -> int:
        return x + 1

    @step
    def bad(y: int) -> int:
        raise ValueError("no")

    @pipeline
    def p(x: int):
        return bad(ok(x))

    with pytest.raises(ValueError):
        disk_store.run(p, x=1)
    run = disk_store.list_runs()[-1]
    assert run.status == "failed"
    assert run.steps["ok"].status == "completed"
    assert run.steps["ok"].output.load() == 2


def test_the_budget_follows_measured_commits(disk_store: Store) -> None:
    ledger = disk_store.ledger
    for i in range(5):
        disk_store.save_artifact(i, "x")
    assert 0 < ledger.commit_seconds < 1
    assert ledger.budget == pytest.approx(10 * ledger.commit_seconds)
    started = time.perf_counter()
    assert ledger.window() is None and ledger.open_window()
    try:
        assert not ledger.open_window()  # one per thread
    finally:
        ledger.close_window()
    assert time.perf_counter() - started < 5


def test_a_run_inside_a_step_is_durable_when_it_returns(disk_store: Store) -> None:
    from engine import get_step_context, pipeline, step

    disk_store.ledger.budget_commits = 1e9

    @step
    def inner_step(x: int) -> int:
        return x * 3

    @pipeline
    def inner(x: int):
        return inner_step(x)

    seen: list[str] = []

    @step
    def outer_step(x: int) -> int:
        run = get_step_context().store.run(inner, x=x)
        # Another thread reads the store as committed: the inner run is there.
        t = threading.Thread(target=lambda: seen.append(disk_store.get_run(run.id).status))
        t.start()
        t.join()
        return x

    @pipeline
    def outer(x: int):
        return outer_step(x)

    assert disk_store.run(outer, x=2).status == "completed"
    assert seen == ["completed"]


def test_a_gc_collecting_a_pending_steps_chunk_fails_the_windows_commit(
    disk_store: Store,
) -> None:
    import numpy as np

    from engine import ConcurrentGcError, pipeline, step

    disk_store.ledger.budget_commits = 1e9
    data = np.arange(200_000, dtype=np.int64)
    doomed = disk_store.save_artifact(data, "doomed")

    @step
    def same(n: int) -> np.ndarray:
        return np.arange(n, dtype=np.int64)  # dedups against "doomed"'s chunks

    @step
    def collect(a: np.ndarray) -> int:
        def other() -> None:  # another thread: nothing committed references the chunks
            disk_store.delete_artifact(doomed)
            disk_store.gc(grace=0)

        if not disk_store.get_artifact_by_id(doomed.id).deleted:  # the first run only
            t = threading.Thread(target=other)
            t.start()
            t.join()
        return int(a.sum())

    @pipeline
    def p(n: int):
        return collect(same(n))

    with pytest.raises(ConcurrentGcError, match="concurrent gc"):
        disk_store.run(p, n=200_000)
    assert disk_store.verify().ok, disk_store.verify().problems
    run = disk_store.run(p, n=200_000)  # nothing of the window was committed: all run again
    assert {sr.status for sr in run.steps.values()} == {"completed"}
    assert run.steps["collect"].output.load() == int(data.sum())
    assert disk_store.verify().ok
