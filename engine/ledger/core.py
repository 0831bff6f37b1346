"""The ledger: the one commit path every write of a store goes through.

Write order is crash safety: chunks are written and flushed by the blob
store first (outside the write lock), then one KV write transaction records
the blob store's container state, indexes the new chunks, appends the
events and folds them into the projections, and commits durably. A crash
before the commit leaves only unreferenced bytes; after it, everything is
there. ``Store`` writes, the runner, gc and import all commit through
:meth:`Ledger.transact`.
"""

from __future__ import annotations

import contextlib
import secrets
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from engine import failpoints
from engine.errors import (
    ConcurrentGcError,
    LedgerDamagedError,
    ReadOnlyStoreError,
    StoreError,
    StoreFormatError,
)
from engine.events import STORE_CREATED
from engine.ledger.layout import IDENTITY, Identity, read_identity, write_identity
from engine.ledger.secret import fingerprint
from engine.ledger.window import INITIAL_COMMIT_ESTIMATE, PendingWindows, Window
from engine.projections import PROJECTION_DBS, apply, fold
from engine.projections.temporal import TEMPORAL_META
from engine.storage.blobs import BlobStore, Location
from engine.storage.chunks import ChunkStore, WriteSession
from engine.storage.kv import KV, Txn
from engine.storage.lmdb_file import RECOVER_HINT
from engine.storage.log import Event, EventLog

T = TypeVar("T")
Records = list[tuple[str, dict[str, Any]]]
FORMAT_VERSION = 1
_Q = struct.Struct(">Q")


@dataclass(frozen=True)
class SyncStatus:
    """Where a replica stands against the shared log."""

    head: int
    pulled: int
    synced_at: float | None
    problem: str | None = None

    @property
    def online(self) -> bool:
        return self.problem is None

    def staleness(self) -> str:
        """``"synced 3 s ago"``, or why it is not."""
        if self.synced_at is None:
            age = "never synced"
        else:
            age = f"last synced {time.time() - self.synced_at:.0f} s ago"
        return age if self.problem is None else f"{age}; {self.problem}"


class NoFormatError(LedgerDamagedError):
    """A ledger that committed but holds no store format record."""


class _ChunkGoneError(Exception):
    """A chunk found during dedup was collected before the commit."""

    def error(self, what: str) -> ConcurrentGcError:
        """What the caller of the write is told."""
        return ConcurrentGcError(
            f"chunk {self.args[0].hex()} was collected by a concurrent gc while {what} "
            "was in progress; nothing was committed, retry"
        )


def retry_on_concurrent_gc(write: Callable[[], T]) -> T:
    """Run ``write`` (which prepares and commits from scratch); once more if a
    gc in another process collected a chunk it deduplicated against."""
    try:
        return write()
    except ConcurrentGcError:
        return write()


