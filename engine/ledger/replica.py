"""Opening a shared store: this machine's replica directory, joined to the
shared log (PostgreSQL) and the shared chunk store (an object store).

The replica directory holds ``ledger/`` (the LMDB log replica and its
projections), ``cache/`` (chunks fetched or written here, bounded),
``secret`` (the store's pickle-signing key, from the shared log),
``identity``, and ``shared.json``: the two URLs, without any password, so
``Store.open(path)`` reconnects. Credentials come from the environment
(``PGPASSWORD`` or ``~/.pgpass``; ``AWS_*``), never from the replica.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from engine.errors import (
    InvalidArgumentError,
    LedgerDamagedError,
    SharedStoreUnavailableError,
    StoreError,
)
from engine.events import STORE_CREATED
from engine.ledger.core import Ledger
from engine.ledger.layout import Identity, write_new
from engine.ledger.opening import Options, open_ledger
from engine.ledger.secret import fingerprint, load_secret
from engine.ledger.shared import SHARED_DATABASES, SharedLedger
from engine.projections import STORE_DATABASES
from engine.storage import lmdb_file as ledger_file
from engine.storage.blobs import BlobStore
from engine.storage.kv import KV, LmdbKV, Txn
from engine.storage.log import EventLog

SHARED_CONFIG = "shared.json"
FORMAT = 1
_Q = struct.Struct(">Q")


@dataclass(frozen=True)
class SharedUrls:
    """Where a shared store's log and chunks live (``log`` without a password)."""

    log: str
    chunks: str


@dataclass(frozen=True)
class SharedIdentity:
    """What the shared log records of the store it holds."""

    store_id: str
    seed: int
    secret: bytes
    chunk_size: int
    level: int


