"""Crashes and resource limits: failpoints, SIGKILL, a full disk, a tiny LMDB map.

The short crash test runs ``tools/crashtest.py`` (every failpoint at least
once, plus kills at random moments); the documented 1,000-kill run and its
report are in ``bench/results/crashtest-1000.md``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engine import ArtledgerError, Store, StoreError, failpoints

ROOT = Path(__file__).resolve().parent.parent
CRASHTEST = ROOT / "tools" / "crashtest.py"
FAILPOINTS = tuple(p for p in failpoints.CRASH_POINTS if not p.startswith("import."))


@pytest.fixture
def armed(monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    """Arm failpoints in this process: ``armed("name=action")``."""

    def arm(spec: str) -> None:
        monkeypatch.setenv("ARTLEDGER_FAILPOINTS", spec)
        failpoints.reload()

    def disarm() -> None:
        monkeypatch.delenv("ARTLEDGER_FAILPOINTS", raising=False)
        failpoints.reload()

    arm.disarm = disarm  # type: ignore[attr-defined]
    try:
        yield arm
    finally:
        disarm()


def state(store: Store) -> tuple[int, list[tuple[str, object]], dict[str, int]]:
    return (
        store.head,
        [(a.name, a.version) for a in store.list_artifacts()],
        store.stats(),
    )


# -- the crash test, short -------------------------------------------------------------


def test_crashtest_every_failpoint_and_random_kills(tmp_path: Path) -> None:
    points = failpoints.CRASH_POINTS
    rounds = 2 * len(points)
    proc = subprocess.run(
        [sys.executable, str(CRASHTEST), "--rounds", str(rounds), "--seed", "11", "--json"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    s = json.loads(proc.stdout)
    assert s["kills"] >= rounds
    assert set(points) <= set(s["failpoints_hit"]), s["failpoints_hit"]
    assert s["acked_checked"] > 100
    assert (s["lost"], s["dangling"], s["verify_failures"], s["other_problems"]) == (0, 0, 0, 0)
    assert s["slowest_reopen_s"] < 1.0


def _kill_during(path: Path, failpoint: str, code: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, ARTLEDGER_FAILPOINTS=f"{failpoint}=kill")
    return subprocess.run(
        [sys.executable, "-c", code, str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


SAVE_ONE = """
import sys, numpy as np
from engine import Store
with Store.open(sys.argv[1], chunk_size=64 << 10) as s:
    s.save_artifact(np.arange(100_000), "doomed")
    print("acknowledged", flush=True)
"""


@pytest.mark.parametrize(
    ("failpoint", "survives"),
    [
        ("blob.before_write", False),
        ("blob.after_write", False),
        ("blob.after_fsync", False),
        ("commit.before_txn", False),
        ("commit.in_txn", False),
        ("commit.after", True),  # committed, killed before the call returned
    ],
)
def test_kill_at_a_failpoint_leaves_a_consistent_store(
    tmp_path: Path, failpoint: str, survives: bool
) -> None:
    path = tmp_path / "s"
    with Store.open(path, chunk_size=64 << 10) as s:
        s.save_artifact({"keep": 1}, "keep")
        before = state(s)
    proc = _kill_during(path, failpoint, SAVE_ONE)
    assert proc.returncode == -9, proc.stderr
    assert "acknowledged" not in proc.stdout
    with Store.open(path, chunk_size=64 << 10) as s:
        assert s.verify().ok, s.verify().problems
        assert s.load_artifact("keep") == {"keep": 1}
        if survives:
            np.testing.assert_array_equal(s.load_artifact("doomed"), np.arange(100_000))
        else:
            assert state(s) == before
        # The torn pack tail is gone. A segment the ledger never recorded (the
        # writer died before its first commit) is left alone, reported, and
        # deleted by gc; the store takes writes again.
        sizes = {p.stem: p.stat().st_size for p in (path / "packs").glob("*.pack")}
        ends = s.ledger.container_state()
        assert all(size == ends[name] for name, size in sizes.items() if name in ends)
        orphans = set(sizes) - set(ends)
        notes = " ".join(s.verify().notes)
        assert all(f"{name}.pack" in notes for name in orphans)
        s.gc()
        assert {p.stem for p in (path / "packs").glob("*.pack")} == set(ends)
        s.save_artifact(np.arange(10), "after")
        assert s.verify().ok


GC_AND_REBUILD = """
import sys, numpy as np
from engine import Store
with Store.open(sys.argv[1], chunk_size=64 << 10) as s:
    a = s.save_artifact(np.random.default_rng(1).random(50_000), "gone")
    s.delete_artifact(a)
    s.gc()
    s.rebuild()