class Ledger(PendingWindows):
    """The KV (log, chunk index, projections, metadata), the blob store and
    the chunk store of one store, and the commit path over them."""

    def __init__(
        self,
        kv: KV,
        blobs: BlobStore,
        *,
        path: Path | None,
        secret: bytes,
        chunk_size: int,
        level: int,
        workers: int,
        create: bool = True,
        readonly: str | None = None,
        identity: Identity | None = None,
        genesis: bool = True,
    ) -> None:
        self.path = path
        self.kv = kv
        self.blobs = blobs
        self.log = EventLog()
        self.secret = secret
        self.secret_problem: str | None = None
        self.identity_problem: str | None = None
        self.readonly = readonly
        self.closed = False
        self._deferred: Records = []
        self._deferred_lock = threading.Lock()
        self._local = threading.local()  # .window: this thread's pending window
        self.commit_seconds = INITIAL_COMMIT_ESTIMATE  # moving mean of durable commits
        self._flushed = 0.0  # the last blob flush (fsync of pack segments), in seconds
        self._init(create, identity, genesis)
        seed_raw = self.meta(b"seed")
        if seed_raw is None:
            raise LedgerDamagedError(
                f"the ledger at {self.path}/ledger has no chunk-address seed; {RECOVER_HINT}"
            )
        self.chunks = ChunkStore(
            kv, blobs, _Q.unpack(seed_raw)[0], chunk_size=chunk_size, level=level, workers=workers
        )

    # -- reading -----------------------------------------------------------------
    def snapshot(self) -> contextlib.AbstractContextManager[Txn]:
        """A read transaction, ended when the block exits."""
        return self.kv.snapshot()

    def meta(self, key: bytes) -> bytes | None:
        with self.snapshot() as txn:
            return txn.get("meta", key)

    @property
    def store_id(self) -> str:
        raw = self.meta(b"store_id")
        return "" if raw is None else raw.decode()

    def container_state(self) -> dict[str, int]:
        """The blob store's container state as committed (pack segment ends)."""
        with self.snapshot() as txn:
            return read_container_state(txn)

    # -- opening -------------------------------------------------------------------
    def _init(self, create: bool, identity: Identity | None, genesis: bool) -> None:
        ident = identity or Identity(secrets.token_hex(8), secrets.randbits(63))

        def init(txn: Txn) -> None:
            if txn.get("meta", b"format") is not None:
                return
            txn.put("meta", b"format", _Q.pack(FORMAT_VERSION))
            txn.put("meta", b"seed", _Q.pack(ident.seed))
            txn.put("meta", b"store_id", ident.store_id.encode())
            txn.put("meta", b"secret_fp", ident.secret_fp or fingerprint(self.secret))
            txn.put("meta", TEMPORAL_META, b"\x01")  # history indexed from the first event
            if not genesis:  # a replica: its log arrives from the shared log
                return
            for e in self.log.append(
                txn, [(STORE_CREATED, {"store_id": ident.store_id, "format": FORMAT_VERSION})]
            ):
                apply(txn, e)

        fmt = self.meta(b"format")
        if fmt is None:
            if not create:
                self.kv.close()
                raise NoFormatError(
                    f"the ledger at {self.path}/ledger has committed transactions but no "
                    f"store format record: it is damaged (or not an artledger ledger); "
                    f"{RECOVER_HINT}"
                )
            self.kv.write(init)
            return
        version = _Q.unpack(fmt)[0]
        if version > FORMAT_VERSION:
            self.kv.close()
            raise StoreFormatError(
                f"the store at {self.path} has format version {version}, newer than this "
                f"artledger supports ({FORMAT_VERSION}); upgrade artledger to open it"
            )

    def identity(self) -> Identity:
        """The store id, chunk-address seed and secret fingerprint, from the ledger."""
        return Identity(self.store_id, self.chunks.seed, self.meta(b"secret_fp"))

    def check_identity(self, *, write: bool) -> None:
        """Write ``<store>/identity`` when missing; note when it disagrees with the ledger."""
        assert self.path is not None
        ours = self.identity()
        found = read_identity(self.path)
        if found is None:
            if write and not (self.path / IDENTITY).exists():
                with contextlib.suppress(OSError):
                    write_identity(self.path, ours)
            return
        if (found.store_id, found.seed) != (ours.store_id, ours.seed):
            self.identity_problem = (
                f"the identity file {self.path / IDENTITY} names store {found.store_id}, but "
                f"the ledger is store {ours.store_id}: it was copied from another store; "
                "move it aside (the next open writes the right one)"
            )

    def check_secret(self, problem: str | None) -> None:
        fp = self.meta(b"secret_fp")
        if problem is None and fp is not None and fp != fingerprint(self.secret):
            problem = (
                f"the store secret {self.path}/secret does not match the one this store was "
                "created with (replaced or altered): pickled artifacts will neither load nor "
                "save; restore the original file from a backup and reopen the store"
            )
        self.secret_problem = problem

    def recover_blobs(self) -> list[str]:
        """Let the blob store undo writes no commit recorded (torn pack tails)."""
        return self.blobs.recover(self.container_state, self.container_state())

    def check_open(self) -> None:
        if self.closed:
            raise StoreError("this store is closed; open it again with Store.open()")

    def check_writable(self, what: str) -> None:
        self.check_open()
        if self.readonly is not None:
            raise ReadOnlyStoreError(
                f"the store at {self.path} is read-only ({self.readonly}): cannot {what}; "
                "nothing was written"
            )

    def close(self) -> None:
        """Flush deferred events and release files; unusable after."""
        if self.closed:
            return
        try:
            self.close_window()
            self.flush()
        finally:
            self.closed = True
            self.chunks.close()
            self.blobs.close()
            self.kv.close()

    def sync(self) -> SyncStatus | None:
        """Pull what a shared log holds that this ledger lacks; None for an
        embedded store (it has no other copy to pull from)."""
        self.check_open()
        return None

    def status(self) -> SyncStatus | None:
        """Where a replica stands against its shared log; None for an embedded store."""
        return None

    def verify_shared(self) -> list[str]:
        """Problems of the shared log, and where this replica differs from it
        (none for an embedded store)."""
        return []

    def forget_chunks(self, txn: Txn, digests: Iterable[bytes]) -> None:
        """Drop dead chunks from the index inside a commit (gc)."""
        for digest in digests:
            txn.delete("chunks", digest)

    def delete_blobs(self, locs: list[Location], grace: float) -> int:
        """Delete the payloads of chunks a gc commit dropped, when the blob
        store deletes single payloads; payloads no index knows and older than
        ``grace`` seconds go too. How many were deleted."""
        if not self.blobs.supports_deletes:
            return 0
        for loc in locs:
            self.blobs.delete(loc)
        return len(locs)

    # -- the commit path -------------------------------------------------------------
    def defer(self, records: Iterable[tuple[str, dict[str, Any]]]) -> None:
        """Queue events whose loss costs nothing; they ride along with the next
        durable commit (or :meth:`flush`); in a thread with a pending window,
        with that thread's next commit."""
        w = self.window()
        if w is not None:
            w.records.extend(records)
            return
        with self._deferred_lock:
            self._deferred.extend(records)

    def flush(self) -> None:
        """Commit deferred events now (durably), and this thread's pending window."""
        w = self.window()
        if w is not None:
            if w.records:
                self.commit(lambda txn: [])
            self.settle()
            return
        with self._deferred_lock:
            if not self._deferred:
                return
        self.commit(lambda txn: [])

    def commit(
        self, build: Callable[[Txn], Records], sessions: Iterable[WriteSession] = ()
    ) -> list[Event]:
        """Append deferred events plus ``build(txn)``'s, fold them, index the
        sessions' chunks, and commit durably, all in one transaction (see
        :meth:`transact`). In a thread with a pending window, the commit is
        held there (see :meth:`open_window`)."""
        self.check_writable("commit")
        sessions = list(sessions)
        w = self.window()
        if w is not None:
            return self._commit_pending(w, build, sessions)
        try:
            state = self._flush_blobs(sessions)
            with self._deferred_lock:
                deferred = list(self._deferred)

                def body(txn: Txn) -> list[Event]:
                    return self.append(txn, deferred + build(txn))

                events = self._write(state, sessions, body, "this write")
                del self._deferred[: len(deferred)]
        finally:
            for s in sessions:
                s.release()
        failpoints.hit("commit.after")
        return events

    def _commit_pending(
        self, w: Window, build: Callable[[Txn], Records], sessions: list[WriteSession]
    ) -> list[Event]:
        records = w.take_records()

        def body(txn: Txn) -> list[Event]:
            for s in sessions:
                _index(txn, s)
            return self.append(txn, records + build(txn))

        try:
            return w.commit(sessions, body)
        except BaseException as e:
            w.records[:0] = records
            for s in sessions:
                s.release()
            if isinstance(e, _ChunkGoneError):
                raise e.error("this write") from None
            raise

    def append(self, txn: Txn, records: Records) -> list[Event]:
        """Append events inside a :meth:`transact` body and fold them."""
        events = self.log.append(txn, records)
        for e in events:
            apply(txn, e)
        return events

    def transact(
        self,
        body: Callable[[Txn], T],
        sessions: Iterable[WriteSession] = (),
        *,
        what: str = "this write",
    ) -> T:
        """The one commit path. Flush the sessions' chunks, then in one durable
        transaction: record the blob store's container state, index the
        sessions' new chunks, and run ``body`` (which appends events with
        :meth:`append`). The sessions are released whatever happens.
        ``ConcurrentGcError`` when a deduplicated chunk was collected meanwhile."""
        self.check_writable("commit")
        self.settle()
        sessions = list(sessions)
        try:
            return self._write(self._flush_blobs(sessions), sessions, body, what)
        finally:
            for s in sessions:
                s.release()

    def _flush_blobs(self, sessions: list[WriteSession]) -> dict[str, int]:
        started = time.perf_counter()
        state = self.blobs.flush([loc for s in sessions for loc in s.held])
        self._flushed = time.perf_counter() - started  # part of the next write's cost
        failpoints.hit("commit.before_txn")
        return state

    def _write(
        self,
        state: Mapping[str, int],
        sessions: list[WriteSession],
        body: Callable[[Txn], T],
        what: str,
    ) -> T:
        ran = [0.0]  # the last run of ``fn``: the rest of the write is the commit's own cost

        def fn(txn: Txn) -> T:
            began = time.perf_counter()
            # Container state first: ``body`` may drop a container (gc compaction).
            record_container_state(txn, state)
            for s in sessions:
                _index(txn, s)
            out = body(txn)
            failpoints.hit("commit.in_txn")
            ran[0] = time.perf_counter() - began
            return out

        started = time.perf_counter()
        try:
            out = self.kv.write(fn)
        except _ChunkGoneError as e:
            raise e.error(what) from None
        took = time.perf_counter() - started - ran[0] + self._flushed
        self._flushed = 0.0
        self.commit_seconds += 0.2 * (took - self.commit_seconds)
        return out

    def rebuild(self, progress: Callable[[int, int], None] | None = None) -> int:
        """Drop every projection and fold the whole log again; events folded."""
        self.check_writable("rebuild the projections")
        self.settle()
        self.flush()

        def fn(txn: Txn) -> int:
            for db in PROJECTION_DBS:
                txn.drop(db)
            txn.delete("meta", b"proj_pos")
            txn.put("meta", TEMPORAL_META, b"\x01")
            head = self.log.head(txn)

            def events() -> Iterator[Event]:
                for e in self.log.read(txn):
                    yield e
                    if progress is not None and e.seq % 20000 == 0:
                        progress(e.seq, head)

            n = fold(txn, events())
            failpoints.hit("rebuild.before_commit")
            return n

        return self.kv.write(fn)


