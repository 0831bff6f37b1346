"""The pending window: commits of one thread held in memory, made durable together.

A pipeline run opens a window in its thread (:meth:`Ledger.open_window`).
While it is open, every commit from that thread (:meth:`Ledger.commit`) runs
its transaction function against an :class:`~engine.storage.kv.overlay.Overlay`
over a read snapshot taken at the window's first commit, instead of a durable
KV write: the events are appended and folded, the chunks indexed, but only in
memory. The thread's reads (``kv.snapshot()``, ``kv.read()``, hence the
catalog and cache lookups) see that overlay; every other thread and process
sees the store as committed. Blob sessions stay held (their pack bytes are
written but neither fsync'd nor released) until the window closes.

Closing (settling) the window is one durable KV write: fsync the held pack
segments once, then, if no commit happened since the window's snapshot (same
KV :meth:`~engine.storage.kv.KV.generation`), apply the overlay's write-set
(byte-identical to committing step by step); otherwise re-run the queued
transaction functions in the real transaction, so sequence numbers, versions
and the hash chain are assigned afresh after the other commits. A
deduplicated chunk collected meanwhile by a gc fails the close with
:class:`~engine.errors.ConcurrentGcError`, and nothing of the window commits.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar, TypeVar

from engine import failpoints
from engine.storage.chunks import WriteSession
from engine.storage.kv import KV, Txn
from engine.storage.kv.overlay import Overlay

Body = Callable[[Txn], Any]
T = TypeVar("T")
Records = list[tuple[str, dict[str, Any]]]
# Before this process has timed a durable commit of its own (seconds).
INITIAL_COMMIT_ESTIMATE = 0.001
# A pending window settles once its steps ran longer than this many durable commits,
BUDGET_COMMITS = 10
# or once it holds this many commits (it lives in memory).
MAX_PENDING = 1000


class Window:
    """One thread's pending commits: an overlay, the queued transaction
    functions that produced it, the blob sessions they hold, and the events
    deferred in the thread (``ledger.defer``) not yet in any commit."""

    def __init__(self, kv: KV) -> None:
        self.kv = kv
        self.base: Txn | None = None
        self.generation: int | None = None
        self.overlay: Overlay | None = None  # None: nothing pending, no snapshot held
        self.queued: list[Body] = []
        self.sessions: list[WriteSession] = []
        self.records: list[tuple[str, dict[str, Any]]] = []
        self.ran = 0.0  # summed run time of the steps whose commits are queued

    def begin(self) -> Overlay:
        """Take the window's snapshot (at its first commit) and show its overlay
        to this thread's reads."""
        self.base = self.kv.read()
        self.generation = self.kv.generation(self.base)
        self.overlay = Overlay(self.base)
        self.kv.set_pending(self.overlay)
        return self.overlay

    def reset(self) -> None:
        """Drop the pending commits (committed or abandoned by the caller) and
        release their sessions and the snapshot: until the next commit, this
        thread reads the store as committed."""
        self.kv.set_pending(None)
        self.overlay = None
        sessions, self.sessions, self.queued, self.ran = self.sessions, [], [], 0.0
        for s in sessions:
            s.release()
        if self.base is not None:
            base, self.base = self.base, None
            self.kv.end_read(base)

    end = reset

    @property
    def empty(self) -> bool:
        """No commit is pending (deferred events alone do not count)."""
        return not self.queued

    def commit(self, sessions: list[WriteSession], body: Callable[[Txn], T]) -> T:
        """Run ``body`` against the overlay and queue it; on success the window
        owns ``sessions`` (released when it closes), on failure nothing changed."""
        overlay = self.overlay or self.begin()
        child = Overlay(overlay)
        try:
            out = body(child)
        except BaseException:
            if not self.queued:
                self.reset()
            raise
        overlay.absorb(child)
        self.queued.append(body)
        self.sessions.extend(sessions)
        return out

    def take_records(self) -> list[tuple[str, dict[str, Any]]]:
        """The deferred events, handed to the next commit."""
        records, self.records = self.records, []
        return records

    def replay(self, txn: Txn) -> None:
        """Write the pending commits into the real transaction ``txn``."""
        if self.overlay is None:
            return
        if self.generation is not None and self.kv.generation(txn) == self.generation:
            self.overlay.apply(txn)
        else:
            for body in self.queued:
                body(txn)


class PendingWindows:
    """The pending-window half of :class:`~engine.ledger.core.Ledger` (which
    provides the commit path these methods call)."""

    #: Whether a pipeline run may hold its thread's commits in a pending
    #: window; the shared store (``SharedLedger``) commits each write.
    deferrable: ClassVar[bool] = True
    kv: KV
    readonly: str | None
    commit_seconds: float  # moving mean of this ledger's durable commits
    #: A window settles once its steps ran longer than this many durable commits.
    budget_commits: float = BUDGET_COMMITS
    _local: threading.local
    _deferred: Records
    _deferred_lock: threading.Lock

    def check_open(self) -> None:
        raise NotImplementedError

    def commit(self, build: Callable[[Txn], Records], sessions: Iterable[WriteSession] = ()) -> Any:
        raise NotImplementedError

    def _flush_blobs(self, sessions: list[WriteSession]) -> dict[str, int]:
        raise NotImplementedError

    def _write(
        self,
        state: Mapping[str, int],
        sessions: list[WriteSession],
        body: Callable[[Txn], T],
        what: str,
    ) -> T:
        raise NotImplementedError

    def window(self) -> Window | None:
        """The calling thread's pending window, or None."""
        w: Window | None = getattr(self._local, "window", None)
        return w

    def open_window(self) -> bool:
        """Hold this thread's commits in a pending window (:mod:`engine.ledger.window`)
        until :meth:`settle`; False (nothing opened) when one is open already or
        this ledger commits each write (shared store, in-memory or read-only KV)."""
        if not (self.deferrable and self.kv.persistent) or self.readonly is not None:
            return False
        if self.window() is not None:
            return False
        self.check_open()
        self._local.window = Window(self.kv)
        return True

    @property
    def budget(self) -> float:
        """Seconds of step run time a pending window may hold: about
        :attr:`budget_commits` durable commits as this process measured them."""
        return self.budget_commits * self.commit_seconds

    def ran(self, seconds: float) -> None:
        """A step whose commits are pending ran ``seconds``; settle the window
        once its steps' summed run time exceeds :attr:`budget` (or it holds
        :data:`MAX_PENDING` commits)."""
        w = self.window()
        if w is None:
            return
        w.ran += seconds
        if w.ran > self.budget or len(w.queued) >= MAX_PENDING:
            self.settle()

    def settle(self) -> None:
        """Commit this thread's pending window in one durable write (pack
        fsyncs first), then keep it open, empty. Nothing when none is pending.
        If the write fails, the pending commits are dropped and it raises."""
        w = self.window()
        if w is None or w.empty:
            return
        try:
            self.kv.set_pending(None)
            state = self._flush_blobs(w.sessions)
            self._write(state, [], w.replay, "this run's pending steps")
        finally:
            w.reset()
        failpoints.hit("commit.after")

    def close_window(self) -> None:
        """Settle this thread's pending window and close it."""
        w = self.window()
        if w is None:
            return
        try:
            if w.records:
                self.commit(lambda txn: [])
            self.settle()
        finally:
            self._local.window = None
            w.end()
            with self._deferred_lock:
                self._deferred[:0] = w.records