def redact(url: str) -> str:
    """``url`` without its password (safe to print and to record)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}@" if parts.username else ""
    return urlunsplit(parts._replace(netloc=user + host))


@dataclass(frozen=True)
class SharedOptions:
    """``Store.open``'s shared-store arguments (URLs may be None: recorded or
    from the environment)."""

    log: str | None = None
    chunks: str | None = None
    timeout: float = 10.0
    cache_bytes: int = 1 << 30


def open_any_ledger(
    root: Path, options: Options, shared: SharedOptions, *, readonly: bool
) -> Ledger:
    """The ledger of the store at ``root``: a replica of a shared store when
    URLs are given, recorded or set in the environment; else the embedded one."""
    urls = resolve_urls(root, shared.log, shared.chunks)
    if urls is None:
        return open_ledger(root, options, readonly=readonly)
    return open_replica(
        root,
        urls,
        chunk_size=options.chunk_size,
        level=options.level,
        workers=options.workers,
        map_size=options.map_size,
        readonly=readonly,
        timeout=shared.timeout,
        cache_bytes=shared.cache_bytes,
    )


def resolve_urls(root: Path, log: str | None, chunks: str | None) -> SharedUrls | None:
    """The shared URLs for the replica at ``root``: those given, else those the
    replica recorded, else ``$ARTLEDGER_LOG``/``$ARTLEDGER_CHUNKS``; None for
    an embedded store. A replica given URLs other than its own is refused."""
    recorded = read_config(root)
    if recorded is not None:
        for given, mine, what in ((log, recorded.log, "log"), (chunks, recorded.chunks, "chunks")):
            if given is not None and redact(given) != mine:
                raise InvalidArgumentError(
                    f"the replica at {root} belongs to the shared {what} {mine}, not "
                    f"{redact(given)}; open another directory to join that store"
                )
        return SharedUrls(log or recorded.log, chunks or recorded.chunks)
    if (root / "ledger").exists() and log is None and chunks is None:
        return None  # an embedded store: the environment's defaults do not apply
    log = log or os.environ.get("ARTLEDGER_LOG") or None
    chunks = chunks or os.environ.get("ARTLEDGER_CHUNKS") or None
    if log is None and chunks is None:
        return None
    if (root / "ledger").exists():
        raise InvalidArgumentError(
            f"{root} holds an embedded store; it cannot become a replica of a shared one. "
            "Open a new directory with log=/chunks=, then `artledger export` the embedded "
            "store and `artledger import` it there (docs/shared.md)"
        )
    if log is None or chunks is None:
        missing = "log (a postgresql:// URL)" if log is None else "chunks (an s3:// or file:// URL)"
        raise InvalidArgumentError(
            f"a shared store needs both a log and a chunk store; the {missing} is missing "
            "(pass it, or set ARTLEDGER_LOG / ARTLEDGER_CHUNKS)"
        )
    return SharedUrls(log, chunks)


def read_config(root: Path) -> SharedUrls | None:
    path = root / SHARED_CONFIG
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text())
        return SharedUrls(str(raw["log"]), str(raw["chunks"]))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise StoreError(
            f"{path} is unreadable ({e}); it names the replica's shared log and chunk store: "
            'rewrite it as {"log": "postgresql://...", "chunks": "s3://..."}'
        ) from e


def connect_log(url: str, timeout: float) -> KV:
    """The shared-log KV at ``url`` (``postgresql://``)."""
    scheme = urlsplit(url).scheme
    if scheme in ("postgresql", "postgres"):
        from engine.storage.kv.postgres import PostgresKV

        return PostgresKV(url, SHARED_DATABASES, timeout=timeout)
    raise InvalidArgumentError(
        f"unsupported shared log URL {redact(url)!r}: use postgresql://user@host:port/db"
    )


def open_chunks(url: str, cache: Path, timeout: float, cache_bytes: int) -> BlobStore:
    """The shared chunk store at ``url`` (``s3://``, ``file://``, ``gs://``, ``az://``)."""
    from engine.storage.blobs.objects import ObjectBlobStore

    return ObjectBlobStore(url, cache_dir=cache, cache_bytes=cache_bytes, timeout=timeout)


def join(remote: KV, *, chunk_size: int, level: int) -> SharedIdentity:
    """The identity the shared log records; recorded first (with
    ``store.created`` as event 1) when the log is empty."""

    def read(txn: Txn) -> SharedIdentity | None:
        fmt = txn.get("meta", b"format")
        if fmt is None:
            return None
        if _Q.unpack(fmt)[0] > FORMAT:
            raise StoreError(
                f"the shared log has format version {_Q.unpack(fmt)[0]}, newer than this "
                "artledger supports; upgrade artledger"
            )

        def need(key: bytes) -> bytes:
            value = txn.get("meta", key)
            if value is None:
                raise LedgerDamagedError(f"the shared log has no {key.decode()!r} record")
            return value

        return SharedIdentity(
            need(b"store_id").decode(),
            _Q.unpack(need(b"seed"))[0],
            need(b"secret"),
            _Q.unpack(need(b"chunk_size"))[0],
            _Q.unpack(need(b"level"))[0],
        )

    with remote.snapshot() as txn:
        found = read(txn)
    if found is not None:
        return found

    def create(txn: Txn) -> SharedIdentity:
        again = read(txn)
        if again is not None:
            return again
        ident = SharedIdentity(
            secrets.token_hex(8), secrets.randbits(63), secrets.token_bytes(32), chunk_size, level
        )
        txn.put("meta", b"format", _Q.pack(FORMAT))
        txn.put("meta", b"store_id", ident.store_id.encode())
        txn.put("meta", b"seed", _Q.pack(ident.seed))
        txn.put("meta", b"secret", ident.secret)
        txn.put("meta", b"chunk_size", _Q.pack(chunk_size))
        txn.put("meta", b"level", _Q.pack(level))
        EventLog().append(txn, [(STORE_CREATED, {"store_id": ident.store_id, "format": 1})])
        return ident

    return remote.write(create)


def open_replica(
    root: Path,
    urls: SharedUrls,
    *,
    chunk_size: int,
    level: int,
    workers: int,
    map_size: int,
    readonly: bool,
    timeout: float,
    cache_bytes: int,
) -> SharedLedger:
    """Open (creating or rebuilding) the replica at ``root`` of the shared store
    at ``urls``, and catch it up. Offline (the log server unreachable), an
    existing replica opens for reading; a new one cannot be made."""
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    where = f"the shared log at {redact(urls.log)}"
    ident: SharedIdentity | None = None
    remote: KV | None = None
    problem: str | None = None
    try:
        remote = connect_log(urls.log, timeout)
        ident = join(remote, chunk_size=chunk_size, level=level)
    except SharedStoreUnavailableError as e:
        if remote is not None:
            remote.close()
            remote = None
        problem = str(e)
        if not (root / "ledger" / "data.mdb").exists():
            raise SharedStoreUnavailableError(
                f"cannot create the replica at {root}: {e}; a new replica needs the shared log"
            ) from e
    if read_config(root) is None:
        write_new(
            root / SHARED_CONFIG,
            json.dumps({"log": redact(urls.log), "chunks": urls.chunks}).encode(),
        )
    if ident is not None and not (root / "secret").exists():
        write_new(root / "secret", ident.secret)
    secret, secret_problem = load_secret(root, create=False)
    kv = _open_local(root, map_size, readonly, online=ident is not None)
    blobs: BlobStore | None = None
    connected = remote

    def connect() -> KV:
        nonlocal connected
        if connected is not None:
            kv_, connected = connected, None
            return kv_
        return connect_log(urls.log, timeout)

    try:
        blobs = open_chunks(urls.chunks, root / "cache", timeout, cache_bytes)
        local_ident = None
        if ident is not None:
            local_ident = Identity(ident.store_id, ident.seed, fingerprint(ident.secret))
        led = SharedLedger(
            kv,
            blobs,
            path=root,
            secret=secret,
            chunk_size=ident.chunk_size if ident else chunk_size,
            level=ident.level if ident else level,
            workers=workers,
            create=not readonly,
            readonly="opened with readonly=True" if readonly else None,
            identity=local_ident,
            connect=connect,
            where=where,
        )
    except BaseException:
        if blobs is not None:
            blobs.close()
        kv.close()
        if remote is not None:
            remote.close()
        raise
    led.check_secret(secret_problem)
    if ident is not None and led.store_id != ident.store_id:
        led.close()
        raise StoreError(
            f"the replica at {root} holds store {led.store_id}, but {where} holds store "
            f"{ident.store_id}; open another directory to join it"
        )
    if problem is not None:
        led.sync_problem = problem
    elif not readonly:
        try:
            led.sync()
        except BaseException:
            led.close()
            raise
    return led


def _open_local(root: Path, map_size: int, readonly: bool, *, online: bool) -> KV:
    """The replica's LMDB; a damaged one is moved aside and started afresh
    when the shared log can refill it."""
    path = root / "ledger"
    ro = "opened with readonly=True" if readonly else None
    problem = ledger_file.inspect(path / "data.mdb").problem()
    if problem is not None:
        if not online or readonly:
            raise LedgerDamagedError(
                f"{problem}; this replica is rebuilt from the shared log when it is opened "
                "(writable) while the shared log is reachable"
            )
        _move_aside(path)
    try:
        return LmdbKV(path, STORE_DATABASES, map_size=map_size, readonly=ro)
    except LedgerDamagedError:
        if not online or readonly:
            raise
        _move_aside(path)
        return LmdbKV(path, STORE_DATABASES, map_size=map_size, readonly=ro)


def _move_aside(path: Path) -> None:
    if path.exists():
        shutil.move(str(path), str(path.with_name(f"ledger.damaged-{int(time.time())}")))