def read_container_state(txn: Txn) -> dict[str, int]:
    """The container state recorded in ``txn`` (what :func:`record_container_state` wrote)."""
    return {k.decode(): _Q.unpack(v)[0] for k, v in txn.scan("segments")}


def record_container_state(txn: Txn, state: Mapping[str, int]) -> None:
    """Record container marks returned by ``BlobStore.flush`` (never lowering one)."""
    for name, end in state.items():
        old = txn.get("segments", name.encode())
        if old is None or _Q.unpack(old)[0] < end:
            txn.put("segments", name.encode(), _Q.pack(end))


def _index(txn: Txn, session: WriteSession) -> None:
    added = 0
    for digest in session.referenced:
        if txn.get("chunks", digest) is not None:
            continue
        rec = session.new.get(digest)
        if rec is None:
            raise _ChunkGoneError(digest)
        txn.put("chunks", digest, rec.pack())
        added += rec.stored_len
    add_stored_bytes(txn, added)


def add_stored_bytes(txn: Txn, delta: int) -> None:
    """Move the store's stored-bytes count (``meta``) by ``delta``, never below 0."""
    if not delta:
        return
    raw = txn.get("meta", b"stored_bytes")
    total = (0 if raw is None else int.from_bytes(raw, "big")) + delta
    txn.put("meta", b"stored_bytes", max(total, 0).to_bytes(8, "big"))
