"""A replica of a shared store: a local ledger kept a prefix of one shared log.

The shared log is a KV (PostgreSQL in production; any KV in tests) holding
``events`` (the same seq keys and the same stored bytes as every replica's
log, so every copy hashes to one chain), ``meta`` (the head, and the
store's identity and options) and ``chunkrefs``: the chunk index records
each commit added (key: the seq of the commit's first event, then the
digest; an empty value is a tombstone written by shared gc).

A write (:meth:`SharedLedger._write`) nests two transactions: the local one
outside, the shared one inside, whose first act is the store-wide lock.
Under it the replica catches up with the shared head, the body assigns
versions from the now-current projections and appends the events locally,
and the new events and chunk records are copied to the shared log, which
commits first. Then the local transaction commits. A crash between the two
leaves the replica behind, never ahead: the next catch-up brings the events
back. Chunks are durable in the blob store before either transaction
starts, and chunks found already uploaded are checked again under the lock
(:meth:`BlobStore.confirm`), so no event ever references a missing chunk.
"""

from __future__ import annotations

import contextlib
import struct
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from itertools import islice
from typing import Any, TypeVar

from engine import failpoints
from engine.errors import IntegrityError, SharedStoreUnavailableError
from engine.ledger.core import (
    Ledger,
    SyncStatus,
    _ChunkGoneError,
    _index,
    add_stored_bytes,
    record_container_state,
)
from engine.projections import fold
from engine.storage.blobs import Location
from engine.storage.chunks import ChunkRecord, WriteSession
from engine.storage.kv import KV, Txn
from engine.storage.log import Event, key_seq, seq_key

T = TypeVar("T")

SHARED_DATABASES = ("events", "meta", "chunkrefs")
PAGE = 10_000
_HEAD_KEYS = (b"head_seq", b"head_hash", b"ts_order")
_SYNCED = struct.Struct(">d")


def _record_sync_time(local: Txn) -> None:
    """When the replica last matched the shared head (``meta`` ``synced_at``,
    so a later process offline can say how stale it is)."""
    local.put("meta", b"synced_at", _SYNCED.pack(time.time()))


