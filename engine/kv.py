"""Ordered key-value transactions: the one seam between the engine and LMDB.

Everything the engine keeps outside pack files (the event log, the chunk
index, the projections, store metadata) lives in named databases of a
:class:`KV`. Two backends pass the same tests: :class:`LmdbKV`, the embedded
default, and :class:`MemoryKV`, the executable spec and the fold target of
``Store.as_of``. LMDB errors are translated here and nowhere else.
"""

from __future__ import annotations

import bisect
import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from engine.errors import StoreError

T = TypeVar("T")

# Databases of the projections (dropped and refolded by ``Store.rebuild``).
PROJECTION_DBS = (
    "artifacts",
    "names",
    "versions",
    "name_meta",
    "tags",
    "content",
    "counters",
    "runs",
    "run_index",
    "steps",
    "cache",
    "consumers",
    "step_history",
    "run_steps",
    "step_components",
)
# Everything else: store metadata, the event log, the chunk index, pack segment ends.
DATABASES = ("meta", "events", "chunks", "segments", *PROJECTION_DBS)


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

    @abstractmethod
    def count(self, db: str) -> int:
        """How many keys ``db`` holds."""


class KV(ABC):
    """A set of named, ordered databases with serialisable write transactions."""

    @abstractmethod
    def read(self) -> Txn:
        """A read-only snapshot; release it with :meth:`end_read`."""

    @abstractmethod
    def end_read(self, txn: Txn) -> None:
        """Release a snapshot taken with :meth:`read`."""

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


def _prefix_stop(prefix: bytes) -> bytes | None:
    """The smallest key greater than every key starting with ``prefix``."""
    p = bytearray(prefix)
    while p:
        if p[-1] < 0xFF:
            p[-1] += 1
            return bytes(p)
        p.pop()
    return None


def _bounds(
    start: bytes | None, stop: bytes | None, prefix: bytes | None
) -> tuple[bytes | None, bytes | None]:
    if prefix:
        pstop = _prefix_stop(prefix)
        start = prefix if start is None or start < prefix else start
        if pstop is not None and (stop is None or stop > pstop):
            stop = pstop
    return start, stop


# --------------------------------------------------------------------------- memory


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


class _MemTxn(Txn):
    def __init__(self, kv: MemoryKV, write: bool) -> None:
        self._kv = kv
        self._write = write
        self._undo: list[tuple[str, bytes, bytes | None]] | None = []

    def _db(self, db: str) -> _MemDB:
        try:
            return self._kv.dbs[db]
        except KeyError:
            raise StoreError(f"unknown database {db!r}") from None

    def get(self, db: str, key: bytes) -> bytes | None:
        return self._db(db).data.get(key)

    def put(self, db: str, key: bytes, value: bytes) -> None:
        d = self._kv.dbs[db]
        if self._undo is not None:
            assert self._write, "put in a read transaction"
            self._undo.append((db, key, d.data.get(key)))
        d.put(key, value if type(value) is bytes else bytes(value))

    def delete(self, db: str, key: bytes) -> bool:
        assert self._write, "delete in a read transaction"
        d = self._db(db)
        old = d.data.get(key)
        if old is None:
            return False
        if self._undo is not None:
            self._undo.append((db, key, old))
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
        start, stop = _bounds(start, stop, prefix)
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
        d = self._db(db)
        if self._undo is not None:
            for k, v in d.data.items():
                self._undo.append((db, k, v))
        d.clear()

    def count(self, db: str) -> int:
        return len(self._db(db).data)

    def rollback(self) -> None:
        for db, key, old in reversed(self._undo or ()):
            d = self._kv.dbs[db]
            if old is None:
                d.delete(key)
            else:
                d.put(key, old)
        self._undo = []


class MemoryKV(KV):
    """In-memory twin of :class:`LmdbKV` (one process; writes serialised by a lock)."""

    def __init__(self) -> None:
        self.dbs: dict[str, _MemDB] = {name: _MemDB() for name in DATABASES}
        self._lock = threading.RLock()

    def read(self) -> Txn:
        return _MemTxn(self, write=False)

    def end_read(self, txn: Txn) -> None:
        pass

    def write(self, fn: Callable[[Txn], T]) -> T:
        with self._lock:
            txn = _MemTxn(self, write=True)
            try:
                return fn(txn)
            except BaseException:
                txn.rollback()
                raise

    def unsafe_writer(self) -> Txn:
        """A write transaction applied immediately, with no rollback; for
        folding a log into a fresh, private MemoryKV."""
        txn = _MemTxn(self, write=True)
        txn._undo = None
        return txn


# --------------------------------------------------------------------------- lmdb

_ENV_LOCK = threading.Lock()
_ENVS: dict[str, tuple[int, Any, int]] = {}  # realpath -> (pid, env, refcount)


