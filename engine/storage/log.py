"""The append-only, hash-chained event log.

Key: 8-byte big-endian sequence number, gapless from 1. Value: a msgpack map
``{type, v, ts, data, prev}``. ``prev`` is the chain hash of the event before;
the chain hash of event *n* is BLAKE2b-128 over ``prev_n || value_n`` (the
exact stored bytes), so changing, removing or reordering any stored event
breaks the chain at the next event or at the head hash kept in ``meta``.

Records carry a schema version ``v``; :func:`register_upcaster` lets an old
version be read as the current one. Events are never updated or deleted.

Timestamps never decrease along the log after its first event: an event is
stamped ``max(now, the last event's ts)`` (a clock stepping back, or an
imported event stamped ahead, never puts a later event before an earlier one
in time). The first event, ``store.created``, is the exception: history
imported into a new store keeps its own, older, timestamps after it.
``meta`` keeps ``ts_order`` = (last ts, the seq up to which the log is known
to be ordered), so appending costs one ``get``; logs written by older
versions may be out of order, which :meth:`EventLog.seq_at` handles.
"""

from __future__ import annotations

import hashlib
import struct
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple

import msgpack

from engine.errors import IntegrityError
from engine.storage.kv import Txn

GENESIS = b"\x00" * 16
_SEQ = struct.Struct(">Q")
_TS_ORDER = struct.Struct(">QQ")

# Current schema version of each event type. Types absent here are version 1.
SCHEMA_VERSIONS: dict[str, int] = {}
_UPCASTERS: dict[tuple[str, int], Callable[[dict[str, Any]], dict[str, Any]]] = {}


class Event(NamedTuple):
    """One event as read back: sequence number, type, data (upcast), time (ns)."""

    seq: int
    type: str
    data: dict[str, Any]
    ts: int


def register_upcaster(
    event_type: str, from_version: int
) -> Callable[
    [Callable[[dict[str, Any]], dict[str, Any]]], Callable[[dict[str, Any]], dict[str, Any]]
]:
    """Register ``fn(data) -> data`` turning ``event_type`` version ``from_version``
    into version ``from_version + 1``; the current version becomes at least that."""

    def deco(
        fn: Callable[[dict[str, Any]], dict[str, Any]],
    ) -> Callable[[dict[str, Any]], dict[str, Any]]:
        _UPCASTERS[(event_type, from_version)] = fn
        SCHEMA_VERSIONS[event_type] = max(SCHEMA_VERSIONS.get(event_type, 1), from_version + 1)
        return fn

    return deco


def seq_key(seq: int) -> bytes:
    return _SEQ.pack(seq)


def key_seq(key: bytes) -> int:
    return int(_SEQ.unpack(key)[0])


def chain(prev: bytes, raw: bytes) -> bytes:
    """The chain hash of an event whose stored value is ``raw``."""
    return hashlib.blake2b(prev + raw, digest_size=16).digest()


# One packer for the process: ``packb`` builds a new one per call, which costs
# more than packing a small record. ``Packer.pack`` runs in C under the GIL
# without calling back into Python (no ``default``), and resets on error.
_PACK = msgpack.Packer(use_bin_type=True).pack


def pack(obj: Any) -> bytes:
    return _PACK(obj)  # type: ignore[no-any-return]


def unpack(raw: bytes) -> Any:
    return msgpack.unpackb(raw, raw=False, strict_map_key=False)


def upcast(event_type: str, version: int, data: dict[str, Any]) -> dict[str, Any]:
    """Bring ``data`` from ``version`` to the current schema of ``event_type``."""
    current = SCHEMA_VERSIONS.get(event_type, 1)
    if version > current:
        raise IntegrityError(
            f"event type {event_type!r} has schema version {version}, newer than this "
            f"artledger knows ({current}); upgrade artledger to read this store"
        )
    while version < current:
        fn = _UPCASTERS.get((event_type, version))
        if fn is None:
            raise IntegrityError(
                f"no upcaster for event type {event_type!r} version {version}; "
                "register one with engine.storage.log.register_upcaster"
            )
        data = fn(data)
        version += 1
    return data


def decode(seq: int, raw: bytes) -> Event:
    """Decode a stored value into an :class:`Event` (upcast to the current schema)."""
    try:
        env = unpack(raw)
        etype, version, ts, data = env["type"], env["v"], env["ts"], env["data"]
    except Exception as e:
        raise IntegrityError(f"event {seq} cannot be decoded ({e}); run `artledger verify`") from e
    if type(etype) is not str or type(data) is not dict or type(ts) is not int:
        raise IntegrityError(f"event {seq} has a malformed envelope; run `artledger verify`")
    if version != SCHEMA_VERSIONS.get(etype, 1):
        data = upcast(etype, int(version), data)
    return Event(seq, etype, data, ts)


