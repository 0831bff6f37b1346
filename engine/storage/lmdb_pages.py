"""Every record still on the leaf pages of an LMDB data file, read without LMDB.

LMDB writes copy-on-write: the newest root pages of its B-trees sit near the
end of the file, so a truncated file (or one damaged page on the path from a
root) leaves most records unreachable through the tree although their leaf
pages are intact. For recovery, :func:`leaf_records` reads the file page by
page with bounded reads (never a crash, whatever the bytes) and yields the
key and value of every node of every page that looks like a leaf. It sees
stale copies too (pages freed but not yet reused), and cannot tell which
database a page belongs to: callers keep only records that prove themselves
(events by the hash chain, chunks by their digest).

Layout (LMDB 0.9, 64-bit, checked against files written by py-lmdb): a page
header of 16 bytes (``mp_pgno`` u64 = the page's own number, ``mp_pad`` u16,
``mp_flags`` u16 with ``P_LEAF`` = 0x02 and ``P_OVERFLOW`` = 0x04,
``mp_lower`` u16, ``mp_upper`` u16), then ``(mp_lower - 16) / 2`` u16
offsets of nodes. A node: ``mn_lo`` u16, ``mn_hi`` u16 (the value's size is
``lo | hi << 16``), ``mn_flags`` u16 (``F_BIGDATA`` = 0x01: the value lives
on overflow pages starting at the u64 page number stored in its place;
``F_SUBDATA`` = 0x02, ``F_DUPDATA`` = 0x04), ``mn_ksize`` u16, the key, the value.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from pathlib import Path

PAGE_HEADER = 16
P_LEAF = 0x02
P_OVERFLOW = 0x04
P_SKIP = 0x01 | 0x08 | 0x20 | 0x40  # branch, meta, leaf2, sub-page
F_BIGDATA = 0x01
F_SKIP = 0x02 | 0x04  # a sub-database or duplicate data
_HEADER = struct.Struct("<QHHHH")
_NODE = struct.Struct("<HHHH")
_BLOCK_PAGES = 256


def leaf_records(path: Path, page_size: int) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) of every node on every leaf page of the file at ``path``."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        pages = size // page_size
        for first in range(2, pages, _BLOCK_PAGES):
            block = os.pread(fd, page_size * _BLOCK_PAGES, first * page_size)
            for i in range(len(block) // page_size):
                page = block[i * page_size : (i + 1) * page_size]
                yield from _leaf(fd, page, first + i, page_size, size)
    finally:
        os.close(fd)


def _leaf(fd: int, page: bytes, pgno: int, psize: int, size: int) -> Iterator[tuple[bytes, bytes]]:
    own, _, flags, lower, upper = _HEADER.unpack_from(page)
    if own != pgno or not flags & P_LEAF or flags & (P_SKIP | P_OVERFLOW):
        return
    if not PAGE_HEADER <= lower <= upper <= psize:
        return
    for i in range((lower - PAGE_HEADER) // 2):
        (ptr,) = struct.unpack_from("<H", page, PAGE_HEADER + 2 * i)
        if ptr < upper or ptr + _NODE.size > psize:
            continue
        lo, hi, nflags, ksize = _NODE.unpack_from(page, ptr)
        dsize = lo | hi << 16
        kstart = ptr + _NODE.size
        vstart = kstart + ksize
        if nflags & F_SKIP or vstart > psize:
            continue
        key = page[kstart:vstart]
        if nflags & F_BIGDATA:
            if vstart + 8 > psize:
                continue
            (opg,) = struct.unpack_from("<Q", page, vstart)
            value = _overflow(fd, opg, dsize, psize, size)
            if value is None:
                continue
        else:
            if vstart + dsize > psize:
                continue
            value = page[vstart : vstart + dsize]
        yield key, value


def _overflow(fd: int, pgno: int, dsize: int, psize: int, size: int) -> bytes | None:
    start = pgno * psize
    if pgno < 2 or start + PAGE_HEADER + dsize > size:
        return None
    own, _, flags, _, _ = _HEADER.unpack(os.pread(fd, PAGE_HEADER, start))
    if own != pgno or not flags & P_OVERFLOW:
        return None
    value = os.pread(fd, dsize, start + PAGE_HEADER)
    return value if len(value) == dsize else None