class _LmdbTxn(Txn):
    def __init__(self, kv: LmdbKV, txn: Any) -> None:
        self._kv = kv
        self._txn = txn

    def get(self, db: str, key: bytes) -> bytes | None:
        v = self._txn.get(key, db=self._kv.handles[db])
        return None if v is None else bytes(v)

    def put(self, db: str, key: bytes, value: bytes) -> None:
        self._txn.put(key, value, db=self._kv.handles[db])

    def delete(self, db: str, key: bytes) -> bool:
        return bool(self._txn.delete(key, db=self._kv.handles[db]))

    def scan(
        self,
        db: str,
        start: bytes | None = None,
        stop: bytes | None = None,
        *,
        prefix: bytes | None = None,
        reverse: bool = False,
    ) -> Iterator[tuple[bytes, bytes]]:
        start, stop = _bounds(start, stop, prefix)
        cur = self._txn.cursor(db=self._kv.handles[db])
        if not reverse:
            ok = cur.set_range(start) if start is not None else cur.first()
            if not ok:
                return
            for k, v in cur:
                if stop is not None and k >= stop:
                    return
                yield k, v
        else:
            if stop is not None:
                ok = cur.set_range(stop)
                ok = cur.prev() if ok else cur.last()
            else:
                ok = cur.last()
            if not ok:
                return
            for k, v in cur.iterprev():
                if start is not None and k < start:
                    return
                yield k, v

    def drop(self, db: str) -> None:
        self._txn.drop(self._kv.handles[db], delete=False)

    def count(self, db: str) -> int:
        return int(self._txn.stat(self._kv.handles[db])["entries"])


class LmdbKV(KV):
    """The named databases in one LMDB environment.

    The map starts small and doubles whenever a write fills it; the
    transaction that hit the limit is retried, never lost. One environment
    is shared by every ``LmdbKV`` of the same path in a process (LMDB forbids
    opening one environment twice in a process).
    """

    def __init__(self, path: Path, *, map_size: int = 64 << 20, readonly: bool = False) -> None:
        import lmdb

        self._lmdb = lmdb
        self.path = path
        key = str(path.resolve())
        self._key = key
        with _ENV_LOCK:
            entry = _ENVS.get(key)
            if entry is not None and entry[0] == os.getpid():
                env = entry[1]
                _ENVS[key] = (entry[0], env, entry[2] + 1)
            else:
                try:
                    path.mkdir(parents=True, exist_ok=True)
                    env = lmdb.open(
                        str(path),
                        map_size=map_size,
                        max_dbs=len(DATABASES) + 4,
                        max_readers=256,
                        readahead=False,
                        metasync=True,
                        sync=True,
                        lock=True,
                    )
                except lmdb.Error as e:
                    raise StoreError(
                        f"cannot open the ledger at {path}: {e}. "
                        "Check the path and its permissions."
                    ) from e
                _ENVS[key] = (os.getpid(), env, 1)
        self.env = env
        self._write_lock = threading.Lock()
        self.handles = {name: env.open_db(name.encode()) for name in DATABASES}
        self._closed = False

    def _refresh_map(self) -> None:
        self.env.set_mapsize(0)

    def read(self) -> Txn:
        lmdb = self._lmdb
        for _ in range(3):
            try:
                return _LmdbTxn(self, self.env.begin(write=False, buffers=False))
            except lmdb.MapResizedError:
                self._refresh_map()
            except lmdb.Error as e:
                raise StoreError(f"cannot read the ledger at {self.path}: {e}") from e
        raise StoreError(f"cannot read the ledger at {self.path}: map keeps resizing")

    def end_read(self, txn: Txn) -> None:
        assert isinstance(txn, _LmdbTxn)
        txn._txn.abort()

    def write(self, fn: Callable[[Txn], T]) -> T:
        lmdb = self._lmdb
        with self._write_lock:
            while True:
                try:
                    txn = self.env.begin(write=True)
                except lmdb.MapResizedError:
                    self._refresh_map()
                    continue
                except lmdb.Error as e:
                    raise StoreError(f"cannot write the ledger at {self.path}: {e}") from e
                try:
                    result = fn(_LmdbTxn(self, txn))
                    txn.commit()
                    return result
                except lmdb.MapFullError:
                    txn.abort()
                    self.grow()
                except lmdb.MapResizedError:
                    txn.abort()
                    self._refresh_map()
                except lmdb.Error as e:
                    txn.abort()
                    raise StoreError(
                        f"write to the ledger at {self.path} failed: {e}; nothing was written"
                    ) from e
                except BaseException:
                    txn.abort()
                    raise

    def grow(self) -> None:
        """Double the map size (called when a write transaction fills it)."""
        size = int(self.env.info()["map_size"])
        self.env.set_mapsize(size * 2)

    def reserve(self, nbytes: int) -> None:
        with self._write_lock:
            info = self.env.info()
            used = (int(info["last_pgno"]) + 1) * int(self.env.stat()["psize"])
            size = int(info["map_size"])
            target = size
            while target < used + nbytes:
                target *= 2
            if target != size:
                self.env.set_mapsize(target)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with _ENV_LOCK:
            entry = _ENVS.get(self._key)
            if entry is None or entry[1] is not self.env:
                return
            if entry[2] > 1:
                _ENVS[self._key] = (entry[0], entry[1], entry[2] - 1)
            else:
                del _ENVS[self._key]
                self.env.close()
