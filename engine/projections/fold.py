"""The fold: one pure function applies an event to the projections.

:func:`apply` folds one event into the projection databases. The live append
path calls it in the same transaction as the append; ``rebuild`` and
``as_of`` call :func:`fold` over the log. Folding the same events must give
byte-identical projections. Handlers register per event type with
:func:`handles` (``engine.projections.artifacts`` and ``.runs``).
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterable
from typing import Any

from engine.errors import IntegrityError
from engine.projections.batch import BatchTxn
from engine.projections.keys import from_u64, u64
from engine.projections.temporal import TemporalTxn
from engine.storage.kv import Txn
from engine.storage.log import Event, pack, unpack

Handler = Callable[[Txn, Event], None]
HANDLERS: dict[str, Handler] = {}
#: Events a batched fold buffers before writing them (memory, not speed, bounds it).
FLUSH_EVERY = 250_000


def handles(*event_types: str) -> Callable[[Handler], Handler]:
    """Register a fold function for ``event_types``."""

    def deco(fn: Handler) -> Handler:
        for t in event_types:
            HANDLERS[t] = fn
        return fn

    return deco


# What a handler raises when an event's data has the wrong shape or types.
_MALFORMED = (KeyError, TypeError, ValueError, AttributeError, IndexError)


def _malformed(event: Event, e: Exception) -> IntegrityError:
    return IntegrityError(
        f"event {event.seq} ({event.type}) has malformed data "
        f"({type(e).__name__}: {e}); run `artledger verify`"
    )


def apply(txn: Txn, event: Event, *, track: bool = True) -> None:
    """Fold one event into the projections (unknown types are kept in the log only).

    With ``track`` the fold position is written too; :func:`fold` writes it
    once at the end instead. Every projection write is also recorded in the
    temporal index (``engine.projections.temporal``)."""
    fn = HANDLERS.get(event.type)
    if fn is not None:
        try:
            fn(TemporalTxn(txn, event.seq), event)
        except _MALFORMED as e:
            raise _malformed(event, e) from e
    if track:
        txn.put("meta", b"proj_pos", u64(event.seq))


def fold(txn: Txn, events: Iterable[Event], *, flush_every: int = FLUSH_EVERY) -> int:
    """Fold many events in order; the number folded.

    Writes collect in a :class:`~engine.projections.batch.BatchTxn` and reach
    ``txn`` in key order every ``flush_every`` events and at the end. The
    cyclic garbage collector is paused meanwhile: a fold allocates millions of
    short-lived, acyclic containers and would otherwise trigger it over and
    over for nothing."""
    handlers = HANDLERS
    n = last = 0
    event: Event | None = None
    t = BatchTxn(txn)
    at = t.at
    paused = gc.isenabled()
    gc.disable()
    try:
        for event in events:
            fn = handlers.get(event.type)
            if fn is not None:
                at(event.seq)
                fn(t, event)
            last = event.seq
            n += 1
            if not n % flush_every:
                t.flush()
        t.flush()
    except _MALFORMED as e:
        assert event is not None
        raise _malformed(event, e) from e
    finally:
        if paused:
            gc.enable()
    if n:
        txn.put("meta", b"proj_pos", u64(last))
    return n


# -- helpers -------------------------------------------------------------------


def get_record(txn: Txn, db: str, key: str) -> dict[str, Any] | None:
    raw = txn.get(db, key.encode())
    return None if raw is None else unpack(raw)


def put_record(txn: Txn, db: str, key: str, rec: dict[str, Any]) -> None:
    txn.put(db, key.encode(), pack(rec))


def bump(txn: Txn, name: str, delta: int) -> None:
    key = name.encode()
    raw = txn.get("counters", key)
    value = (0 if raw is None else from_u64(raw)) + delta
    txn.put("counters", key, u64(min(max(value, 0), 2**64 - 1)))


def counter(txn: Txn, name: str) -> int:
    raw = txn.get("counters", name.encode())
    return 0 if raw is None else from_u64(raw)


def next_version(txn: Txn, name: str) -> int:
    raw = txn.get("name_meta", name.encode())
    return 1 if raw is None else from_u64(raw)
