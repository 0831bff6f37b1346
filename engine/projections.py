"""Projections: what you can query, folded from the event log.

:func:`apply` is the one pure function that folds an event into the
projection databases. The live append path calls it in the same transaction
as the append; ``Store.rebuild`` and ``Store.as_of`` call it over the whole
log. Folding the same events must give byte-identical projections.

Databases (all keys bytes, values msgpack):

- ``artifacts``: artifact id -> artifact record
- ``names``: name NUL seq -> id (creation order per name)
- ``versions``: name NUL packed(version) -> id
- ``name_meta``: name -> next integer version (8 bytes, big-endian)
- ``tags``: tag NUL id -> b""
- ``content``: content hash (16 bytes) id -> b""
- ``counters``: name -> integer (deleted_artifacts, logical_bytes, runs ...);
  live artifacts = entries of ``artifacts`` - deleted_artifacts
- run and step databases: see ``engine.projections_runs``.
"""

from __future__ import annotations

import gc
import struct
from collections.abc import Callable, Iterable
from typing import Any

from engine.errors import IntegrityError
from engine.kv import PROJECTION_DBS, Txn
from engine.log import Event, pack, unpack

__all__ = ["HANDLERS", "PROJECTION_DBS", "apply", "fold", "handles"]

Handler = Callable[[Txn, Event], None]
HANDLERS: dict[str, Handler] = {}
_Q = struct.Struct(">Q")


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
    once at the end instead."""
    fn = HANDLERS.get(event.type)
    if fn is not None:
        try:
            fn(txn, event)
        except _MALFORMED as e:
            raise _malformed(event, e) from e
    if track:
        txn.put("meta", b"proj_pos", _Q.pack(event.seq))


def fold(txn: Txn, events: Iterable[Event]) -> int:
    """Fold many events in order; the number folded.

    The cyclic garbage collector is paused meanwhile: a fold allocates
    millions of short-lived, acyclic containers and would otherwise trigger
    it over and over for nothing."""
    handlers = HANDLERS
    n = last = 0
    event: Event | None = None
    paused = gc.isenabled()
    gc.disable()
    try:
        for event in events:
            fn = handlers.get(event.type)
            if fn is not None:
                fn(txn, event)
            last = event.seq
            n += 1
    except _MALFORMED as e:
        assert event is not None
        raise _malformed(event, e) from e
    finally:
        if paused:
            gc.enable()
    if n:
        txn.put("meta", b"proj_pos", _Q.pack(last))
    return n


def position(txn: Txn) -> int:
    raw = txn.get("meta", b"proj_pos")
    return 0 if raw is None else int(_Q.unpack(raw)[0])


# -- helpers -------------------------------------------------------------------


def get_record(txn: Txn, db: str, key: str) -> dict[str, Any] | None:
    raw = txn.get(db, key.encode())
    return None if raw is None else unpack(raw)


def put_record(txn: Txn, db: str, key: str, rec: dict[str, Any]) -> None:
    txn.put(db, key.encode(), pack(rec))


def bump(txn: Txn, name: str, delta: int) -> None:
    key = name.encode()
    raw = txn.get("counters", key)
    value = (0 if raw is None else int(_Q.unpack(raw)[0])) + delta
    txn.put("counters", key, _Q.pack(min(max(value, 0), 2**64 - 1)))


def counter(txn: Txn, name: str) -> int:
    raw = txn.get("counters", name.encode())
    return 0 if raw is None else int(_Q.unpack(raw)[0])


# Integer versions: int64, with room for the next one in ``name_meta``.
MIN_VERSION = -(2**63)
MAX_VERSION = 2**63 - 2


def version_key(name: str, version: int | str) -> bytes:
    return name.encode() + b"\x00" + pack(version)


def name_key(name: str, seq: int) -> bytes:
    return name.encode() + b"\x00" + _Q.pack(seq)


def tag_key(tag: str, artifact_id: str) -> bytes:
    return tag.encode() + b"\x00" + artifact_id.encode()


def next_version(txn: Txn, name: str) -> int:
    raw = txn.get("name_meta", name.encode())
    return 1 if raw is None else int(_Q.unpack(raw)[0])


# -- artifacts -----------------------------------------------------------------


@handles("artifact.written")
def _artifact_written(txn: Txn, e: Event) -> None:
    d = e.data
    aid = d["id"]
    rec = dict(d)
    rec["seq"] = e.seq
    rec["ts"] = e.ts
    rec["tags"] = sorted(set(d.get("tags") or ()))
    rec["user_metadata"] = dict(d.get("user_metadata") or {})
    rec["deleted"] = None
    put_record(txn, "artifacts", aid, rec)
    name, version = d["name"], d["version"]
    txn.put("names", name_key(name, e.seq), aid.encode())
    txn.put("versions", version_key(name, version), aid.encode())
    nxt = next_version(txn, name)
    if isinstance(version, int) and version >= nxt:
        nxt = version + 1
    txn.put("name_meta", name.encode(), _Q.pack(nxt))
    for tag in rec["tags"]:
        txn.put("tags", tag_key(tag, aid), b"")
    txn.put("content", bytes.fromhex(d["content_hash"]) + aid.encode(), b"")
    bump(txn, "logical_bytes", int(d.get("size", 0)))


@handles("artifact.tagged", "artifact.untagged")
def _artifact_tags(txn: Txn, e: Event) -> None:
    aid = e.data["id"]
    rec = get_record(txn, "artifacts", aid)
    if rec is None:
        return
    tags = set(rec["tags"])
    for tag in e.data["tags"]:
        if e.type == "artifact.tagged":
            tags.add(tag)
            txn.put("tags", tag_key(tag, aid), b"")
        else:
            tags.discard(tag)
            txn.delete("tags", tag_key(tag, aid))
    rec["tags"] = sorted(tags)
    put_record(txn, "artifacts", aid, rec)


@handles("metadata.logged")
def _metadata_logged(txn: Txn, e: Event) -> None:
    aid = e.data["id"]
    rec = get_record(txn, "artifacts", aid)
    if rec is None:
        return
    rec["user_metadata"].update(e.data["metadata"])
    put_record(txn, "artifacts", aid, rec)


@handles("artifact.deleted")
def _artifact_deleted(txn: Txn, e: Event) -> None:
    aid = e.data["id"]
    rec = get_record(txn, "artifacts", aid)
    if rec is None or rec["deleted"] is not None:
        return
    rec["deleted"] = e.seq
    put_record(txn, "artifacts", aid, rec)
    for tag in rec["tags"]:
        txn.delete("tags", tag_key(tag, aid))
    txn.delete("content", bytes.fromhex(rec["content_hash"]) + aid.encode())
    bump(txn, "deleted_artifacts", 1)
    bump(txn, "logical_bytes", -int(rec.get("size", 0)))


@handles("gc.completed")
def _gc_completed(txn: Txn, e: Event) -> None:
    bump(txn, "gc_runs", 1)


# Run and step projections register their handlers on import.
from engine import projections_runs  # noqa: E402,F401
