"""Recover, the events: what a damaged ledger still holds, and how much of it the chain vouches for.

:func:`salvage_ledger` reads the old ledger's meta records, events and inline
chunk index records, through LMDB in a child process (``engine.ops.salvage``)
and from a scan of its leaf pages; :func:`check_chain` keeps the longest
prefix of the log the hash chain vouches for. See :mod:`engine.ops.recover`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from engine.errors import ArtledgerError
from engine.ops.salvage import readable_copy, run_child
from engine.storage import lmdb_file as ledger_file
from engine.storage.lmdb_pages import leaf_records
from engine.storage.log import GENESIS, chain, decode, key_seq, unpack

Progress = Callable[[str, int, int], None]


@dataclass
class Salvage:
    """What the old ledger still gives: its meta records (through LMDB), and
    candidate copies of events (seq -> distinct raw values) and of inline
    chunk index records (digest -> raw values), through LMDB and from a scan
    of its leaf pages."""

    meta: dict[bytes, bytes] = field(default_factory=dict)
    events: dict[int, list[bytes]] = field(default_factory=dict)
    events_read_whole: bool = False  # LMDB read the whole events database
    events_why: str = ""
    chunks: dict[bytes, list[bytes]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add_event(self, key: bytes, raw: bytes) -> None:
        if len(key) != 8:
            return
        copies = self.events.setdefault(key_seq(key), [])
        if raw not in copies:
            copies.append(raw)

    def add_chunk(self, key: bytes, raw: bytes) -> None:
        copies = self.chunks.setdefault(key, [])
        if raw not in copies:
            copies.append(raw)


def salvage_ledger(data: Path | None, scratch: Path, progress: Progress | None) -> Salvage:
    out = Salvage()
    if data is None or not data.is_file():
        out.notes.append(
            "there is no ledger data file to salvage events from: only an export "
            "(`recover --from FILE`) can bring the events back"
        )
        return out
    df = ledger_file.inspect(data)
    problem = df.problem()
    if problem:
        out.notes.append(problem)
    readable = readable_copy(df, scratch)
    if readable is None:
        out.notes.append(f"LMDB cannot read anything of {data} ({df.state})")
    else:
        for i, db in enumerate(("meta", "chunks", "events")):
            dump = run_child(readable, db, scratch / f"{db}.salvage")
            if not dump.complete:
                out.notes.append(
                    f"old ledger, database {db!r}: LMDB read {dump.count} records, then {dump.why}"
                )
            if db == "meta":
                out.meta = dict(dump.pairs())
            elif db == "chunks":
                for key, raw in dump.pairs():
                    out.add_chunk(key, raw)
            else:
                out.events_read_whole, out.events_why = dump.complete, dump.why
                for key, raw in dump.pairs():
                    out.add_event(key, raw)
            if progress is not None:
                progress("salvage", i + 1, 4)
    # The leaf pages LMDB could not reach (a truncated file loses its newest roots).
    newest = df.newest
    psize = newest.page_size if newest is not None else os.sysconf("SC_PAGE_SIZE")
    found = 0
    for key, raw in leaf_records(data, psize):
        if len(key) == 8 and raw[:1] == b"\x85" and b"prev" in raw:
            found += 1
            out.add_event(key, raw)
        elif len(key) == 16 and raw[:1] == b"\x94":
            out.add_chunk(key, raw)
    if progress is not None:
        progress("salvage", 4, 4)
    return out


_UNREADABLE: tuple[type[Exception], ...] = (
    ArtledgerError,
    ValueError,
    KeyError,
    TypeError,
    IndexError,
)


@dataclass
class Chain:
    raws: list[bytes] = field(default_factory=list)  # events 1..len(raws), kept
    stopped_at: int | None = None
    reason: str | None = None
    unverified: bool = False  # the last kept event has nothing after it to vouch for it


def _prev_of(seq: int, raw: bytes) -> bytes | None:
    """The chain hash an event records for the event before it (None: it does not decode)."""
    try:
        decode(seq, raw)
        prev = unpack(raw)["prev"]
    except _UNREADABLE:
        return None
    return prev if isinstance(prev, bytes) else None


def check_chain(salvage: Salvage) -> Chain:
    """The longest prefix 1..k of the old log that is gapless, decodes, and
    whose events the hash chain vouches for (each by the next event's
    ``prev``, the last by the head hash). Of several copies of an event (the
    page scan sees stale pages too), the one the chain holds through is taken.
    An event nothing after it could be read for is kept, marked unverified,
    unless the head hash contradicts it."""
    out = Chain()
    meta = salvage.meta
    head_raw = meta.get(b"head_seq")
    head = key_seq(head_raw) if head_raw is not None and len(head_raw) == 8 else None
    head_hash = meta.get(b"head_hash")

    def stop(seq: int, why: str) -> None:
        out.stopped_at, out.reason = seq, why

    prev = GENESIS  # the chain hash through the last kept event
    pending: bytes | None = None  # event len(raws) + 1: fits the chain, not yet vouched for
    n = 1
    while head is None or n <= head:
        through = prev if pending is None else chain(prev, pending)
        copies = salvage.events.get(n, [])
        prevs = [(raw, _prev_of(n, raw)) for raw in copies]
        fitting = [raw for raw, p in prevs if p == through]
        if not fitting:
            readable = [raw for raw, p in prevs if p is not None]
            if readable and pending is not None:
                stop(
                    n - 1,
                    f"event {n - 1} does not match the hash chain (event {n} records another "
                    "hash for it): it was altered",
                )
                pending = None
            elif readable:
                stop(n, f"event {n} does not fit the hash chain")
            elif copies:
                stop(n, f"event {n} cannot be decoded")
            break
        if len(fitting) > 1:  # differing copies: the next event says which one is right
            nexts = {_prev_of(n + 1, raw) for raw in salvage.events.get(n + 1, [])}
            fitting = [raw for raw in fitting if chain(through, raw) in nexts]
            if len(fitting) != 1:
                stop(n, f"differing copies of event {n} fit the hash chain")
                break
        if pending is not None:
            out.raws.append(pending)
            prev = through
        pending = fitting[0]
        n += 1
    if pending is not None:
        seq = len(out.raws) + 1
        if head == seq and head_hash is not None and head_hash != chain(prev, pending):
            stop(seq, f"event {seq}, the last, does not match the head hash: it was altered")
        else:
            out.raws.append(pending)
            out.unverified = head != seq or head_hash is None
    last = len(out.raws)
    if out.reason is None:
        if head is not None and head > last:
            stop(last + 1, f"no readable copy of event {last + 1} was found (the log had {head})")
        elif head is None and not salvage.events_read_whole:
            stop(
                last + 1,
                f"no readable copy of event {last + 1} was found (how long the log was is "
                "unknown: its head record does not read)",
            )
    return out
