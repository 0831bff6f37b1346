"""LmdbKV: the named databases in one LMDB environment, the embedded default
KV. LMDB errors are translated here and nowhere else."""

from __future__ import annotations

import contextlib
import errno
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from engine.errors import ArtledgerError, IntegrityError, ReadOnlyStoreError, StoreError
from engine.storage.kv.base import KV, Databases, T, Txn, bounds, declared

_ENV_LOCK = threading.Lock()
_ENVS: dict[str, tuple[int, Any, int]] = {}  # realpath -> (pid, env, refcount)
MAX_READERS = 256
# _SUCCESSOR[b] is the one-byte string b + 1 (the end of a prefix range).
_SUCCESSOR = tuple(bytes((b + 1,)) for b in range(255))
# A failed commit with this little room left on the device is a full disk (a
# short write, which LMDB reports as EIO, is how a full disk usually shows).
NEARLY_FULL = 64 << 20
# Driver errors that mean the data file is damaged (not a full disk, not a bad call).
_DAMAGE_NAMES = (
    "CorruptedError",
    "PageNotFoundError",
    "BadTxnError",
    "InvalidError",
    "VersionMismatchError",
    "IncompatibleError",
    "BadDbiError",
    "BadChecksumError",
    "ProblemError",
)
_RECOVER = (
    "run `artledger verify` to see what is damaged and `artledger recover` to rebuild the "
    "ledger (docs/reliability.md)"
)


def is_open_here(path: Path) -> bool:
    """Whether this process holds the LMDB environment at ``path`` open."""
    with _ENV_LOCK:
        entry = _ENVS.get(str(path.resolve()))
    return entry is not None and entry[0] == os.getpid()


def free_space(path: Path) -> int | None:
    """Bytes free (to unprivileged users) on the filesystem holding ``path``."""
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


class _LmdbTxn(Txn):
    def __init__(self, kv: LmdbKV, txn: Any, writable: bool = False) -> None:
        self._kv = kv
        self._txn = txn
        self.writable = writable

    def get(self, db: str, key: bytes) -> bytes | None:
        try:
            v = self._txn.get(key, db=self._kv.handles[db])
        except self._kv.lmdb_error as e:
            raise self._kv.error(e, f"reading {db!r}") from e
        return None if v is None else bytes(v)

    def put(self, db: str, key: bytes, value: bytes) -> None:
        try:
            self._txn.put(key, value, db=self._kv.handles[db])
        except self._kv.lmdb_error as e:
            if isinstance(e, self._kv.passthrough):
                raise
            raise self._kv.error(e, f"writing {db!r}") from e

    def delete(self, db: str, key: bytes) -> bool:
        try:
            return bool(self._txn.delete(key, db=self._kv.handles[db]))
        except self._kv.lmdb_error as e:
            if isinstance(e, self._kv.passthrough):
                raise
            raise self._kv.error(e, f"deleting from {db!r}") from e

    def scan(
        self,
        db: str,
        start: bytes | None = None,
        stop: bytes | None = None,
        *,
        prefix: bytes | None = None,
        reverse: bool = False,
    ) -> Iterator[tuple[bytes, bytes]]:
        if prefix and start is None and stop is None and prefix[-1] != 0xFF:
            # The common case (every key starting with ``prefix``), without bounds().
            start, stop = prefix, prefix[:-1] + _SUCCESSOR[prefix[-1]]
        else:
            start, stop = bounds(start, stop, prefix)
        try:
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
        except self._kv.lmdb_error as e:
            raise self._kv.error(e, f"scanning {db!r}") from e

    def last_below(self, db: str, stop: bytes, start: bytes) -> tuple[bytes, bytes] | None:
        try:
            cur = self._txn.cursor(db=self._kv.handles[db])
            if not (cur.prev() if cur.set_range(stop) else cur.last()):
                return None
            key = cur.key()
            return None if key < start else (bytes(key), bytes(cur.value()))
        except self._kv.lmdb_error as e:
            raise self._kv.error(e, f"reading {db!r}") from e

    def put_many(self, db: str, items: Iterable[tuple[bytes, bytes]]) -> None:
        try:
            handle = self._kv.handles[db]
            empty = not self._txn.stat(handle)["entries"]
            with self._txn.cursor(db=handle) as cur:
                cur.putmulti(items, append=empty)
        except self._kv.lmdb_error as e:
            if isinstance(e, self._kv.passthrough):
                raise
            raise self._kv.error(e, f"writing {db!r}") from e

    def drop(self, db: str) -> None:
        try:
            self._txn.drop(self._kv.handles[db], delete=False)
        except self._kv.lmdb_error as e:
            if isinstance(e, self._kv.passthrough):
                raise
            raise self._kv.error(e, f"emptying {db!r}") from e

    def count(self, db: str) -> int:
        try:
            return int(self._txn.stat(self._kv.handles[db])["entries"])
        except self._kv.lmdb_error as e:
            raise self._kv.error(e, f"counting {db!r}") from e


