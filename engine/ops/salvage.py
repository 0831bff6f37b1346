"""Read what still reads from a damaged ledger: run as a child process.

``python -m engine.ops.salvage [--walk] DATA_FILE DB...`` opens ``DATA_FILE`` (an
LMDB data file) read-only and without a lock file, walks each database
``DB`` in key order, and writes a msgpack stream on stdout: per database
``["begin", DB]``, one ``[key, value]`` pair (bytes) per record (not with
``--walk``, which only reads them), then ``["end", count]`` or ``["error",
message, count]``. Each record is written as soon as it is read, so when LMDB meets
a damaged page and the process dies (SIGBUS, SIGSEGV, SIGABRT: LMDB trusts
its pages), everything read before is already out. ``engine.ops.recover`` runs
it and keeps what it wrote; only the child dies.

The parent's side is here too: :func:`run_child` (one database to a file),
:func:`walk_ledger` (every database, for ``artledger verify``) and
:func:`readable_copy` (a copy of a truncated file LMDB can map).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import struct
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack

from engine.storage import lmdb_file as ledger_file


@dataclass
class Dump:
    """What the salvage child read from one database (its output file)."""

    db: str
    path: Path
    count: int = 0
    complete: bool = False
    why: str = ""

    def pairs(self) -> Iterator[tuple[bytes, bytes]]:
        with open(self.path, "rb") as f:
            unpacker = msgpack.Unpacker(f, raw=False, max_buffer_size=1 << 31)
            try:
                for item in unpacker:
                    if (
                        isinstance(item, list)
                        and len(item) == 2
                        and isinstance(item[0], bytes)
                        and isinstance(item[1], bytes)
                    ):
                        yield item[0], item[1]
            except ValueError:  # a torn last record: everything before it stands
                return


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    parent = str(Path(__file__).resolve().parents[2])  # the directory holding engine/
    env["PYTHONPATH"] = os.pathsep.join(p for p in (parent, env.get("PYTHONPATH")) if p)
    return env


def _death(returncode: int, err: bytes) -> str:
    """Why a child that wrote no final record ended."""
    if returncode < 0:
        import signal

        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"the reading process was killed by {name} (a damaged page)"
    tail = err.decode(errors="replace").strip().splitlines()[-1:] if err else []
    return f"the reading process failed ({'; '.join(tail) or returncode})"


def _markers(path: Path) -> Iterator[list[Any]]:
    """The marker records (``["begin" | "end" | "error", ...]``) a child wrote."""
    with open(path, "rb") as f, contextlib.suppress(ValueError):
        for item in msgpack.Unpacker(f, raw=False, max_buffer_size=1 << 31):
            if isinstance(item, list) and item and isinstance(item[0], str):
                yield item
            else:
                yield ["record"]


def _spawn(args: list[str], data: Path, out: Path) -> tuple[int, bytes, str]:
    """Run the salvage child on ``data``, its output to ``out``; (return code,
    stderr, why it was stopped: "" unless it timed out)."""
    timeout = 120 + data.stat().st_size / 20e6
    with open(out, "wb") as f:
        proc = subprocess.Popen(
            [sys.executable, "-m", "engine.ops.salvage", *args],
            stdout=f,
            stderr=subprocess.PIPE,
            env=_child_env(),
        )
        try:
            _, err = proc.communicate(timeout=timeout)
            return proc.returncode, err, ""
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
            return proc.returncode, err, f"reading it took longer than {timeout:.0f} s"


def run_child(data: Path, db: str, out: Path) -> Dump:
    code, err, why = _spawn([str(data), db], data, out)
    dump = Dump(db, out, why=why)
    error = ""
    for item in _markers(out):
        if item[0] == "end":
            dump.complete = True
        elif item[0] == "error":
            error = str(item[1])
        elif item[0] == "record":
            dump.count += 1
    if not dump.complete and not dump.why:
        dump.why = f"LMDB reported {error}" if error else _death(code, err)
    return dump


def walk_ledger(data: Path) -> list[str]:
    """Read every record of every database of the ledger data file ``data``
    in a child process: the damage that would kill a process reading it
    (LMDB does not check the sizes stored in its pages), as problem lines."""
    import tempfile

    from engine.projections.schema import STORE_DATABASES as DATABASES

    df = ledger_file.inspect(data)
    problem = df.problem()
    if problem is not None:
        return [problem]
    if df.state in ("missing", "empty"):
        return [f"the ledger data file {data} is {df.state}"]
    with tempfile.TemporaryDirectory(prefix="artledger-walk-") as tmp:
        out = Path(tmp) / "walk"
        code, err, why = _spawn(["--walk", str(data), *DATABASES], data, out)
        db, done = "", False
        for item in _markers(out):
            if item[0] == "begin":
                db = str(item[1])
            elif item[0] == "end":
                done = db == DATABASES[-1]
            elif item[0] == "error":
                return [
                    f"the ledger's database {db!r} is damaged: LMDB reported {item[1]} "
                    f"after {item[2]} records"
                ]
    if done:
        return []
    where = f"database {db!r}" if db else "the ledger"
    return [f"reading {where} of {data} fails: {why or _death(code, err)}"]


def readable_copy(df: ledger_file.DataFile, scratch: Path) -> Path | None:
    """A path LMDB can map without crashing: the file itself, a copy padded to
    the size its newest meta expects, or a copy with its one good meta page
    in both places; None when no meta page is valid."""
    if df.state in ("missing", "empty", "bad_meta"):
        return None
    if df.state not in ("truncated", "one_bad_meta"):
        return df.path
    copy = scratch / "data.mdb"
    shutil.copyfile(df.path, copy)
    newest = df.newest
    assert newest is not None
    if df.size < newest.needed:
        os.truncate(copy, newest.needed)  # sparse zeros: a missing page reads as garbage
    if df.metas[0] is None or df.metas[1] is None:
        good = newest.page
        psize = newest.page_size
        with open(copy, "r+b") as f:
            f.seek(good * psize)
            page = bytearray(f.read(psize))
            struct.pack_into("<Q", page, 0, 1 - good)
            f.seek((1 - good) * psize)
            f.write(page)
    return copy


# -- the child ---------------------------------------------------------------------------


def _write(data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(1, view)
        view = view[n:]


def main(argv: list[str]) -> int:
    walk = argv[:1] == ["--walk"]
    if walk:
        argv = argv[1:]
    if len(argv) < 2:
        sys.stderr.write("usage: python -m engine.ops.salvage [--walk] DATA_FILE DB...\n")
        return 2
    path, dbs = argv[0], argv[1:]
    import lmdb
    import msgpack

    pack = msgpack.Packer(use_bin_type=True).pack
    try:
        env = lmdb.open(
            path, subdir=False, readonly=True, lock=False, max_dbs=64, readahead=False, create=False
        )
    except lmdb.Error as e:
        _write(pack(["error", f"{type(e).__name__}: {e}", 0]))
        return 3
    for db in dbs:
        _write(pack(["begin", db]))
        n = 0
        try:
            handle = env.open_db(db.encode(), create=False)
            with env.begin(db=handle, buffers=False) as txn:
                for key, value in txn.cursor():
                    if not walk:  # --walk only reads every record (and dies on a bad one)
                        _write(pack([bytes(key), bytes(value)]))
                    n += 1
        except lmdb.Error as e:
            _write(pack(["error", f"{type(e).__name__}: {e}", n]))
            return 3
        _write(pack(["end", n]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