class SharedLedger(Ledger):
    deferrable = False  # every write commits to the shared log at once
    """A ledger whose log is a replica of the shared log ``connect()`` reaches.

    ``connect`` builds the shared-log KV (it may raise a
    ``SharedStoreUnavailableError``); it is called again after a failure,
    so a replica opened offline goes online once the server is back.
    ``where`` names the shared log in messages (no secrets)."""

    def __init__(self, *args: Any, connect: Callable[[], KV], where: str, **kwargs: Any) -> None:
        self._connect = connect
        self._remote: KV | None = None
        self.where = where
        self.synced_at: float | None = None
        self.sync_problem: str | None = None
        self._tombstones: list[bytes] = []
        super().__init__(*args, genesis=False, **kwargs)

    # -- the shared log ------------------------------------------------------------
    @property
    def remote(self) -> KV:
        """The shared-log KV, connected on first use (or after a failure)."""
        if self._remote is None:
            self._remote = self._connect()
        return self._remote

    def _failed(self, e: BaseException) -> None:
        self.sync_problem = str(e)
        if self._remote is not None:
            remote, self._remote = self._remote, None
            with contextlib.suppress(Exception):
                remote.close()

    def _remote_call(self, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except SharedStoreUnavailableError as e:
            self._failed(e)
            raise

    def close(self) -> None:
        """Flush deferred events (a shared commit), then release the replica and
        the connection to the shared log."""
        try:
            super().close()
        finally:
            if self._remote is not None:
                remote, self._remote = self._remote, None
                remote.close()

    # -- catching up -----------------------------------------------------------------
    def catch_up(self, local: Txn, remote: Txn, limit: int | None = None) -> list[Event]:
        """Copy shared events after the local head (at most ``limit``) into
        ``local``, fold them, and index the chunk records their commits added."""
        head = self.log.head(local)
        rows: Iterator[tuple[int, bytes]] = (
            (key_seq(k), v) for k, v in remote.scan("events", seq_key(head + 1))
        )
        if limit is not None:
            rows = islice(rows, limit)
        try:
            events = self.log.extend_verbatim(local, rows, where=self.where)
        except IntegrityError as e:
            raise IntegrityError(
                f"{e}. This replica ({self.path}) is no longer a copy of {self.where}: "
                "move its directory aside and open the store again to rebuild it from there"
            ) from None
        if not events:
            return events
        fold(local, events)
        added = 0
        for k, v in remote.scan("chunkrefs", seq_key(head + 1), seq_key(events[-1].seq + 1)):
            digest = k[8:]
            if not v:  # a tombstone: shared gc collected it
                local.delete("chunks", digest)
                continue
            if local.get("chunks", digest) is None:
                local.put("chunks", digest, v)
                added += ChunkRecord.unpack(v).stored_len
        add_stored_bytes(local, added)
        return events

    def _catch_up_to_head(self, local: Txn, remote: Txn) -> None:
        """Inside a shared write (the lock held): bring the replica to the shared
        head, read first (one query when nothing is new); a replica ahead of
        the shared log is refused, nothing is published from it."""
        raw = remote.get("meta", b"head_seq")
        shared_head = 0 if raw is None else key_seq(raw)
        if shared_head > self.log.head(local):
            self._catch_up_all(local, remote)
        mine = self.log.head(local)
        if mine != shared_head:
            raise IntegrityError(
                f"this replica ({self.path}) holds events up to {mine} but {self.where} ends "
                f"at {shared_head}: they are not the same log (was the database restored from "
                "an older backup?); nothing was committed. Move the replica aside and open "
                "the store again to rebuild it from the shared log"
            )

    def _catch_up_all(self, local: Txn, remote: Txn) -> int:
        n = 0
        while True:
            got = len(self.catch_up(local, remote, PAGE))
            n += got
            if got < PAGE:
                return n

    def sync(self) -> SyncStatus:
        """Pull the shared events this replica lacks (in transactions of
        :data:`PAGE` events); its status. ``SharedStoreUnavailableError``
        when the shared log cannot be reached (the replica is unchanged)."""
        self.check_open()
        pulled = 0
        while True:

            def page() -> int:
                with self.remote.snapshot() as rt:

                    def pull(lt: Txn) -> int:
                        _record_sync_time(lt)
                        return len(self.catch_up(lt, rt, PAGE))

                    return self.kv.write(pull)

            got = self._remote_call(page)
            pulled += got
            if got < PAGE:
                break
        self.synced_at = time.time()
        self.sync_problem = None
        return self.status(pulled)

    def status(self, pulled: int = 0) -> SyncStatus:
        with self.snapshot() as txn:
            head = self.log.head(txn)
            raw = txn.get("meta", b"synced_at")
        recorded = None if raw is None else _SYNCED.unpack(raw)[0]
        return SyncStatus(head, pulled, self.synced_at or recorded, self.sync_problem)

    # -- the commit path ---------------------------------------------------------------
    def _write(
        self,
        state: Mapping[str, int],
        sessions: list[WriteSession],
        body: Callable[[Txn], T],
        what: str,
    ) -> T:
        done: list[T] = []
        held = [loc for s in sessions for loc in s.held]

        def shared(lt: Txn, rt: Txn) -> T:
            self._tombstones = []
            self._catch_up_to_head(lt, rt)
            gone = self.blobs.confirm(held)
            if gone:
                raise _ChunkGoneError(bytes.fromhex(gone[0].container))
            head = self.log.head(lt)
            record_container_state(lt, state)
            for s in sessions:
                _index(lt, s)
            out = body(lt)
            failpoints.hit("commit.in_txn")
            self._publish(lt, rt, head, sessions)
            _record_sync_time(lt)
            return out

        def local(lt: Txn) -> T:
            if done:  # the shared log committed; the local commit is being re-run
                with self.remote.snapshot() as rt:
                    self._catch_up_all(lt, rt)
                return done[0]
            out = self.remote.write(lambda rt: shared(lt, rt))
            done.append(out)
            failpoints.hit("shared.after_commit")
            return out

        try:
            out = self._remote_call(lambda: self.kv.write(local))
        except _ChunkGoneError as e:
            self.sync()  # so a retry sees the gc's tombstones and uploads again
            raise e.error(what) from None
        self.synced_at = time.time()
        self.sync_problem = None
        return out

    def verify_shared(self) -> list[str]:
        """Walk the shared log's chain (problems prefixed ``shared log:``, naming
        the seq) and compare this replica's events with it, byte for byte."""

        def check() -> list[str]:
            with self.remote.snapshot() as rt:
                problems = [f"{self.where}: {p}" for p in self.log.verify(rt)]
                with self.snapshot() as lt:
                    mine = self.log.read_raw(lt)
                    for (seq, raw), (k, theirs) in zip(mine, rt.scan("events"), strict=False):
                        if key_seq(k) != seq or theirs != raw:
                            problems.append(
                                f"replica event {seq} differs from {self.where}: move the "
                                f"replica {self.path} aside and open the store again"
                            )
                            break
            return problems

        try:
            return self._remote_call(check)
        except SharedStoreUnavailableError as e:
            return [f"the shared log could not be checked: {e}"]

    # -- gc ------------------------------------------------------------------------------
    def forget_chunks(self, txn: Txn, digests: Iterable[bytes]) -> None:
        """Drop dead chunks here and, with the commit, from every replica (a
        tombstone in ``chunkrefs``): none of them dedups against them again."""
        digests = list(digests)
        super().forget_chunks(txn, digests)
        self._tombstones.extend(digests)

    def delete_blobs(self, locs: list[Location], grace: float) -> int:
        """Delete the objects a gc commit dropped, and objects no replica's
        index knows that are older than ``grace`` s (uploads whose commit
        never came), holding the store-wide lock: a writer that found an
        object already stored checks it again under that lock."""

        def sweep(rt: Txn) -> int:
            # Chunks other replicas indexed since this one last caught up (read
            # from the shared log: the replica's own lock is not taken here).
            with self.snapshot() as lt:
                head = self.log.head(lt)
                newer = {k[8:]: bool(v) for k, v in rt.scan("chunkrefs", seq_key(head + 1))}

                def indexed(d: bytes) -> bool:
                    if d in newer:
                        return newer[d]
                    return lt.get("chunks", d) is not None

                orphans = self.blobs.unindexed(indexed, time.time() - grace)
            for loc in locs + orphans:
                self.blobs.delete(loc)
            return len(locs) + len(orphans)

        return self._remote_call(lambda: self.remote.write(sweep))

    def _publish(self, lt: Txn, rt: Txn, head: int, sessions: list[WriteSession]) -> None:
        """Copy the events appended after ``head`` and the sessions' new chunk
        records from the local transaction to the shared one."""
        n = 0
        for seq, raw in self.log.read_raw(lt, head + 1):
            rt.put("events", seq_key(seq), raw)
            n += 1
        tombstones, self._tombstones = self._tombstones, []
        if not n and not any(s.new for s in sessions):
            return
        for key in _HEAD_KEYS:
            value = lt.get("meta", key)
            if value is not None:
                rt.put("meta", key, value)
        prefix = seq_key(head + 1)
        for s in sessions:
            for digest, rec in s.new.items():
                rt.put("chunkrefs", prefix + digest, rec.pack())
        for digest in tombstones:
            rt.put("chunkrefs", prefix + digest, b"")
