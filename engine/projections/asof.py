"""Reading the projections as of an earlier event, from the temporal index.

:class:`AsOfKV` is a read-only KV over a store's KV: its projection databases
answer as they stood after event ``seq`` (each key's newest ``history`` entry at
or before ``seq``), ``meta`` says the log ends at ``seq``, and every other
database (the event log, the chunk index) reads live. Opening one costs
nothing; a ``get`` is one short reverse range read, a scan reads the history
of the keys in its range.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator
from typing import TypeVar, cast

from engine.errors import ReadOnlyStoreError
from engine.projections.keys import ALL_RUNS, u64
from engine.projections.schema import SEQ_KEYED_DBS
from engine.projections.temporal import DB_IDS, HISTORY, TOMBSTONE, bound, key_stem, stem_key
from engine.storage.kv import KV, Txn
from engine.storage.kv.base import bounds
from engine.storage.log import seq_key

T = TypeVar("T")


Pairs = Iterator[tuple[bytes, bytes]]
_LAST = b"\xff" * 9  # after every seq


def _first(pair: tuple[bytes, bytes]) -> bytes:
    return pair[0]


def _one_group(prefix: bytes) -> bool:
    """Whether ``prefix`` is exactly one group of a seq-keyed database: the
    group's name (which holds no NUL) and its NUL, or all runs."""
    return prefix == ALL_RUNS or (prefix[-1] == 0 and prefix.count(b"\x00") == 1)


class AsOfTxn(Txn):
    """A read-only transaction over ``txn`` showing the projections as of ``seq``."""

    __slots__ = ("_stop", "seq", "txn")

    def __init__(self, txn: Txn, seq: int) -> None:
        self.txn = txn
        self.seq = seq
        self._stop = u64(seq + 1)

    def get(self, db: str, key: bytes) -> bytes | None:
        db_id = DB_IDS.get(db)
        if db_id is None:
            if db == "meta" and key in (b"head_seq", b"proj_pos"):
                return (
                    (seq_key(self.seq) if key == b"head_seq" else u64(self.seq))
                    if self.seq
                    else None
                )
            return self.txn.get(db, key)
        stem = key_stem(db_id, key)
        if db in SEQ_KEYED_DBS:  # its key says when it came; history holds its delete
            if len(key) < 8 or key[-8:] >= self._stop:
                return None
            value = self.txn.get(db, key)
            if value is not None:
                return value
            hit = self.txn.last_below(HISTORY, stem + _LAST, stem)
            return hit[1][1:] if hit is not None and hit[0][-8:] >= self._stop else None
        hit = self.txn.last_below(HISTORY, stem + self._stop, stem)
        return None if hit is None or hit[1] == TOMBSTONE else hit[1][1:]

    def scan(
        self,
        db: str,
        start: bytes | None = None,
        stop: bytes | None = None,
        *,
        prefix: bytes | None = None,
        reverse: bool = False,
    ) -> Iterator[tuple[bytes, bytes]]:
        db_id = DB_IDS.get(db)
        if db_id is None:
            return self.txn.scan(db, start, stop, prefix=prefix, reverse=reverse)
        if prefix and db in SEQ_KEYED_DBS and _one_group(prefix):
            # Keys of this group created after ``seq`` did not exist then: skip them.
            cap = prefix + self._stop
            stop = cap if stop is None or stop > cap else stop
        start, stop = bounds(start, stop, prefix)
        lo = bound(db_id, start) if start else db_id
        hi = bound(db_id, stop) if stop is not None else bytes([db_id[0] + 1])
        entries = self.txn.scan(HISTORY, lo, hi, reverse=reverse)
        if db in SEQ_KEYED_DBS:
            return self._seq_keyed(db, start, stop, entries, reverse)
        return (_newest_first if reverse else _oldest_first)(entries, self.seq)

    def _seq_keyed(
        self,
        db: str,
        start: bytes | None,
        stop: bytes | None,
        entries: Pairs,
        reverse: bool,
    ) -> Pairs:
        """The keys of a seq-keyed projection that existed at ``seq``: the live
        ones created by then, and those deleted since (their history entry)."""
        at = self._stop
        live = (kv for kv in self.txn.scan(db, start, stop, reverse=reverse) if kv[0][-8:] < at)
        gone = (
            (key, v[1:])
            for hkey, v in entries
            if hkey[-8:] >= at and (key := stem_key(hkey[:-8]))[-8:] < at
        )
        return heapq.merge(live, gone, key=_first, reverse=reverse)

    def put(self, db: str, key: bytes, value: bytes) -> None:
        raise ReadOnlyStoreError("an as_of view is read-only")

    def delete(self, db: str, key: bytes) -> bool:
        raise ReadOnlyStoreError("an as_of view is read-only")

    def drop(self, db: str) -> None:
        raise ReadOnlyStoreError("an as_of view is read-only")

    def count(self, db: str) -> int:
        if db not in DB_IDS:
            return self.txn.count(db)
        return sum(1 for _ in self.scan(db))


def _oldest_first(
    entries: Iterator[tuple[bytes, bytes]], seq: int
) -> Iterator[tuple[bytes, bytes]]:
    """The live pairs at ``seq`` of history entries in key order (each key's
    entries oldest first: the last one at or before ``seq`` counts)."""
    cur: bytes | None = None
    best: bytes | None = None
    for hkey, v in entries:
        stem = hkey[:-8]
        if stem != cur:
            if best:  # neither None nor a tombstone
                assert cur is not None
                yield stem_key(cur), best[1:]
            cur, best = stem, None
        if int.from_bytes(hkey[-8:], "big") <= seq:
            best = v
    if best:
        assert cur is not None
        yield stem_key(cur), best[1:]


def _newest_first(
    entries: Iterator[tuple[bytes, bytes]], seq: int
) -> Iterator[tuple[bytes, bytes]]:
    """As :func:`_oldest_first` over entries in reverse key order (each key's
    entries newest first: the first one at or before ``seq`` counts)."""
    done: bytes | None = None
    for hkey, v in entries:
        stem = hkey[:-8]
        if stem == done or int.from_bytes(hkey[-8:], "big") > seq:
            continue
        done = stem
        if v:
            yield stem_key(stem), v[1:]


class AsOfKV(KV):
    """The read-only KV of ``kv`` as of event ``seq`` (see the module docstring)."""

    def __init__(self, kv: KV, seq: int) -> None:
        self.kv = kv
        self.seq = seq

    @property
    def databases(self) -> tuple[str, ...]:
        return self.kv.databases

    def read(self) -> Txn:
        return AsOfTxn(self.kv.read(), self.seq)

    def end_read(self, txn: Txn) -> None:
        self.kv.end_read(cast(AsOfTxn, txn).txn)

    def write(self, fn: Callable[[Txn], T]) -> T:
        raise ReadOnlyStoreError("an as_of view is read-only")
