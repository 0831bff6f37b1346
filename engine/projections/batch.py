"""A fold over many events, written in batches.

:class:`BatchTxn` stands between the fold and its transaction when many events
are folded at once (``rebuild``, a fresh ``as_of`` fold, ``verify``, a replica
catching up). Projection writes collect in memory, per database; a read sees
them first, so a record written by one event and read by the next is never
fetched from the store; a key written many times (a counter, a step's record)
is stored once per batch. Every ``flush_every`` events and at the end the
batch is written in key order, the temporal index with it. The handlers are
the same ones the live path runs one event at a time, and the result is
byte-identical.
"""

from __future__ import annotations

from collections.abc import Iterator

from engine.projections.keys import u64
from engine.projections.temporal import DB_IDS, HISTORY, PUT, delete_entry, put_entry
from engine.storage.kv import Txn

_MISSING = object()


class BatchTxn(Txn):
    """Buffers projection writes over ``txn``; :meth:`flush` writes them.

    Set :meth:`at` before each event: history entries carry its seq."""

    def __init__(self, txn: Txn) -> None:
        self.txn = txn
        self.sets: dict[str, dict[bytes, bytes | None]] = {db: {} for db in DB_IDS}
        self.history: dict[bytes, bytes] = {}
        self._seq = u64(0)

    def at(self, seq: int) -> None:
        """The event whose writes follow."""
        self._seq = u64(seq)

    def get(self, db: str, key: bytes) -> bytes | None:
        s = self.sets.get(db)
        if s is not None:
            v = s.get(key, _MISSING)
            if v is not _MISSING:
                return v  # type: ignore[return-value]
        return self.txn.get(db, key)

    def put(self, db: str, key: bytes, value: bytes) -> None:
        s = self.sets.get(db)
        if s is None:
            self.txn.put(db, key, value)
            return
        hkey = put_entry(db, key, self._seq)
        s[key] = value
        if hkey is not None:
            # A dict: of a key an event writes twice, the last write stays.
            self.history[hkey] = PUT + value

    def delete(self, db: str, key: bytes) -> bool:
        s = self.sets.get(db)
        if s is None:
            return self.txn.delete(db, key)
        old = self.get(db, key)
        s[key] = None
        if old is not None:
            hkey, entry = delete_entry(db, key, self._seq, old)
            self.history[hkey] = entry
        return old is not None

    def scan(
        self,
        db: str,
        start: bytes | None = None,
        stop: bytes | None = None,
        *,
        prefix: bytes | None = None,
        reverse: bool = False,
    ) -> Iterator[tuple[bytes, bytes]]:
        if db in self.sets:
            self.flush()
        return self.txn.scan(db, start, stop, prefix=prefix, reverse=reverse)

    def drop(self, db: str) -> None:
        raise NotImplementedError("the fold never drops a database")

    def count(self, db: str) -> int:
        if db in self.sets:
            self.flush()
        return self.txn.count(db)

    def flush(self) -> None:
        """Write the buffered projection writes and history entries, in key order."""
        txn = self.txn
        for db, s in self.sets.items():
            if not s:
                continue
            keys = sorted(s)  # bytes sort faster than (key, value) pairs
            txn.put_many(db, [(k, v) for k in keys if (v := s[k]) is not None])
            for k in keys:
                if s[k] is None:
                    txn.delete(db, k)
            s.clear()
        if self.history:
            hist, self.history = self.history, {}
            keys = sorted(hist)
            txn.put_many(HISTORY, zip(keys, map(hist.__getitem__, keys), strict=True))
