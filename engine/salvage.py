"""Read what still reads from a damaged ledger: run as a child process.

``python -m engine.salvage [--walk] DATA_FILE DB...`` opens ``DATA_FILE`` (an
LMDB data file) read-only and without a lock file, walks each database
``DB`` in key order, and writes a msgpack stream on stdout: per database
``["begin", DB]``, one ``[key, value]`` pair (bytes) per record (not with
``--walk``, which only reads them), then ``["end", count]`` or ``["error",
message, count]``. Each record is written as soon as it is read, so when LMDB meets
a damaged page and the process dies (SIGBUS, SIGSEGV, SIGABRT: LMDB trusts
its pages), everything read before is already out. ``engine.recover`` runs
it and keeps what it wrote; only the child dies.
"""

from __future__ import annotations

import os
import sys


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
        sys.stderr.write("usage: python -m engine.salvage [--walk] DATA_FILE DB...\n")
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