"""


@pytest.mark.parametrize(
    "failpoint", ["gc.after_index_commit", "gc.before_delete_files", "rebuild.before_commit"]
)
def test_kill_during_gc_or_rebuild(tmp_path: Path, failpoint: str) -> None:
    path = tmp_path / "s"
    keep = np.random.default_rng(2).random(30_000)
    with Store.open(path, chunk_size=64 << 10) as s:
        s.save_artifact(keep, "keep")
    proc = _kill_during(path, failpoint, GC_AND_REBUILD)
    assert proc.returncode == -9, proc.stderr
    with Store.open(path, chunk_size=64 << 10) as s:
        report = s.verify()
        assert report.ok, report.problems
        np.testing.assert_array_equal(s.load_artifact("keep"), keep)
        assert [a.name for a in s.list_artifacts()] == ["keep"]
        s.gc()  # finishes what the killed gc left
        assert s.gc(dry_run=True).chunks_reclaimed == 0
        np.testing.assert_array_equal(s.load_artifact("keep"), keep)
        assert s.verify().ok


# -- failures that are not crashes: nothing committed, the store goes on ------------------


@pytest.mark.parametrize(
    "spec",
    [
        "blob.before_write=raise",
        "blob.after_write=raise",
        "commit.before_txn=raise",
        "commit.in_txn=raise",
    ],
)
def test_error_at_a_failpoint_commits_nothing(disk_store: Store, armed: object, spec: str) -> None:
    disk_store.save_artifact([1, 2], "keep")
    before = state(disk_store)
    armed(spec)  # type: ignore[operator]
    with pytest.raises((ArtledgerError, OSError)):
        disk_store.save_artifact(np.random.default_rng(3).random(200_000), "big")
    armed.disarm()  # type: ignore[attr-defined]
    assert state(disk_store) == before
    assert disk_store.verify().ok
    disk_store.save_artifact(np.arange(5), "big")
    assert disk_store.load_artifact("keep") == [1, 2]
    assert disk_store.verify().ok


def test_enospc_failpoint_is_a_clear_error(disk_store: Store, armed: object) -> None:
    disk_store.save_artifact("before", "keep")
    before = state(disk_store)
    armed("blob.before_write=enospc")  # type: ignore[operator]
    big = np.random.default_rng(4).random(300_000)
    with pytest.raises(StoreError, match="no space left") as e:
        disk_store.save_artifact(big, "big")
    assert "nothing was committed" in str(e.value)
    armed.disarm()  # type: ignore[attr-defined]
    assert state(disk_store) == before
    disk_store.save_artifact(big, "big")
    np.testing.assert_array_equal(disk_store.load_artifact("big"), big)
    assert disk_store.verify().ok


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir()
    try:
        proc = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
            capture_output=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError) as e:
        pytest.skip(f"cannot mount a tmpfs here: {e}")
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.decode(errors='replace')}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)


def test_full_disk_then_space_returns(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "small", "8m") as mnt:
        path = mnt / "s"
        filler = mnt / "filler"
        rng = np.random.default_rng(9)
        saved: list[np.ndarray] = []
        with Store.open(path, chunk_size=64 << 10, map_size=1 << 20) as s:
            s.save_artifact("first", "first")
            filler.write_bytes(b"\0" * (4 << 20))
            with pytest.raises(StoreError) as e:
                for _ in range(100):
                    arr = rng.random(25_000)  # 200 KB, incompressible
                    s.save_artifact(arr, "a")
                    saved.append(arr)
            assert "no space left" in str(e.value) and "nothing was committed" in str(e.value)
            assert saved
            head = s.head
            # Every acknowledged save is there; the failed one left nothing.
            assert [a.version for a in s.list_artifacts("a")] == list(range(1, len(saved) + 1))
            assert s.verify().ok
            # gc on a full disk may not find room to rewrite a segment: a clear error
            # after its index commit, and a consistent store.
            s.delete_artifact(s.get_artifact("a", 1))
            with contextlib.suppress(StoreError):
                s.gc()
            assert s.verify().ok
        filler.unlink()  # space returns
        with Store.open(path, chunk_size=64 << 10) as s:
            assert s.head >= head
            assert s.verify().ok, s.verify().problems
            s.save_artifact(np.arange(1000), "after")
            s.gc()
            for art, arr in zip(s.list_artifacts("a"), saved[1:], strict=True):
                np.testing.assert_array_equal(art.load(), arr)
            assert s.load_artifact("first") == "first"
            assert s.verify().ok


def test_tiny_map_grows_by_itself(tmp_path: Path) -> None:
    path = tmp_path / "s"
    big_meta = {f"k{i}": "v" * 1000 for i in range(2000)}  # ~2 MB in one transaction
    with Store.open(path, map_size=64 << 10) as s:
        a = s.save_artifact([1], "meta-heavy", metadata=big_meta)
        for i in range(200):
            s.save_artifact({"i": i, "pad": "x" * 3000}, f"n{i % 5}")
        assert a.metadata["k1999"] == "v" * 1000
    with Store.open(path, map_size=64 << 10) as s:  # a smaller map_size than the file
        assert s.stats()["artifacts"] == 201
        assert s.get_artifact("meta-heavy").metadata["k0"] == "v" * 1000
        assert s.verify().ok


def _crashtest_module() -> Any:
    spec = importlib.util.spec_from_file_location("crashtest", CRASHTEST)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["crashtest"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_crashtest_checker_catches_lost_and_wrong_writes(disk_store: Store) -> None:
    """The checker is not vacuous: a forged acknowledgement is a lost write,
    content that differs from what was acknowledged is a dangling one."""
    ct = _crashtest_module()
    good = disk_store.save_artifact(
        ct.make_value("array", "k1"), "x", metadata={"ck": "k1", "kind": "array"}
    )
    lines = [
        {"ev": "ack", "op": "save", "id": good.id, "name": "x", "version": 1, "key": "k1"},
        {"ev": "ack", "op": "save", "id": "feedfacefeedface", "name": "x", "version": 2},
    ]
    totals = ct.Totals()
    problems = ct.check_store(disk_store, lines, totals)
    assert totals.lost == 1 and totals.dangling == 0
    assert any("LOST" in p and "feedfacefeedface" in p for p in problems)
    disk_store.save_artifact([1], "y", metadata={"ck": "k2", "kind": "small"})
    totals = ct.Totals()
    problems = ct.check_store(disk_store, lines[:1], totals)
    assert totals.dangling == 1 and any("WRONG" in p and "y:1" in p for p in problems)


def test_every_crash_point_is_placed_in_the_engine() -> None:
    source = "".join(p.read_text() for p in (ROOT / "engine").rglob("*.py"))
    placed = set(re.findall(r'failpoints\.hit\("([^"]+)"\)', source))
    assert set(failpoints.CRASH_POINTS) <= placed
    assert set(failpoints.SHARED_CRASH_POINTS) <= placed
    assert placed - set(failpoints.CRASH_POINTS) - set(failpoints.SHARED_CRASH_POINTS) == {
        "gc.before_compact_copy"
    }


def test_gc_on_a_full_disk_deletes_dead_segments_first(tmp_path: Path) -> None:
    """With the disk full, deleting artifacts and running gc gives the space
    back: whole dead segments need no room to reclaim. A mostly-dead segment
    that needs room to be rewritten is left, with a note saying how much."""
    with tmpfs(tmp_path / "small", "8m") as mnt:
        path = mnt / "s"
        rng = np.random.default_rng(5)
        with Store.open(path, chunk_size=64 << 10, map_size=1 << 20) as s:
            keep = s.save_artifact(rng.random(20_000), "keep")  # its own segment
            s.ledger.blobs.seal()
            with pytest.raises(StoreError, match="no space left"):
                for _ in range(100):
                    s.save_artifact(rng.random(25_000), "a")
            for art in s.list_artifacts("a"):
                s.delete_artifact(art)
            s.delete_artifact(s.save_artifact(1, "x"))
            report = s.gc()
            assert report.segments_deleted >= 1
            assert report.bytes_reclaimed > 4 << 20
            arr = rng.random(25_000)
            s.save_artifact(arr, "after")  # room again, nothing else freed
            np.testing.assert_array_equal(s.load_artifact("after"), arr)
            np.testing.assert_array_equal(s.load_artifact("keep"), keep.load())
            assert s.verify().ok
            # Fill the disk again, then make the segment holding "after" mostly dead.
            with pytest.raises(StoreError, match="no space left"):
                for _ in range(100):
                    s.save_artifact(rng.random(25_000), "b")
            for art in s.list_artifacts("b")[1:]:
                s.delete_artifact(art)
            report = s.gc()
            assert report.segments_compacted == 0
            assert any("not rewritten: that needs" in n for n in report.notes), report.notes
            assert s.verify().ok
            np.testing.assert_array_equal(s.load_artifact("after"), arr)
