"""MemoryKV: the in-memory twin of LmdbKV, the executable spec of the KV seam
and the fold target of ``Store.as_of``."""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable, Iterable, Iterator

from engine.storage.kv.base import KV, Databases, T, Txn, bounds, declared


class _MemDB:
    """A dict plus a sorted key list, rebuilt lazily on the first scan after a
    change (a fold does many puts and no scans; queries do the opposite)."""

    __slots__ = ("_keys", "data")

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}
        self._keys: list[bytes] | None = []

    @property
    def keys(self) -> list[bytes]:
        if self._keys is None:
            self._keys = sorted(self.data)
        return self._keys

    def put(self, key: bytes, value: bytes) -> None:
        if key not in self.data:
            keys = self._keys
            if keys is not None and (not keys or key > keys[-1]):
                keys.append(key)
            else:
                self._keys = None
        self.data[key] = value

    def delete(self, key: bytes) -> bool:
        if key not in self.data:
            return False
        del self.data[key]
        self._keys = None
        return True

    def clear(self) -> None:
        self.data.clear()
        self._keys = []

    def clone(self) -> _MemDB:
        new = _MemDB()
        new.data = dict(self.data)
        new._keys = None if self._keys is None else list(self._keys)
        return new


class _View:
    """One version of every database. Snapshots pin the current view; a write
    that finds it pinned moves to a new view and copies each database before
    its first change there (copy on write), so pinned views never change."""

    __slots__ = ("dbs", "owned", "pins")

    def __init__(self, dbs: Databases[_MemDB], owned: set[str] | None) -> None:
        self.dbs = dbs
        # Databases this view may change in place (None: all of them).
        self.owned = owned
        self.pins = 0


class _MemTxn(Txn):
    def __init__(self, kv: MemoryKV, view: _View | None) -> None:
        self._kv = kv
        self._view = view  # None: a write transaction (it follows the current view)
        self._undo: list[tuple[str, bytes, bytes | None]] | None = []

    def _db(self, db: str) -> _MemDB:
        view = self._view if self._view is not None else self._kv._view
        return view.dbs[db]

    def get(self, db: str, key: bytes) -> bytes | None:
        return self._db(db).data.get(key)

    def put(self, db: str, key: bytes, value: bytes) -> None:
        assert self._view is None, "put in a read transaction"
        view = self._kv._view
        d = view.dbs[db] if view.owned is None and not view.pins else self._kv._writable(db)
        if self._undo is not None:
            self._undo.append((db, key, d.data.get(key)))
        d.put(key, value if type(value) is bytes else bytes(value))

    def delete(self, db: str, key: bytes) -> bool:
        assert self._view is None, "delete in a read transaction"
        if self._db(db).data.get(key) is None:
            return False
        d = self._kv._writable(db)
        if self._undo is not None:
            self._undo.append((db, key, d.data[key]))
        return d.delete(key)

    def scan(
        self,
        db: str,
        start: bytes | None = None,
        stop: bytes | None = None,
        *,
        prefix: bytes | None = None,
        reverse: bool = False,
    ) -> Iterator[tuple[bytes, bytes]]:
        d = self._db(db)
        start, stop = bounds(start, stop, prefix)
        lo = 0 if start is None else bisect.bisect_left(d.keys, start)
        hi = len(d.keys) if stop is None else bisect.bisect_left(d.keys, stop)
        keys = d.keys[lo:hi]
        if reverse:
            keys.reverse()
        data = d.data
        for k in keys:
            v = data.get(k)
            if v is not None:
                yield k, v

    def drop(self, db: str) -> None:
        assert self._view is None, "drop in a read transaction"
        d = self._kv._writable(db)
        if self._undo is not None:
            for k, v in d.data.items():
                self._undo.append((db, k, v))
        d.clear()

    def count(self, db: str) -> int:
        return len(self._db(db).data)

    def rollback(self) -> None:
        for db, key, old in reversed(self._undo or ()):
            d = self._kv._writable(db)
            if old is None:
                d.delete(key)
            else:
                d.put(key, old)
        self._undo = []


class MemoryKV(KV):
    """In-memory twin of :class:`~engine.storage.kv.LmdbKV` (one process;
    writes serialised by a lock; snapshots isolated by copy on write).

    A snapshot taken before a write begins never sees it; one taken while a
    write is running in another thread may see part of it (LMDB would not).
    """

    persistent = False
    multi_process = False

    def __init__(self, dbs: Iterable[str]) -> None:
        names = declared(dbs)
        self._names = names
        self._view = _View(Databases({name: _MemDB() for name in names}), None)
        self._lock = threading.RLock()
        self._pin_lock = threading.Lock()

    @property
    def databases(self) -> tuple[str, ...]:
        return self._names

    def _writable(self, db: str) -> _MemDB:
        """Database ``db`` of the current view, safe to change in place."""
        view = self._view
        if view.pins:
            with self._pin_lock:
                view = self._view
                if view.pins:
                    view = self._view = _View(Databases(view.dbs), set())
        d = view.dbs[db]
        owned = view.owned
        if owned is not None and db not in owned:
            d = view.dbs[db] = d.clone()
            owned.add(db)
            if len(owned) == len(view.dbs):
                view.owned = None
        return d

    def read(self) -> Txn:
        with self._pin_lock:
            view = self._view
            view.pins += 1
        return _MemTxn(self, view)

    def end_read(self, txn: Txn) -> None:
        assert isinstance(txn, _MemTxn) and txn._view is not None
        with self._pin_lock:
            txn._view.pins -= 1

    def write(self, fn: Callable[[Txn], T]) -> T:
        with self._lock:
            txn = _MemTxn(self, None)
            try:
                return fn(txn)
            except BaseException:
                txn.rollback()
                raise

    def copy(self) -> MemoryKV:
        """A new MemoryKV holding the same data (values shared: they are
        immutable bytes), e.g. to fold more events into a copy of a fold."""
        with self._lock:
            new = MemoryKV(self._names)
            new._view = _View(
                Databases({name: db.clone() for name, db in self._view.dbs.items()}), None
            )
            return new

    def unsafe_writer(self) -> Txn:
        """A write transaction applied immediately, with no rollback; for
        folding a log into a fresh, private MemoryKV."""
        txn = _MemTxn(self, None)
        txn._undo = None
        return txn
