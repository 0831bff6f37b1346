"""The ledger's data file (``data.mdb``) checked before LMDB maps it.

LMDB trusts its file: a data file shorter than its meta pages say is mapped
anyway, and the first read past the end kills the process with SIGBUS. So
:func:`inspect` reads the two meta pages itself (two small reads) and
:func:`check` refuses a file that cannot be right, naming the file, the
sizes and the recovery path.

On-disk layout (LMDB 0.9, data format version 1, 64-bit; checked against
files written by py-lmdb): page 0 and page 1 are meta pages. Each starts
with a 16-byte page header (``mp_pgno`` u64, ``mp_pad`` u16, ``mp_flags``
u16 with ``P_META`` = 0x08, 4 bytes) followed by ``MDB_meta``: ``mm_magic``
u32 = 0xBEEFC0DE, ``mm_version`` u32 = 1, ``mm_address`` u64, ``mm_mapsize``
u64, two ``MDB_db`` records of 48 bytes (the first one's ``md_pad`` is the
page size), ``mm_last_pg`` u64 and ``mm_txnid`` u64. Page 1 sits one page
size after page 0. LMDB uses the valid meta with the larger ``txnid``; the
file must hold every page up to its ``last_pg``.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

from engine.errors import LedgerDamagedError

MAGIC = 0xBEEFC0DE
DATA_VERSION = 1
P_META = 0x08
_HEADER = struct.Struct("<QHH4x")  # mp_pgno, mp_pad, mp_flags
_META = struct.Struct("<IIQQ")  # magic, version, address, mapsize (at offset 16)
_PSIZE = struct.Struct("<I")  # md_pad of the first MDB_db (at offset 40): the page size
_TAIL = struct.Struct("<QQ")  # last_pg, txnid (at offset 136)
META_END = 152
_PAGE_SIZES = (4096, 8192, 16384, 32768, 65536)

RECOVER_HINT = (
    "run `artledger recover` (Store.recover) to rebuild the ledger from what still "
    "reads, the pack files and, if you have one, an export (`--from FILE`); "
    "see docs/reliability.md"
)


@dataclass(frozen=True)
class Meta:
    """One valid meta page."""

    page: int
    page_size: int
    map_size: int
    last_pgno: int
    txnid: int

    @property
    def needed(self) -> int:
        """The smallest file size that holds every page this meta references."""
        return (self.last_pgno + 1) * self.page_size


@dataclass(frozen=True)
class DataFile:
    """What :func:`inspect` found. ``state`` is one of ``missing``, ``empty``
    (0 bytes), ``blank`` (meta pages of a ledger that never committed),
    ``ok``, ``truncated``, ``bad_meta`` (no valid meta page), ``one_bad_meta``
    (one valid meta page: LMDB refuses such a file), ``unknown`` (an LMDB
    format this module does not read; left to LMDB)."""

    path: Path
    state: str
    size: int = 0
    metas: tuple[Meta | None, Meta | None] = (None, None)

    @property
    def newest(self) -> Meta | None:
        valid = [m for m in self.metas if m is not None]
        return max(valid, key=lambda m: m.txnid) if valid else None

    @property
    def committed(self) -> bool:
        """Whether the file records at least one committed transaction."""
        m = self.newest
        return m is not None and m.txnid > 0

    def problem(self) -> str | None:
        """Why this file cannot be opened safely (None when it can)."""
        p = self.path
        if self.state == "truncated":
            m = self.newest
            assert m is not None
            return (
                f"the ledger data file {p} is truncated: it is {self.size} bytes but its "
                f"meta page (transaction {m.txnid}) references {m.last_pgno + 1} pages of "
                f"{m.page_size} bytes ({m.needed} bytes); opening it would crash the process"
            )
        if self.state == "bad_meta":
            return (
                f"the ledger data file {p} ({self.size} bytes) has no valid LMDB meta page "
                "(pages 0 and 1 are damaged or it is not a ledger)"
            )
        if self.state == "one_bad_meta":
            bad = 0 if self.metas[0] is None else 1
            return f"the ledger data file {p}: meta page {bad} is damaged"
        return None


def _meta_at(buf: bytes, page: int) -> Meta | None:
    if len(buf) < META_END:
        return None
    _, _, flags = _HEADER.unpack_from(buf, 0)
    magic, version, _, mapsize = _META.unpack_from(buf, 16)
    if not flags & P_META or magic != MAGIC or version != DATA_VERSION:
        return None
    (psize,) = _PSIZE.unpack_from(buf, 40)
    last_pg, txnid = _TAIL.unpack_from(buf, 136)
    if psize not in _PAGE_SIZES or last_pg < 1 or last_pg > (1 << 48):
        return None
    return Meta(page, psize, mapsize, last_pg, txnid)


def _other_format(buf: bytes) -> bool:
    """A meta page of another LMDB data format (e.g. 1.0's version 3)."""
    for off in range(0, min(len(buf), 64) - 7, 4):
        magic, version = struct.unpack_from("<II", buf, off)
        if magic == MAGIC:
            return bool(version != DATA_VERSION)
    return False


def inspect(path: Path) -> DataFile:
    """Read the meta pages of the data file at ``path`` (two small reads, then
    its size: a writer grows the file before it writes a meta page pointing
    into the new part, so this order never sees a sound file as truncated)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return DataFile(path, "missing")
    try:
        first = os.pread(fd, META_END, 0)
        if not first:
            return DataFile(path, "empty")
        m0 = _meta_at(first, 0)
        sizes = (m0.page_size,) if m0 is not None else _PAGE_SIZES
        m1 = None
        for psize in sizes:
            m1 = _meta_at(os.pread(fd, META_END, psize), 1)
            if m1 is not None:
                break
        size = os.fstat(fd).st_size
    finally:
        os.close(fd)
    metas = (m0, m1)
    if m0 is None and m1 is None:
        state = "unknown" if _other_format(first) else "bad_meta"
        return DataFile(path, state, size, metas)
    df = DataFile(path, "ok", size, metas)
    newest = df.newest
    assert newest is not None
    if size < newest.needed:
        return DataFile(path, "truncated", size, metas)
    if m0 is None or m1 is None:
        return DataFile(path, "one_bad_meta", size, metas)
    if not df.committed:
        return DataFile(path, "blank", size, metas)
    return df


def check(path: Path) -> DataFile:
    """:func:`inspect`, raising :class:`LedgerDamagedError` for a file LMDB
    must not map (truncated, or no valid meta page)."""
    df = inspect(path)
    problem = df.problem()
    if problem is not None:
        raise LedgerDamagedError(f"{problem}; {RECOVER_HINT}")
    return df
