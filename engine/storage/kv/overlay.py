"""Overlay: a transaction layered over another, its writes held in memory.

Reads see the overlay's own writes first, then the transaction below (a read
snapshot, or another overlay); writes (puts, deletes, drops) stay in an
ordered in-memory write-set per database until :meth:`Overlay.apply` replays
them into a real write transaction, or :meth:`Overlay.absorb` folds a child
overlay's into its parent. It behaves exactly as :class:`~engine.storage.kv.Txn`
(scans honour ``start``/``stop``/``prefix``/``reverse``), so a transaction
function cannot tell it from a real write. The ledger's pending window
(:mod:`engine.ledger.window`) is built on it.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterator

from engine.storage.kv.base import Txn, bounds

_GONE = None  # a write-set value marking a deleted key


class Overlay(Txn):
    """Writes kept in memory over ``base`` (which is only ever read)."""

    __slots__ = ("base", "dropped", "keys", "writes")

    def __init__(self, base: Txn) -> None:
        self.base = base
        self.writes: dict[str, dict[bytes, bytes | None]] = {}
        self.keys: dict[str, list[bytes]] = {}  # the write-set's keys per database, sorted
        self.dropped: set[str] = set()  # databases dropped here: ``base`` no longer shows

    def _set(self, db: str, key: bytes, value: bytes | None) -> None:
        w = self.writes.get(db)
        if w is None:
            w = self.writes[db] = {}
            self.keys[db] = []
        if key not in w:
            insort(self.keys[db], key)
        w[key] = value

    def get(self, db: str, key: bytes) -> bytes | None:
        w = self.writes.get(db)
        if w is not None and key in w:
            return w[key]
        if db in self.dropped:
            return None
        return self.base.get(db, key)

    def put(self, db: str, key: bytes, value: bytes) -> None:
        self._set(db, bytes(key), bytes(value))

    def delete(self, db: str, key: bytes) -> bool:
        if self.get(db, key) is None:
            return False
        self._set(db, bytes(key), _GONE)
        return True

    def scan(
        self,
        db: str,
        start: bytes | None = None,
        stop: bytes | None = None,
        *,
        prefix: bytes | None = None,
        reverse: bool = False,
    ) -> Iterator[tuple[bytes, bytes]]:
        below: Iterator[tuple[bytes, bytes]] = (
            iter(())
            if db in self.dropped
            else self.base.scan(db, start, stop, prefix=prefix, reverse=reverse)
        )
        w = self.writes.get(db)
        if not w:
            yield from below
            return
        lo, hi = bounds(start, stop, prefix)
        keys = self.keys[db]
        i = 0 if lo is None else bisect_left(keys, lo)
        j = len(keys) if hi is None else bisect_left(keys, hi)
        mine = [k for k in keys[i:j] if prefix is None or k.startswith(prefix)]
        if reverse:
            mine.reverse()
        yield from _merge(below, mine, w, reverse)

    def drop(self, db: str) -> None:
        self.dropped.add(db)
        self.writes.pop(db, None)
        self.keys.pop(db, None)

    def count(self, db: str) -> int:
        return sum(1 for _ in self.scan(db))

    # -- the write-set ---------------------------------------------------------------
    def absorb(self, child: Overlay) -> None:
        """Take ``child``'s writes (an overlay over this one) as this one's own."""
        for db in child.dropped:
            self.drop(db)
        for db, w in child.writes.items():
            mine = self.writes.get(db)
            if mine is None:
                self.writes[db] = dict(w)
                self.keys[db] = list(child.keys[db])
                continue
            new = [k for k in child.keys[db] if k not in mine]
            mine.update(w)
            if new:  # two sorted runs: one merge pass
                keys = self.keys[db]
                keys += new
                keys.sort()

    def apply(self, txn: Txn) -> None:
        """Replay the write-set into ``txn`` (drops, then puts and deletes in key order)."""
        for db in sorted(self.dropped):
            txn.drop(db)
        for db, w in self.writes.items():
            for key in self.keys[db]:
                value = w[key]
                if value is None:
                    txn.delete(db, key)
                else:
                    txn.put(db, key, value)

    def empty(self) -> bool:
        """Whether nothing was written here."""
        return not (self.writes or self.dropped)


def _merge(
    below: Iterator[tuple[bytes, bytes]],
    mine: list[bytes],
    writes: dict[bytes, bytes | None],
    reverse: bool,
) -> Iterator[tuple[bytes, bytes]]:
    """``below``'s pairs and the write-set's keys ``mine`` (both in scan order)
    merged; a written key hides ``below``'s pair, a deleted one shows nothing."""
    nxt = next(below, None)
    for key in mine:
        while nxt is not None and (nxt[0] > key if reverse else nxt[0] < key):
            yield nxt
            nxt = next(below, None)
        if nxt is not None and nxt[0] == key:
            nxt = next(below, None)
        value = writes[key]
        if value is not None:
            yield key, value
    while nxt is not None:
        yield nxt
        nxt = next(below, None)