class LmdbKV(KV):
    """The named databases in one LMDB environment.

    The map starts small and doubles whenever a write fills it; the
    transaction that hit the limit is retried, never lost. One environment
    is shared by every ``LmdbKV`` of the same path in a process (LMDB forbids
    opening one environment twice in a process).

    Every driver error is translated here: damage (a corrupted page, a page
    past the end, an invalid file) is an :class:`IntegrityError` pointing at
    ``artledger verify`` and ``artledger recover``; a full disk names the
    device and the free space; anything else is a :class:`StoreError`.
    Reader slots left by processes killed inside a read are freed when the
    environment is opened and whenever a read finds no free slot.

    ``readonly`` (the reason, when not None) opens the environment read-only
    and makes :meth:`write` raise :class:`ReadOnlyStoreError`; ``lock=False``
    opens it without ``lock.mdb`` (a read-only filesystem: nobody can write).
    New files are created mode 0600 in a directory created mode 0700.
    ``dbs`` declares the databases (a store's: ``engine.projections.STORE_DATABASES``).
    """

    persistent = True
    multi_process = True

    def __init__(
        self,
        path: Path,
        dbs: Iterable[str],
        *,
        map_size: int = 64 << 20,
        readonly: str | None = None,
        lock: bool = True,
    ) -> None:
        import lmdb

        self._names = declared(dbs)
        self._lmdb = lmdb
        self.lmdb_error: type[Exception] = lmdb.Error
        # Raised inside ``fn`` by write(): handled there (grow the map, refresh it).
        self.passthrough: tuple[type[Exception], ...] = (lmdb.MapFullError, lmdb.MapResizedError)
        self._damage: tuple[type[Exception], ...] = tuple(
            getattr(lmdb, n) for n in _DAMAGE_NAMES if hasattr(lmdb, n)
        )
        self.path = path
        self.readonly = readonly
        key = str(path.resolve())
        self._key = key
        with _ENV_LOCK:
            entry = _ENVS.get(key)
            if entry is not None and entry[0] == os.getpid():
                env = entry[1]
                _ENVS[key] = (entry[0], env, entry[2] + 1)
            else:
                env = self._open_env(map_size, lock)
                _ENVS[key] = (os.getpid(), env, 1)
        self.env = env
        self._write_lock = threading.Lock()
        try:
            self.handles = Databases({name: self._open_db(name) for name in self._names})
        except BaseException:
            self.close()
            raise
        self._closed = False

    def _open_env(self, map_size: int, lock: bool) -> Any:
        lmdb = self._lmdb
        path = self.path
        if self.readonly is None:
            try:
                path.mkdir(mode=0o700, parents=True, exist_ok=True)
            except (NotADirectoryError, FileExistsError):
                raise StoreError(
                    f"the ledger path {path} (or a parent) is a file, not a directory; "
                    "move it aside and run `artledger recover`"
                ) from None
            except OSError as e:
                raise StoreError(f"cannot create the ledger directory {path}: {e}") from e
        swept = False
        while True:
            try:
                env = lmdb.open(
                    str(path),
                    map_size=map_size,
                    max_dbs=len(self._names) + 4,
                    max_readers=MAX_READERS,
                    readahead=False,
                    metasync=True,
                    sync=True,
                    lock=lock,
                    readonly=self.readonly is not None,
                    create=self.readonly is None,
                    mode=0o600,
                )
                break
            except lmdb.ReadersFullError as e:
                # py-lmdb takes a reader slot while opening: free the slots of
                # killed processes ourselves (no environment to ask yet), once.
                from engine.storage.lmdb_readers import clear_dead_readers

                table = clear_dead_readers(path / "lock.mdb")
                if swept or not table.cleared:
                    raise StoreError(self._readers_full(table.live, table.slots, table.pids)) from e
                swept = True
            except lmdb.Error as e:
                raise self.error(e, "opening") from e
        if lock:
            with contextlib.suppress(lmdb.Error):
                env.reader_check()
        return env

    def _open_db(self, name: str) -> Any:
        try:
            return self.env.open_db(name.encode(), create=self.readonly is None)
        except self._lmdb.NotFoundError as e:
            raise StoreError(
                f"the ledger at {self.path} has no database {name!r} (written by an older "
                "artledger): open it writable once to add it"
            ) from e
        except self._lmdb.Error as e:
            raise self.error(e, f"opening database {name!r} of") from e

    @property
    def databases(self) -> tuple[str, ...]:
        return self._names

    # -- errors ------------------------------------------------------------------
    def error(self, e: Exception, doing: str) -> StoreError | IntegrityError:
        """The artledger error for driver error ``e`` raised while ``doing``."""
        lmdb = self._lmdb
        where = f"the ledger at {self.path}"
        if isinstance(e, self._damage):
            return IntegrityError(f"{where} is damaged ({doing}: {e}); {_RECOVER}")
        if isinstance(e, lmdb.ReadonlyError):
            return ReadOnlyStoreError(
                f"{where} is read-only ({doing}: {e}); open it with Store.open(path, "
                "readonly=True) to read it"
            )
        if isinstance(e, lmdb.PanicError):
            return StoreError(
                f"{where} stopped after a failed write ({doing}: {e}): close every handle "
                "on this store in this process and open it again"
            )
        code = getattr(e, "code", 0)
        if code == errno.EACCES:
            return StoreError(f"{where}: permission denied ({doing}: {e}); check its permissions")
        if code in (errno.ENOSPC, errno.EDQUOT):
            return StoreError(self._no_space(doing))
        return StoreError(f"{doing} {where} failed: {e}")

    def _no_space(self, doing: str) -> str:
        free = free_space(self.path)
        room = "" if free is None else f": free {free} bytes"
        return (
            f"no space left on the device holding {self.path}{room} (while {doing} the "
            "ledger); free some space (or run `artledger gc`) and retry; nothing was committed"
        )

    def _commit_error(self, e: Exception) -> ArtledgerError:
        code = getattr(e, "code", 0)
        if code in (errno.ENOSPC, errno.EDQUOT):
            return StoreError(self._no_space("committing to"))
        if code == errno.EIO:
            free = free_space(self.path)
            if free is not None and free < NEARLY_FULL:
                return StoreError(self._no_space("committing to"))
            room = "" if free is None else f"; {free} bytes free"
            return StoreError(
                f"the device holding {self.path} reported an I/O error while committing to "
                f"the ledger ({e}{room}): check the device (dmesg); nothing was committed"
            )
        err = self.error(e, "committing to")
        if isinstance(err, IntegrityError):
            return err
        return StoreError(f"{err}; nothing was committed")

    def _readers_full(self, live: int, slots: int, pids: list[int]) -> str:
        who = f" (processes {', '.join(map(str, pids[:10]))}{' ...' if len(pids) > 10 else ''})"
        return (
            f"all {slots or MAX_READERS} reader slots of the ledger at {self.path} are taken, "
            f"{live} of them by live readers{who if pids else ''} (the slots of killed "
            "processes were freed first). Close processes (or threads) that hold this store "
            "open in long reads, then retry"
        )

    def _live_readers(self) -> tuple[int, list[int]]:
        pids: list[int] = []
        with contextlib.suppress(self._lmdb.Error):
            for line in self.env.readers().splitlines()[1:]:
                fields = line.split()
                if fields and fields[0].isdigit():
                    pids.append(int(fields[0]))
        return len(pids), sorted(set(pids))

    # -- transactions -------------------------------------------------------------
    def _refresh_map(self) -> None:
        try:
            self.env.set_mapsize(0)
        except self._lmdb.Error as e:
            raise self.error(e, "adopting the grown map of") from e

    def read(self) -> Txn:
        view = self.pending()
        if view is not None:
            return view
        lmdb = self._lmdb
        checked = False
        for _ in range(4):
            try:
                return _LmdbTxn(self, self.env.begin(write=False, buffers=False))
            except lmdb.MapResizedError:
                self._refresh_map()
            except lmdb.ReadersFullError as e:
                if checked:
                    live, pids = self._live_readers()
                    info = self.env.info()
                    raise StoreError(
                        self._readers_full(live, int(info["max_readers"]), pids)
                    ) from e
                checked = True
                try:
                    self.env.reader_check()
                except lmdb.Error as e2:
                    raise self.error(e2, "freeing the reader slots of") from e2
            except lmdb.Error as e:
                raise self.error(e, "beginning a read of") from e
        raise StoreError(f"cannot read the ledger at {self.path}: its map keeps resizing")

    def end_read(self, txn: Txn) -> None:
        if isinstance(txn, _LmdbTxn):  # not a pending window's view (its owner ends it)
            txn._txn.abort()

    def generation(self, txn: Txn) -> int | None:
        assert isinstance(txn, _LmdbTxn)
        # LMDB's transaction id: a read's is the last committed one, a write's one more.
        tid = int(txn._txn.id())
        return tid - 1 if txn.writable else tid

    def write(self, fn: Callable[[Txn], T]) -> T:
        if self.readonly is not None:
            raise ReadOnlyStoreError(
                f"the store at {self.path.parent} is read-only ({self.readonly}); "
                "nothing was written"
            )
        lmdb = self._lmdb
        with self._write_lock:
            while True:
                try:
                    txn = self.env.begin(write=True)
                except lmdb.MapResizedError:
                    self._refresh_map()
                    continue
                except lmdb.Error as e:
                    raise self.error(e, "beginning a write to") from e
                try:
                    result = fn(_LmdbTxn(self, txn, True))
                except lmdb.MapFullError:
                    txn.abort()
                    self.grow()
                    continue
                except lmdb.MapResizedError:
                    txn.abort()
                    self._refresh_map()
                    continue
                except lmdb.Error as e:
                    txn.abort()
                    raise self.error(e, "writing to") from e
                except BaseException:
                    txn.abort()
                    raise
                try:
                    txn.commit()
                    return result
                except lmdb.MapFullError:
                    self.grow()
                except lmdb.MapResizedError:
                    self._refresh_map()
                except lmdb.Error as e:
                    raise self._commit_error(e) from e

    def grow(self) -> None:
        """Double the map size (called when a write transaction fills it)."""
        size = int(self.env.info()["map_size"])
        try:
            self.env.set_mapsize(size * 2)
        except self._lmdb.Error as e:
            raise self.error(e, "growing the map of") from e

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
        if getattr(self, "_closed", False):
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
