"""PostgresKV: the named databases in one PostgreSQL table, the KV of a shared
store's global log. psycopg (3) is imported here, lazily, and its errors are
translated here and nowhere else.

Every database is a slice of one table, ``<prefix>kv(db, k, v)`` with
primary key ``(db, k)``; ``bytea`` compares bytewise (then by length), so a
scan's order is LMDB's. A write is one transaction that first takes the
store-wide advisory lock (``pg_advisory_xact_lock(lock_key)``): writes from
every process and machine are serialised, and each runs at READ COMMITTED
so that it sees every write committed before it got the lock (a REPEATABLE
READ snapshot would be taken before the lock wait ends). A read is a
REPEATABLE READ, READ ONLY transaction whose snapshot is taken when it
begins. Each read and write holds its own connection from a small pool.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from engine.errors import LogServerUnavailableError, ReadOnlyStoreError, StoreError
from engine.storage.kv.base import KV, Databases, T, Txn, bounds, declared

if TYPE_CHECKING:
    import psycopg

#: The store-wide write lock (``pg_advisory_xact_lock``): the bytes "artledgr".
LOCK_KEY = int.from_bytes(b"artledgr", "big")
#: Rows fetched per round trip by a scan, and about how many bytes (its first
#: pages are smaller: many scans stop after a few keys).
PAGE = 10_000
PAGE_BYTES = 32 << 20
_FIRST_PAGE = 128
#: Buffered puts sent in one batch before the next read (or at this size).
_FLUSH_ROWS = 2_000
_FLUSH_BYTES = 16 << 20
#: Idle connections kept for reuse.
POOL_SIZE = 8
_PREFIX = re.compile(r"[a-z_][a-z0-9_]{0,40}")
# Connections inherited over fork(): never closed (that would end the
# parent's sessions), never used.
_INHERITED: list[object] = []


def _where(info: dict[str, Any]) -> str:
    """``postgresql://host:port/db`` for messages (never the user or password)."""
    host = str(info.get("host") or info.get("hostaddr") or "localhost")
    port = str(info.get("port") or "5432")
    db = str(info.get("dbname") or info.get("user") or "postgres")
    return f"postgresql://{host}:{port}/{db}"


class _Sql:
    """The statements, as bytes (the table name is checked, not quoted)."""

    def __init__(self, table: str, lock_key: int) -> None:
        t = table
        self.create = (
            f'CREATE TABLE IF NOT EXISTS {t} (db text COLLATE "C" NOT NULL, '
            "k bytea NOT NULL, v bytea NOT NULL, PRIMARY KEY (db, k))"
        ).encode()
        self.exists = f"SELECT to_regclass('{t}') IS NOT NULL".encode()
        self.begin_write = (
            f"BEGIN ISOLATION LEVEL READ COMMITTED; SELECT pg_advisory_xact_lock({lock_key})"
        ).encode()
        # The snapshot of a REPEATABLE READ transaction is taken by its first
        # statement: take it now, not at the first read of the caller.
        self.begin_read = b"BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; SELECT 1"
        self.get = f"SELECT v FROM {t} WHERE db = %s AND k = %s".encode()
        self.upsert = (
            f"INSERT INTO {t} (db, k, v) VALUES (%s, %s, %s) "
            "ON CONFLICT (db, k) DO UPDATE SET v = EXCLUDED.v"
        ).encode()
        self.delete = f"DELETE FROM {t} WHERE db = %s AND k = %s".encode()
        self.drop = f"DELETE FROM {t} WHERE db = %s".encode()
        self.count = f"SELECT count(*) FROM {t} WHERE db = %s".encode()
        self._table = t
        self._scans: dict[tuple[str | None, bool, bool], bytes] = {}

    def scan(self, lo_op: str | None, has_hi: bool, reverse: bool) -> bytes:
        """``k lo_op %s`` and ``k < %s`` as asked, ordered, ``LIMIT %s``."""
        key = (lo_op, has_hi, reverse)
        q = self._scans.get(key)
        if q is None:
            where = "db = %s" + (f" AND k {lo_op} %s" if lo_op else "")
            where += " AND k < %s" if has_hi else ""
            order = "DESC" if reverse else "ASC"
            text = f"SELECT k, v FROM {self._table} WHERE {where} ORDER BY k {order} LIMIT %s"
            q = self._scans[key] = text.encode()
        return q


