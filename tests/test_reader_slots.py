"""Reader slots: processes killed inside a read leave their LMDB reader slots
taken. Once every slot is taken, a new ``Store.open`` used to fail
(``MDB_READERS_FULL ... Check the path and its permissions``) until every
process had closed the store. Now the slots of dead processes are freed when
the store is opened and whenever a read finds no free slot; only live readers
can exhaust them, and the message says so."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine import Store, StoreError
from engine.storage.kv import MAX_READERS

PROCESSES = MAX_READERS // 2 + 2  # each holds two reads: more than every slot

# Forks PROCESSES children; each opens the store and runs two verifies in two
# threads whose progress callback (called inside a read transaction) blocks.
# Once all are in place it says so, waits for a line on stdin, then SIGKILLs them.
SPAWNER = """
import ctypes, os, select, signal, sys, threading, time
from engine import Store

path, n = sys.argv[1], int(sys.argv[2])
r, w = os.pipe()
kids = []
for _ in range(n):
    pid = os.fork()
    if pid == 0:
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: die with the spawner
        os.close(r)
        store = Store.open(path)
        hold = threading.Event()

        def reader():
            said = []

            def progress(stage, done, total):
                if not said:
                    said.append(1)
                    os.write(w, b"r")
                    hold.wait()

            try:
                store.verify(progress=progress)
            finally:
                if not said:  # no free slot
                    os.write(w, b"f")

        threads = [threading.Thread(target=reader) for _ in range(2)]
        for t in threads:
            t.start()
        hold.wait()
        os._exit(0)
    kids.append(pid)
os.close(w)
got = b""
deadline = time.monotonic() + 120
while len(got) < 2 * n and time.monotonic() < deadline:
    if select.select([r], [], [], 1.0)[0]:
        chunk = os.read(r, 4096)
        if not chunk:
            break
        got += chunk
print("in place", got.count(b"r"), got.count(b"f"), flush=True)
sys.stdin.readline()
for pid in kids:
    os.kill(pid, signal.SIGKILL)
for pid in kids:
    os.waitpid(pid, 0)
print("killed", flush=True)
"""

OPEN_AND_READ = """
import sys
from engine import ArtledgerError, Store
try:
    with Store.open(sys.argv[1]) as s:
        print("read", len(s.list_artifacts()))
except ArtledgerError as e:
    print(type(e).__name__, e)
"""


def open_and_read(path: Path) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", OPEN_AND_READ, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip()


@pytest.mark.slow
def test_killed_readers_do_not_exhaust_the_reader_slots(tmp_path: Path) -> None:
    path = tmp_path / "s"
    with Store.open(path, chunk_size=64 << 10) as s:
        s.save_artifact(np.random.default_rng(1).random(80 * 8192), "big")  # 80 chunks
    # This process keeps the store open all along, as a long-lived service would:
    # the reader table is not reset by a process opening it alone.
    with Store.open(path) as mine:
        spawner = subprocess.Popen(
            [sys.executable, "-c", SPAWNER, str(path), str(PROCESSES)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert spawner.stdin is not None and spawner.stdout is not None
        try:
            line = spawner.stdout.readline().split()
            assert line[:2] == ["in", "place"], (line, spawner.stderr.read()[-3000:])
            holding, refused = int(line[2]), int(line[3])
            assert holding + refused == 2 * PROCESSES and refused > 0  # every slot taken
            # While they live, the slots are really taken: a clear message.
            msg = open_and_read(path)
            assert msg.startswith("StoreError") and "reader slots" in msg, msg
            assert "live readers" in msg and "Close processes" in msg
            with pytest.raises(StoreError, match="reader slots"):
                mine.list_artifacts()
            spawner.stdin.write("kill\n")
            spawner.stdin.flush()
            assert spawner.stdout.readline().strip() == "killed"
        finally:
            if spawner.poll() is None:
                with contextlib.suppress(BrokenPipeError):
                    spawner.stdin.write("kill\n")  # its children die with it in any case
                    spawner.stdin.flush()
                try:
                    spawner.wait(60)
                except subprocess.TimeoutExpired:
                    spawner.kill()
                    spawner.wait()
            for f in (spawner.stdin, spawner.stdout, spawner.stderr):
                if f is not None:
                    f.close()
        # Every reader is dead now, their slots still taken: a new process opens
        # and reads, and so does this one.
        assert open_and_read(path) == "read 1"
        assert [a.name for a in mine.list_artifacts()] == ["big"]
        assert mine.verify().ok
