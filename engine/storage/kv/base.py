"""The KV seam: ordered, named databases read in snapshots and written in
serialisable transactions.

A backend subclasses :class:`KV` (and :class:`Txn` for its transactions) and
says what it can do with two flags: :attr:`KV.persistent` (the data outlives
the process) and :attr:`KV.multi_process` (other processes may open the same
store while this one has it open). The databases are declared when the KV is
built; naming any other database is an error, never a silent new database.
``engine.testing.kv.KVContract`` is the suite every backend passes.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, nullcontext
from types import TracebackType
from typing import ClassVar, TypeVar

from engine.errors import StoreError

T = TypeVar("T")
V = TypeVar("V")
_PENDING_LOCK = threading.Lock()


class Databases(dict[str, V]):
    """A backend's per-database state, keyed by the declared database names;
    looking up an undeclared name raises :class:`StoreError` naming it."""

    def __missing__(self, name: str) -> V:
        declared = ", ".join(sorted(self))
        raise StoreError(
            f"unknown database {name!r}: this store declares only {declared}; "
            "declare it when the KV is built (dbs=...)"
        )


def declared(dbs: Iterable[str]) -> tuple[str, ...]:
    """The database names a KV is built with (its owner declares them)."""
    if isinstance(dbs, str):
        raise StoreError(f"dbs is a list of database names, not the string {dbs!r}")
    names = tuple(dbs)
    if len(set(names)) != len(names):
        raise StoreError(f"database names must be unique, got {names!r}")
    for name in names:
        if not isinstance(name, str) or not name:
            raise StoreError(f"database names are non-empty strings, got {name!r}")
    return names


class Txn(ABC):
    """One transaction over the named databases (read-only or read-write)."""

    @abstractmethod
    def get(self, db: str, key: bytes) -> bytes | None:
        """The value stored under ``key``, or None."""

    @abstractmethod
    def put(self, db: str, key: bytes, value: bytes) -> None:
        """Store ``value`` under ``key`` (replacing any old value)."""

    @abstractmethod
    def delete(self, db: str, key: bytes) -> bool:
        """Remove ``key``; whether it was there."""

    @abstractmethod
    def scan(
        self,
        db: str,
        start: bytes | None = None,
        stop: bytes | None = None,
        *,
        prefix: bytes | None = None,
        reverse: bool = False,
    ) -> Iterator[tuple[bytes, bytes]]:
        """Pairs with ``start <= key < stop`` (and ``key`` starting with
        ``prefix``), in key order or reversed."""

    @abstractmethod
    def drop(self, db: str) -> None:
        """Remove every key of ``db``."""

    def last_below(self, db: str, stop: bytes, start: bytes) -> tuple[bytes, bytes] | None:
        """The pair with the greatest key ``< stop`` if that key is ``>= start``,
        else None (a backend may answer with one cursor move)."""
        for pair in self.scan(db, start, stop, reverse=True):
            return pair
        return None

    def put_many(self, db: str, items: Iterable[tuple[bytes, bytes]]) -> None:
        """:meth:`put` each pair; the keys come in strictly increasing order (a
        backend may load them faster, e.g. appending to an empty database)."""
        for key, value in items:
            self.put(db, key, value)

    @abstractmethod
    def count(self, db: str) -> int:
        """How many keys ``db`` holds."""


class KV(ABC):
    """A set of named, ordered databases with serialisable write transactions.

    A read (:meth:`snapshot`, or :meth:`read`/:meth:`end_read`) sees the
    store as of its start: writes committed after it began are invisible to
    it. A write (:meth:`write`) commits all of its changes or none.
    """

    #: The data survives the process (and a reopen of the same location).
    persistent: ClassVar[bool] = False
    #: Other processes may open the same store concurrently with this one.
    multi_process: ClassVar[bool] = False

    @property
    @abstractmethod
    def databases(self) -> tuple[str, ...]:
        """The database names declared when this KV was built."""

    @abstractmethod
    def read(self) -> Txn:
        """A read-only snapshot; release it with :meth:`end_read`."""

    @abstractmethod
    def end_read(self, txn: Txn) -> None:
        """Release a snapshot taken with :meth:`read`."""

    #: Per thread: the view of that thread's pending window (see :meth:`set_pending`).
    _pending: threading.local | None = None

    def snapshot(self) -> AbstractContextManager[Txn]:
        """A read-only snapshot for a ``with`` block, released when it ends:
        ``with kv.snapshot() as txn: ...``. In a thread with a pending window
        open, the window's view (its uncommitted writes over its snapshot)."""
        local = self._pending
        if local is not None:
            view: Txn | None = getattr(local, "view", None)
            if view is not None:
                return nullcontext(view)
        return Snapshot(self)

    def pending(self) -> Txn | None:
        """The calling thread's pending-window view, or None."""
        local = self._pending
        return None if local is None else getattr(local, "view", None)

    def set_pending(self, view: Txn | None) -> None:
        """Make :meth:`snapshot` (and a backend's :meth:`read`) in the calling
        thread return ``view`` (None: real snapshots again). The ledger's
        pending window sets it; other threads are unaffected."""
        if self._pending is None:
            with _PENDING_LOCK:
                if self._pending is None:
                    self._pending = threading.local()
        self._pending.view = view

    def generation(self, txn: Txn) -> int | None:
        """An id of the committed state a transaction of this KV began from:
        equal for two transactions only if no commit came between them (None:
        this backend cannot tell)."""
        return None

    @abstractmethod
    def write(self, fn: Callable[[Txn], T]) -> T:
        """Run ``fn`` in one write transaction and commit durably.

        ``fn`` may run more than once (the LMDB map is grown and the
        transaction retried when it fills up), so it must not have effects
        outside the transaction. If ``fn`` raises, nothing is written.
        """

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources."""

    def reserve(self, nbytes: int) -> None:  # noqa: B027 - optional hook
        """Make room now for a write of about ``nbytes`` (a hint: LMDB grows its
        map at once instead of retrying a large transaction at each doubling)."""


class Snapshot(AbstractContextManager[Txn]):
    """What :meth:`KV.snapshot` returns (a class, not a generator: it is on
    every query's path)."""

    __slots__ = ("_kv", "_txn")

    def __init__(self, kv: KV) -> None:
        self._kv = kv

    def __enter__(self) -> Txn:
        self._txn = self._kv.read()
        return self._txn

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._kv.end_read(self._txn)


def prefix_stop(prefix: bytes) -> bytes | None:
    """The smallest key greater than every key starting with ``prefix``."""
    p = bytearray(prefix)
    while p:
        if p[-1] < 0xFF:
            p[-1] += 1
            return bytes(p)
        p.pop()
    return None


def bounds(
    start: bytes | None, stop: bytes | None, prefix: bytes | None
) -> tuple[bytes | None, bytes | None]:
    """``start``/``stop`` narrowed to the keys starting with ``prefix``."""
    if prefix:
        pstop = prefix_stop(prefix)
        start = prefix if start is None or start < prefix else start
        if pstop is not None and (stop is None or stop > pstop):
            stop = pstop
    return start, stop