class EventLog:
    """Append and read events inside the caller's transaction."""

    def head(self, txn: Txn) -> int:
        raw = txn.get("meta", b"head_seq")
        return 0 if raw is None else key_seq(raw)

    def head_hash(self, txn: Txn) -> bytes:
        return txn.get("meta", b"head_hash") or GENESIS

    def ts_order(self, txn: Txn) -> tuple[int, int]:
        """(the floor for the next event's ts: the last event's, or 0 while the
        log holds only ``store.created``; the seq up to which timestamps are
        known to be non-decreasing from event 2). A log from before
        ``ts_order`` was kept reports its head event's ts and 0 (unknown) until
        :meth:`seq_at` checks it."""
        raw = txn.get("meta", b"ts_order")
        if raw is not None:
            last, ordered = _TS_ORDER.unpack(raw)
            return int(last), int(ordered)
        head = self.head(txn)
        if head <= 1:
            return 0, head
        raw = txn.get("events", seq_key(head))
        return (0 if raw is None else decode(head, raw).ts), 0

    def _set_ts_order(self, txn: Txn, head_before: int, seq: int, last: int) -> None:
        _, ordered = self.ts_order(txn)
        if ordered == head_before:  # ordered so far, and appends keep it so
            ordered = seq
        txn.put("meta", b"ts_order", _TS_ORDER.pack(last if seq > 1 else 0, ordered))

    def append(
        self, txn: Txn, records: Iterable[tuple[str, dict[str, Any]]], *, ts: int | None = None
    ) -> list[Event]:
        """Append ``(type, data)`` records as the next events, in order, stamped
        ``max(ts or now, the last event's ts)``."""
        head = seq = self.head(txn)
        prev = self.head_hash(txn)
        last, _ = self.ts_order(txn)
        now = max(time.time_ns() if ts is None else ts, last)
        out: list[Event] = []
        for etype, data in records:
            seq += 1
            v = SCHEMA_VERSIONS.get(etype, 1)
            raw = pack({"type": etype, "v": v, "ts": now, "data": data, "prev": prev})
            txn.put("events", seq_key(seq), raw)
            prev = chain(prev, raw)
            out.append(Event(seq, etype, data, now))
        if out:
            txn.put("meta", b"head_seq", seq_key(seq))
            txn.put("meta", b"head_hash", prev)
            self._set_ts_order(txn, head, seq, now)
        return out

    def append_raw(self, txn: Txn, envelopes: Iterable[dict[str, Any]]) -> list[Event]:
        """Append already-built envelopes (import, replay ``--into``), re-chained
        here; a timestamp earlier than the event before it is raised to that."""
        head = seq = self.head(txn)
        prev = self.head_hash(txn)
        last, _ = self.ts_order(txn)
        out: list[Event] = []
        for env in envelopes:
            seq += 1
            last = max(int(env["ts"]), last)
            raw = pack(
                {
                    "type": env["type"],
                    "v": env["v"],
                    "ts": last,
                    "data": env["data"],
                    "prev": prev,
                }
            )
            txn.put("events", seq_key(seq), raw)
            prev = chain(prev, raw)
            out.append(decode(seq, raw))
        if out:
            txn.put("meta", b"head_seq", seq_key(seq))
            txn.put("meta", b"head_hash", prev)
            self._set_ts_order(txn, head, seq, last)
        return out

    def extend_verbatim(
        self, txn: Txn, rows: Iterable[tuple[int, bytes]], *, where: str = "the source log"
    ) -> list[Event]:
        """Append events exactly as another copy of this log stored them (a
        replica catching up with the shared log): each row must carry the
        next seq and chain onto the head, else ``IntegrityError`` naming the
        seq and ``where``. The stored bytes are kept as they are, so both
        copies hash to the same chain."""
        seq = self.head(txn)
        prev = self.head_hash(txn)
        last, ordered = self.ts_order(txn)
        out: list[Event] = []
        for got, raw in rows:
            if got != seq + 1:
                raise IntegrityError(
                    f"{where} has a gap: expected event {seq + 1}, found {got}; "
                    "run `artledger verify` on it"
                )
            try:
                link = unpack(raw)["prev"]
            except Exception:
                link = None
            if link != prev:
                raise IntegrityError(
                    f"event {got} of {where} does not chain onto event {seq} of this copy "
                    "(one of the two was altered, or they are different logs)"
                )
            event = decode(got, raw)
            txn.put("events", seq_key(got), raw)
            prev = chain(prev, raw)
            seq = got
            if seq > 1 and event.ts < last:
                ordered = min(ordered, seq - 1)
            last = max(last, event.ts) if seq > 1 else 0
            if ordered == seq - 1:
                ordered = seq
            out.append(event)
        if out:
            txn.put("meta", b"head_seq", seq_key(seq))
            txn.put("meta", b"head_hash", prev)
            txn.put("meta", b"ts_order", _TS_ORDER.pack(last, ordered))
        return out

    def seq_at(self, txn: Txn, ts: int) -> tuple[int, bool]:
        """The last seq of the longest prefix of the log whose events are all
        stamped ``<= ts``: the log as it was at that time (``store.created``
        only counts when nothing follows it in that prefix, since history
        imported into a new store may be older). Also whether a linear check found the
        whole log ordered (the caller may record that with :meth:`mark_ordered`).

        Binary search over the part known to be ordered; a linear scan of the
        rest only for a log written before timestamps were kept in order (and,
        once it is found ordered and marked, never again)."""
        head = self.head(txn)
        _, ordered = self.ts_order(txn)
        ordered = min(ordered, head)
        lo, hi = min(head, 1), max(ordered, 1)  # last seq in 2..ordered stamped <= ts
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self._ts(txn, mid) <= ts:
                lo = mid
            else:
                hi = mid - 1
        if lo < ordered or ordered >= head:
            return self._first(txn, lo, ts), False
        found: int | None = None
        prev_ts = self._ts(txn, ordered) if ordered > 1 else 0
        monotonic = True
        for seq, raw in self.read_raw(txn, max(ordered + 1, 2)):
            t = decode(seq, raw).ts
            if found is None and t > ts:
                found = seq - 1
            if t < prev_ts:
                monotonic = False
                if found is not None:
                    break
            prev_ts = t
        return self._first(txn, head if found is None else found, ts), monotonic

    def _first(self, txn: Txn, seq: int, ts: int) -> int:
        """``seq``, except that ``store.created`` alone counts only once it happened."""
        if seq == 1 and self._ts(txn, 1) > ts:
            return 0
        return seq

    def mark_ordered(self, txn: Txn) -> None:
        """Record that the log was found non-decreasing in time (by
        :meth:`seq_at`); events appended since were stamped in order."""
        last, _ = self.ts_order(txn)
        txn.put("meta", b"ts_order", _TS_ORDER.pack(last, self.head(txn)))

    def _ts(self, txn: Txn, seq: int) -> int:
        raw = txn.get("events", seq_key(seq))
        if raw is None:
            raise IntegrityError(f"event {seq} is missing from the log; run `artledger verify`")
        return decode(seq, raw).ts

    def read(self, txn: Txn, start: int = 1, stop: int | None = None) -> Iterator[Event]:
        """Events with ``start <= seq < stop`` (``stop`` exclusive, like ``range``)."""
        lo = seq_key(max(start, 1))
        hi = None if stop is None else seq_key(max(stop, 1))
        unpack_seq = _SEQ.unpack
        for k, raw in txn.scan("events", lo, hi):
            yield decode(unpack_seq(k)[0], raw)

    def read_raw(
        self, txn: Txn, start: int = 1, stop: int | None = None
    ) -> Iterator[tuple[int, bytes]]:
        lo = seq_key(max(start, 1))
        hi = None if stop is None else seq_key(max(stop, 1))
        for k, raw in txn.scan("events", lo, hi):
            yield key_seq(k), raw

    def verify(self, txn: Txn, progress: Callable[[int], None] | None = None) -> list[str]:
        """Walk the chain; every problem found, naming the event's seq."""
        problems: list[str] = []
        prev = GENESIS
        expected = 1
        for k, raw in txn.scan("events"):
            seq = key_seq(k)
            if seq != expected:
                problems.append(f"event log has a gap: expected seq {expected}, found {seq}")
                expected = seq
            try:
                env = unpack(raw)
                stored_prev = env["prev"]
            except Exception:
                problems.append(f"event {seq}: cannot be decoded (damaged bytes)")
                prev = chain(prev, raw)
                expected += 1
                continue
            if stored_prev != prev:
                problems.append(
                    f"event {seq}: hash chain broken (the event before it was altered, "
                    "removed or reordered)"
                )
            prev = chain(prev, raw)
            expected += 1
            if progress is not None and seq % 10000 == 0:
                progress(seq)
        head = self.head(txn)
        if head != expected - 1:
            problems.append(f"event log head says seq {head} but the log ends at {expected - 1}")
        elif head and self.head_hash(txn) != prev:
            problems.append(
                f"event {head}: does not match the head hash (the last event was altered)"
            )
        return problems
