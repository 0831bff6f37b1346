"""Races between pack-segment writers, recovery on open, and gc.

Each test is a bounded run of real processes or threads that open, save,
delete, gc and close one store at once; every save that returned is
acknowledged and must load, byte-exact, from a fresh process afterwards.
Before segments were recovered and compacted under their lock, each of
these lost acknowledged saves in almost every run.
"""

from __future__ import annotations

import multiprocessing as mp
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engine import Store

CHUNK = 64 << 10


def _value(worker: int, i: int) -> np.ndarray:
    """Random floats (stored raw, in a pack segment, never inline)."""
    return np.random.default_rng(worker * 100_000 + i).random(3_000)


def _check_acknowledged(path: str, acked: list[tuple[str, int, int, int]]) -> list[str]:
    """Every acknowledged (name, version, worker, i) loads with its value."""
    lost = []
    with Store.open(path, chunk_size=CHUNK) as s:
        for name, version, worker, i in acked:
            try:
                got = s.load_artifact(name, version)
            except Exception as e:
                lost.append(f"{name}:{version}: {type(e).__name__}: {e}")
                continue
            if not np.array_equal(got, _value(worker, i)):
                lost.append(f"{name}:{version}: wrong content")
        report = s.verify()
        lost += [f"verify: {p}" for p in report.problems]
    return lost


def _open_save_close(path: str, worker: int, rounds: int, delete_first: bool, out: Any) -> None:
    acked: list[tuple[str, int, int, int]] = []
    try:
        _save_rounds(path, worker, rounds, delete_first, acked)
    finally:
        out.put(acked)


def _save_rounds(
    path: str, worker: int, rounds: int, delete_first: bool, acked: list[tuple[str, int, int, int]]
) -> None:
    for i in range(rounds):
        with Store.open(path, chunk_size=CHUNK) as s:
            if delete_first:
                # A mostly-dead segment: gc picks it as a compaction victim.
                s.delete_artifact(s.save_artifact(_value(worker, 50_000 + i), f"junk{worker}"))
            for j in range(2):
                k = 2 * i + j
                art = s.save_artifact(_value(worker, k), f"w{worker}")
                acked.append((art.name, art.version, worker, k))


def _open_close(path: str, stop: Any) -> None:
    while not stop.is_set():
        Store.open(path, chunk_size=CHUNK).close()


def _gc_loop(path: str, stop: Any) -> None:
    with Store.open(path, chunk_size=CHUNK) as s:
        while not stop.is_set():
            s.gc()


def _run(path: str, writers: int, rounds: int, delete_first: bool, side: Any, n_side: int) -> None:
    ctx = mp.get_context("fork")
    out = ctx.Queue()
    stop = ctx.Event()
    helpers = [ctx.Process(target=side, args=(path, stop)) for _ in range(n_side)]
    procs = [
        ctx.Process(target=_open_save_close, args=(path, w, rounds, delete_first, out))
        for w in range(writers)
    ]
    for p in helpers + procs:
        p.start()
    acked: list[tuple[str, int, int, int]] = []
    for _ in procs:
        acked += out.get(timeout=300)
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    stop.set()
    for p in helpers:
        p.join(120)
        assert p.exitcode == 0
    assert len(acked) == writers * rounds * 2
    assert _check_acknowledged(path, acked) == []


@pytest.mark.slow
def test_opens_do_not_truncate_other_processes_writes(tmp_path: Path) -> None:
    """Three processes open, save and close in a loop while two others only
    open and close (each open recovers torn pack tails)."""
    path = str(tmp_path / "s")
    Store.open(path).close()
    _run(path, writers=3, rounds=40, delete_first=False, side=_open_close, n_side=2)


@pytest.mark.slow
def test_gc_in_another_process_keeps_newly_committed_chunks(tmp_path: Path) -> None:
    """Writers leave mostly-dead segments behind while another process
    compacts in a loop: a segment a writer extended after gc's scan must not
    be deleted with its new chunks."""
    path = str(tmp_path / "s")
    Store.open(path).close()
    _run(path, writers=3, rounds=40, delete_first=True, side=_gc_loop, n_side=1)


@pytest.mark.slow
def test_gc_thread_beside_save_threads(tmp_path: Path) -> None:
    """One Store, save threads and a gc thread: gc's rotation must not close
    (and compaction delete) a segment whose end a save is about to commit."""
    path = str(tmp_path / "s")
    acked: list[tuple[str, int, int, int]] = []
    lock = threading.Lock()
    stop = threading.Event()
    errors: list[BaseException] = []
    with Store.open(path, chunk_size=CHUNK) as s:

        def saver(worker: int) -> None:
            try:
                for i in range(150):
                    art = s.save_artifact(_value(worker, i), f"t{worker}")
                    if i % 3 == 0:
                        s.delete_artifact(art)
                    else:
                        with lock:
                            acked.append((art.name, art.version, worker, i))
            except BaseException as e:  # pragma: no cover - reported below
                errors.append(e)

        def collector() -> None:
            try:
                while not stop.is_set():
                    s.gc()
                    time.sleep(0.001)
            except BaseException as e:  # pragma: no cover - reported below
                errors.append(e)

        threads = [threading.Thread(target=saver, args=(w,)) for w in range(8)]
        gc_thread = threading.Thread(target=collector)
        gc_thread.start()
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        stop.set()
        gc_thread.join(60)
        assert errors == []
    assert _check_acknowledged(path, acked) == []