class _PgTxn(Txn):
    """A read or write transaction on one connection. Puts are buffered and
    sent in batches (pipelined) before anything else reads the database."""

    def __init__(self, kv: PostgresKV, conn: psycopg.Connection[Any], readonly: bool) -> None:
        self._kv = kv
        self.conn = conn
        self._cur = conn.cursor(binary=True)
        self._readonly = readonly
        self._pending: dict[tuple[str, bytes], bytes] = {}
        self._pending_bytes = 0

    def _run(self, query: bytes, params: tuple[object, ...], doing: str) -> psycopg.Cursor[Any]:
        try:
            return self._cur.execute(query, params)
        except self._kv.pg.Error as e:
            raise self._kv.error(e, doing, self.conn, wrote=not self._readonly) from e

    def _writable(self, db: str, doing: str) -> str:
        name = self._kv.dbs[db]
        if self._readonly:
            raise ReadOnlyStoreError(f"{doing} {db!r} in a read snapshot of {self._kv.where}")
        return name

    def flush(self) -> None:
        """Send the buffered puts."""
        if not self._pending:
            return
        rows = [(db, k, v) for (db, k), v in self._pending.items()]
        self._pending.clear()
        self._pending_bytes = 0
        try:
            self._cur.executemany(self._kv.sql.upsert, rows)
        except self._kv.pg.Error as e:
            raise self._kv.error(e, "writing", self.conn, wrote=True) from e

    def get(self, db: str, key: bytes) -> bytes | None:
        name = self._kv.dbs[db]
        if self._pending:
            v = self._pending.get((name, key))
            if v is not None:
                return v
        row = self._run(self._kv.sql.get, (name, key), f"reading {db!r} of").fetchone()
        return None if row is None else bytes(row[0])

    def put(self, db: str, key: bytes, value: bytes) -> None:
        name = self._writable(db, "writing")
        self._pending[(name, bytes(key))] = bytes(value)
        self._pending_bytes += len(key) + len(value)
        if len(self._pending) >= _FLUSH_ROWS or self._pending_bytes >= _FLUSH_BYTES:
            self.flush()

    def delete(self, db: str, key: bytes) -> bool:
        name = self._writable(db, "deleting from")
        buffered = self._pending.pop((name, key), None) is not None
        cur = self._run(self._kv.sql.delete, (name, key), f"deleting from {db!r} of")
        return buffered or cur.rowcount > 0

    def scan(
        self,
        db: str,
        start: bytes | None = None,
        stop: bytes | None = None,
        *,
        prefix: bytes | None = None,
        reverse: bool = False,
    ) -> Iterator[tuple[bytes, bytes]]:
        name = self._kv.dbs[db]
        lo, hi = bounds(start, stop, prefix)
        if lo is not None and hi is not None and lo >= hi:
            return
        lo_op = None if lo is None else ">="
        limit = _FIRST_PAGE
        doing = f"scanning {db!r} of"
        while True:
            self.flush()
            params: tuple[object, ...] = (name,)
            params += (() if lo is None else (lo,)) + (() if hi is None else (hi,)) + (limit,)
            q = self._kv.sql.scan(lo_op, hi is not None, reverse)
            rows: list[tuple[bytes, bytes]] = self._run(q, params, doing).fetchall()
            yield from rows
            if len(rows) < limit:
                return
            if reverse:
                hi = rows[-1][0]
            else:
                lo, lo_op = rows[-1][0], ">"
            # Grow the page up to PAGE rows while it stays under PAGE_BYTES
            # (estimated from three rows: large values make short pages).
            sample = (rows[0], rows[len(rows) // 2], rows[-1])
            row_bytes = 1 + sum(len(k) + len(v) for k, v in sample) // 3
            limit = max(1, min(limit * 8, PAGE, PAGE_BYTES // row_bytes))

    def drop(self, db: str) -> None:
        name = self._writable(db, "emptying")
        for pk in [pk for pk in self._pending if pk[0] == name]:
            del self._pending[pk]
        self._run(self._kv.sql.drop, (name,), f"emptying {db!r} of")

    def count(self, db: str) -> int:
        name = self._kv.dbs[db]
        self.flush()
        row = self._run(self._kv.sql.count, (name,), f"counting {db!r} of").fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._cur.close()


class PostgresKV(KV):
    """The named databases in a PostgreSQL table, shared by every process
    (and machine) that opens the same ``dsn``.

    ``dbs`` declares the databases; ``lock_key`` is the advisory lock every
    write takes first (all writers of one store must use the same key);
    ``prefix`` names the table (``<prefix>kv``, created if missing).
    ``timeout`` bounds every wait: connecting, each statement, the write
    lock, and an unanswered connection (TCP user timeout and keepalives),
    so a write to a server that is down fails within about ``timeout``
    seconds with :class:`~engine.errors.LogServerUnavailableError`. Server
    errors are translated here: unreachable or dropped connections are
    ``LogServerUnavailableError``, timeouts and other errors
    :class:`~engine.errors.StoreError`; messages name the server as
    ``postgresql://host:port/db``, never with its user or password.
    Commits are durable (``synchronous_commit=on``).
    """

    persistent = True
    multi_process = True

    def __init__(
        self,
        dsn: str,
        dbs: Iterable[str],
        *,
        timeout: float = 10.0,
        lock_key: int = LOCK_KEY,
        prefix: str = "artledger_",
    ) -> None:
        import psycopg
        import psycopg.conninfo

        self.pg = psycopg
        self._names = declared(dbs)
        self.dbs = Databases({name: name for name in self._names})
        if not _PREFIX.fullmatch(prefix):
            raise StoreError(f"the table prefix {prefix!r} is not a lower-case SQL identifier")
        if not isinstance(lock_key, int) or not -(2**63) <= lock_key < 2**63:
            raise StoreError(f"lock_key must be a signed 64-bit integer, got {lock_key!r}")
        if timeout <= 0:
            raise StoreError(f"timeout must be positive, got {timeout!r}")
        try:
            info = psycopg.conninfo.conninfo_to_dict(dsn)
        except psycopg.Error:
            raise StoreError("the shared log's DSN cannot be parsed (it is not shown)") from None
        self.where = _where(info)
        self._secret = str(info.get("password") or "")
        self.timeout = timeout
        ms = max(1, int(timeout * 1000))
        options = str(info.get("options") or "")
        options += f" -c statement_timeout={ms} -c lock_timeout={ms} -c synchronous_commit=on"
        # A scan's page is a walk of the primary key in order: without these,
        # a table with stale statistics gets a bitmap scan and a sort of every
        # key in range, for each page.
        options += " -c enable_bitmapscan=off -c enable_sort=off"
        self._dsn = dsn
        self._connect_args: dict[str, Any] = {
            "autocommit": True,
            "connect_timeout": max(2, math.ceil(timeout)),
            "options": options.strip(),
            "application_name": "artledger",
            "keepalives": 1,
            "keepalives_idle": max(1, math.ceil(timeout / 2)),
            "keepalives_interval": 1,
            "keepalives_count": 3,
            "tcp_user_timeout": ms,
        }
        self.sql = _Sql(f"{prefix}kv", lock_key)
        self._lock = threading.Lock()
        self._idle: list[psycopg.Connection[Any]] = []
        self._pid = os.getpid()
        self._closed = False
        self._create_table()

    @property
    def databases(self) -> tuple[str, ...]:
        return self._names

    # -- errors ------------------------------------------------------------------
    def _scrub(self, text: str) -> str:
        text = " ".join(text.split())
        return text.replace(self._secret, "***") if self._secret else text

    def error(
        self,
        e: Exception,
        doing: str,
        conn: psycopg.Connection[Any] | None,
        *,
        wrote: bool,
    ) -> StoreError:
        """The artledger error for driver error ``e`` raised while ``doing``
        (``wrote``: in a write transaction, which is then not committed)."""
        errors = self.pg.errors
        msg = self._scrub(str(e)) or type(e).__name__
        tail = "; nothing was written" if wrote else ""
        if conn is None or conn.broken or conn.closed:
            return LogServerUnavailableError(
                f"the shared log at {self.where} is unreachable ({doing} it: {msg}){tail}; "
                "check that the server is running and reachable, then retry"
            )
        if isinstance(e, errors.QueryCanceled | errors.LockNotAvailable):
            return StoreError(
                f"{doing} the shared log at {self.where} timed out after {self.timeout:g} s "
                f"({msg}): another writer holds the write lock for long, or the server is "
                f"overloaded{tail}"
            )
        if isinstance(e, errors.InsufficientPrivilege | errors.ReadOnlySqlTransaction):
            return ReadOnlyStoreError(f"{doing} the shared log at {self.where}: {msg}{tail}")
        return StoreError(f"{doing} the shared log at {self.where} failed: {msg}{tail}")

    # -- connections ----------------------------------------------------------------
    def _connect(self, doing: str, wrote: bool) -> psycopg.Connection[Any]:
        try:
            return self.pg.connect(self._dsn, **self._connect_args)
        except self.pg.Error as e:
            raise self.error(e, doing, None, wrote=wrote) from None

    def _checkout(self) -> psycopg.Connection[Any] | None:
        with self._lock:
            if self._closed:
                raise StoreError(f"the shared log at {self.where} is closed (PostgresKV.close)")
            if self._pid != os.getpid():  # forked: the parent's sessions are not ours
                _INHERITED.extend(self._idle)
                self._idle = []
                self._pid = os.getpid()
            return self._idle.pop() if self._idle else None

    def _checkin(self, conn: psycopg.Connection[Any]) -> None:
        ok = not conn.closed and conn.info.transaction_status == self.pg.pq.TransactionStatus.IDLE
        with self._lock:
            if ok and not self._closed and len(self._idle) < POOL_SIZE:
                self._idle.append(conn)
                return
        with contextlib.suppress(Exception):
            conn.close()

    def _drop_idle(self) -> None:
        """Close the idle connections (after one of them was found dead)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            with contextlib.suppress(Exception):
                conn.close()

    def _begin(self, query: bytes, doing: str, wrote: bool) -> psycopg.Connection[Any]:
        """A connection inside a new transaction begun with ``query``; a pooled
        connection found dead (a restarted server) is replaced once."""
        conn = self._checkout()
        while True:
            fresh = conn is None
            if conn is None:
                conn = self._connect(doing, wrote)
            try:
                conn.execute(query)
                return conn
            except self.pg.Error as e:
                err = self.error(e, doing, conn, wrote=wrote)
                with contextlib.suppress(Exception):
                    conn.close()
                if not fresh and isinstance(err, LogServerUnavailableError):
                    self._drop_idle()
                    conn = None
                    continue
                raise err from e

    def _create_table(self) -> None:
        conn = self._begin(b"SELECT 1", "opening", False)
        try:
            row = conn.execute(self.sql.exists).fetchone()
            if not (row and row[0]):
                conn.execute(self.sql.begin_write)
                conn.execute(self.sql.create)
                conn.execute(b"COMMIT")
        except self.pg.Error as e:
            with contextlib.suppress(Exception):
                conn.rollback()
            raise self.error(e, "creating the table of", conn, wrote=False) from e
        finally:
            self._checkin(conn)

    # -- transactions -------------------------------------------------------------
    def read(self) -> Txn:
        conn = self._begin(self.sql.begin_read, "beginning a read of", False)
        return _PgTxn(self, conn, readonly=True)

    def end_read(self, txn: Txn) -> None:
        assert isinstance(txn, _PgTxn)
        txn.close()
        with contextlib.suppress(self.pg.Error):
            txn.conn.execute(b"ROLLBACK")
        self._checkin(txn.conn)

    def write(self, fn: Callable[[Txn], T]) -> T:
        conn = self._begin(self.sql.begin_write, "beginning a write to", True)
        txn = _PgTxn(self, conn, readonly=False)
        try:
            try:
                result = fn(txn)
            except BaseException:
                with contextlib.suppress(Exception):
                    conn.execute(b"ROLLBACK")
                raise
            try:
                # The last puts and the COMMIT go out together: one round trip.
                with conn.pipeline():
                    txn.flush()
                    conn.execute(b"COMMIT")
            except self.pg.Error as e:
                with contextlib.suppress(Exception):
                    conn.execute(b"ROLLBACK")
                raise self._commit_error(e, conn) from e
            except StoreError:  # a put refused by the server (flush): nothing committed
                with contextlib.suppress(Exception):
                    conn.execute(b"ROLLBACK")
                raise
            return result
        finally:
            txn.close()
            self._checkin(conn)

    def _commit_error(self, e: Exception, conn: psycopg.Connection[Any]) -> StoreError:
        msg = self._scrub(str(e)) or type(e).__name__
        if conn.broken or conn.closed:
            return LogServerUnavailableError(
                f"the connection to the shared log at {self.where} dropped while committing "
                f"({msg}): the write may or may not have been committed; once the server is "
                "reachable, read the log's head before retrying"
            )
        return StoreError(
            f"committing to the shared log at {self.where} failed: {msg}; nothing was committed"
        )

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self._drop_idle()
