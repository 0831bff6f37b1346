"""LMDB's reader table, for when LMDB itself cannot open the ledger.

Every read transaction holds a slot in the reader table in ``lock.mdb``. A
process killed inside a read leaves its slot taken; ``Environment.reader_check()``
frees such slots, but it needs an open environment, and opening one needs a
free slot (py-lmdb begins a read transaction while opening). When every slot
is taken, :func:`clear_dead_readers` does what ``mdb_reader_check`` does,
under the table's own mutex: a slot whose process no longer holds its lock
on the lock file (LMDB locks byte ``pid`` of it while the process has the
environment open) is freed.

Layout (LMDB 0.9 lock format 0x10001 on x86-64 Linux, checked against files
written by py-lmdb; anything else is left alone): u32 magic 0xBEEFC0DE, u32
format, the readers' robust process-shared pthread mutex (40 bytes) at 8,
u64 txnid at 48, u32 number of slots ever used at 56; slots of 64 bytes from
offset 128, each u64 txnid, i32 pid, u64 thread.

Never call this in a process that has the environment open: closing any
descriptor of ``lock.mdb`` drops every POSIX lock the process holds on it,
LMDB's included.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import mmap
import os
import platform
import struct
import sys
from dataclasses import dataclass, field
from pathlib import Path

MAGIC = 0xBEEFC0DE
LOCK_FORMAT = 0x10001
MUTEX_OFFSET = 8
MUTEX_SIZE = 40
NUMREADERS_OFFSET = 56
SLOTS_OFFSET = 128
SLOT_SIZE = 64
PID_OFFSET = 8
FLOCK = struct.Struct("=hh4xqqi4x")  # struct flock on x86-64 Linux


@dataclass
class ReaderTable:
    """What :func:`clear_dead_readers` saw: slots in the table, slots held by
    live processes (and their pids), slots it freed."""

    slots: int = 0
    live: int = 0
    cleared: int = 0
    pids: list[int] = field(default_factory=list)
    supported: bool = True


def _supported() -> bool:
    return sys.platform.startswith("linux") and platform.machine() == "x86_64"


def pid_alive(fd: int, pid: int) -> bool:
    """Whether process ``pid`` holds its lock on the lock file open at ``fd``."""
    req = FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, pid, 1, 0)
    got = fcntl.fcntl(fd, fcntl.F_GETLK, req)
    return int(FLOCK.unpack(got)[0]) != fcntl.F_UNLCK


def clear_dead_readers(lock_path: Path) -> ReaderTable:
    """Free the reader slots of processes that are gone; what the table holds."""
    table = ReaderTable(supported=_supported())
    if not table.supported:
        return table
    try:
        fd = os.open(lock_path, os.O_RDWR)
    except OSError:
        table.supported = False
        return table
    try:
        size = os.fstat(fd).st_size
        if size < SLOTS_OFFSET + SLOT_SIZE:
            table.supported = False
            return table
        with mmap.mmap(fd, size) as mm:
            magic, fmt = struct.unpack_from("<II", mm, 0)
            if (magic, fmt) != (MAGIC, LOCK_FORMAT):
                table.supported = False
                return table
            table.slots = (size - SLOTS_OFFSET) // SLOT_SIZE
            _sweep(fd, mm, table)
    finally:
        os.close(fd)
    return table


def _sweep(fd: int, mm: mmap.mmap, table: ReaderTable) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    lock, unlock, consistent = (
        libc.pthread_mutex_lock,
        libc.pthread_mutex_unlock,
        libc.pthread_mutex_consistent,
    )
    for fn in (lock, unlock, consistent):
        fn.argtypes = [ctypes.c_void_p]
        fn.restype = ctypes.c_int
    cell = (ctypes.c_char * MUTEX_SIZE).from_buffer(mm, MUTEX_OFFSET)
    try:
        addr = ctypes.addressof(cell)
        rc = lock(addr)
        if rc == errno.EOWNERDEAD:  # its holder died: LMDB's own recovery does the same
            consistent(addr)
        elif rc:
            table.supported = False
            return
        try:
            (used,) = struct.unpack_from("<I", mm, NUMREADERS_OFFSET)
            me = os.getpid()
            verdict: dict[int, bool] = {}
            for i in range(min(used, table.slots)):
                off = SLOTS_OFFSET + i * SLOT_SIZE + PID_OFFSET
                (pid,) = struct.unpack_from("<i", mm, off)
                if not pid:
                    continue
                alive = verdict.get(pid)
                if alive is None:
                    alive = verdict[pid] = pid == me or pid_alive(fd, pid)
                if alive:
                    table.live += 1
                else:
                    struct.pack_into("<i", mm, off, 0)
                    table.cleared += 1
            table.pids = sorted(p for p, alive in verdict.items() if alive)
        finally:
            unlock(addr)
    finally:
        del cell
