"""The temporal index: every projection write, stamped with the event that made it.

The projections hold the store as of the head. So that they can answer for any
earlier point too, the fold also records each write in the ``history``
database, under the key ``db id, key (escaped), seq`` with the value written
(``b"\\x01" + value``) or a tombstone (``b""``) for a delete. The state of a
projection key as of event ``seq`` is then its newest history entry at or
before ``seq``: one seek. :class:`~engine.projections.asof.AsOfKV` reads the
projections that way, without folding anything.

Key encoding: a NUL in the key becomes ``00 FF`` and the key ends with
``00 00``, then the seq as 8 big-endian bytes. Escaped keys sort exactly as
the keys do, a key is never a prefix of another's encoding, and the encoding of
a key prefix is a prefix of the encoding of every key that starts with it; so
range and prefix scans of a projection map to range scans of its history.

The seq-keyed projections (``schema.SEQ_KEYED_DBS``) record only deletes
(``GONE`` + the value removed): their keys end with the seq of the event that
wrote them and their values never change, so a view reads them live, keeps the
keys created by then, and adds back what was deleted since.

The index is part of the projections: the fold writes it in the same
transaction, ``rebuild`` refolds it, ``verify`` compares it with a fresh fold.
``meta`` ``temporal`` marks a store whose index covers its whole log (every
store made or rebuilt since the index exists); an older store answers
``as_of`` by folding until its projections are rebuilt.
"""

from __future__ import annotations

from collections.abc import Iterator

from engine.errors import StoreError
from engine.projections.keys import u64
from engine.projections.schema import LIVE_DBS, SEQ_KEYED_DBS
from engine.storage.kv import Txn

HISTORY = "history"
#: ``meta`` key present when the history index covers the whole log.
TEMPORAL_META = b"temporal"
DB_IDS: dict[str, bytes] = {db: bytes([i + 1]) for i, db in enumerate(LIVE_DBS)}
PUT = b"\x01"
TOMBSTONE = b""
#: A seq-keyed key's one history entry: deleted by that event, and what it held.
GONE = b"\x02"
_END = b"\x00\x00"


def escape(key: bytes) -> bytes:
    """``key`` with each NUL doubled as ``00 FF`` (order-preserving)."""
    return key.replace(b"\x00", b"\x00\xff") if b"\x00" in key else key


def unescape(enc: bytes) -> bytes:
    return enc.replace(b"\x00\xff", b"\x00") if b"\x00" in enc else enc


def entry_key(db_id: bytes, key: bytes, seq: int) -> bytes:
    """The history key of ``key`` of the database ``db_id`` written by event ``seq``."""
    return db_id + escape(key) + _END + u64(seq)


def key_stem(db_id: bytes, key: bytes) -> bytes:
    """Every history key of one projection key starts with this (then the seq)."""
    return db_id + escape(key) + _END


def bound(db_id: bytes, key: bytes) -> bytes:
    """Where the history of keys ``>= key`` (or starting with ``key``) begins."""
    return db_id + escape(key)


def stem_key(stem: bytes) -> bytes:
    """The projection key of a key stem (without its database id)."""
    return unescape(stem[1:-2])


def put_entry(db: str, key: bytes, seq: bytes) -> bytes | None:
    """The history key a put of ``key`` to ``db`` by event ``seq`` (8 bytes) is
    recorded under; None for a database without history and for a seq-keyed
    one (its key says when it came: only a delete is recorded)."""
    db_id = DB_IDS.get(db)
    if db_id is None:
        return None
    if db in SEQ_KEYED_DBS:
        check_seq_keyed(db, key, seq)
        return None
    return key_stem(db_id, key) + seq


def delete_entry(db: str, key: bytes, seq: bytes, old: bytes) -> tuple[bytes, bytes]:
    """The history entry of event ``seq`` deleting ``key`` (which held ``old``)
    from the projection ``db``: a tombstone, or for a seq-keyed projection
    what it held."""
    return key_stem(DB_IDS[db], key) + seq, GONE + old if db in SEQ_KEYED_DBS else TOMBSTONE


class TemporalTxn(Txn):
    """A write transaction that records every projection write in ``history``.

    The live fold wraps its transaction in one per event (:meth:`at` names the
    event); writes to other databases (``meta``) pass through unrecorded."""

    __slots__ = ("_seq", "txn")

    def __init__(self, txn: Txn, seq: int = 0) -> None:
        self.txn = txn
        self._seq = u64(seq)

    def at(self, seq: int) -> None:
        """The event whose writes follow."""
        self._seq = u64(seq)

    def get(self, db: str, key: bytes) -> bytes | None:
        return self.txn.get(db, key)

    def put(self, db: str, key: bytes, value: bytes) -> None:
        hkey = put_entry(db, key, self._seq)
        self.txn.put(db, key, value)
        if hkey is not None:
            self.txn.put(HISTORY, hkey, PUT + value)

    def delete(self, db: str, key: bytes) -> bool:
        if db not in DB_IDS:
            return self.txn.delete(db, key)
        old = self.txn.get(db, key)
        if old is None:
            return False
        self.txn.delete(db, key)
        self.txn.put(HISTORY, *delete_entry(db, key, self._seq, old))
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
        return self.txn.scan(db, start, stop, prefix=prefix, reverse=reverse)

    def drop(self, db: str) -> None:
        raise NotImplementedError("the fold never drops a database")

    def count(self, db: str) -> int:
        return self.txn.count(db)


def check_seq_keyed(db: str, key: bytes, seq: bytes) -> None:
    """Refuse a write that would break what ``as_of`` assumes of a seq-keyed
    projection: its key ends with the seq of the event writing it."""
    if key[-8:] != seq:
        raise StoreError(
            f"a projection write to {db!r} under a key that does not end with the "
            "seq of its event: the seq-keyed rule of engine.projections.schema is broken"
        )
