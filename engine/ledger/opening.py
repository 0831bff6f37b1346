"""Opening a store directory: create, join or refuse, never replace.

A store whose ledger is missing or damaged is refused
(:class:`LedgerMissingError`, :class:`LedgerDamagedError`), never replaced by
an empty one; a creation killed half-way is finished by the next open.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

from engine.errors import InvalidArgumentError, LedgerDamagedError, LedgerMissingError, StoreError
from engine.ledger.core import Ledger, NoFormatError
from engine.ledger.layout import (
    CREATING,
    directory_lock,
    evidence_of_use,
    fsync_dir,
    lock_usable,
    readonly_reason,
)
from engine.ledger.secret import load_secret
from engine.projections import STORE_DATABASES
from engine.storage import lmdb_file as ledger_file
from engine.storage.blobs import MemoryBlobStore, PackBlobStore
from engine.storage.kv import LmdbKV, MemoryKV
from engine.storage.lmdb_file import RECOVER_HINT, DataFile


@dataclass(frozen=True)
class Options:
    """How chunks are cut and compressed, and the LMDB map size to start with."""

    chunk_size: int = 4 << 20
    level: int = 3
    workers: int = 2
    map_size: int = 64 << 20

    def check(self) -> None:
        if self.chunk_size < 64 << 10:
            raise InvalidArgumentError(
                f"chunk_size {self.chunk_size} is too small (minimum 64 KiB)"
            )


def memory_ledger(options: Options) -> Ledger:
    """A ledger held in memory (the in-memory twin of the LMDB/packs ledger)."""
    return Ledger(
        MemoryKV(STORE_DATABASES),
        MemoryBlobStore(),
        path=None,
        secret=secrets.token_bytes(32),
        chunk_size=options.chunk_size,
        level=options.level,
        workers=options.workers,
    )


def open_ledger(root: Path, options: Options, *, readonly: bool = False) -> Ledger:
    """Open the store directory ``root``, creating it when missing (see the module)."""
    options.check()
    if root.exists() and not root.is_dir():
        raise StoreError(
            f"store path {root} is a file, not a store directory; pass a directory path"
        )
    reason = "opened with readonly=True" if readonly else None
    if not root.exists():
        if reason is not None:
            raise StoreError(f"no store at {root} (opened read-only: nothing is created)")
        try:
            root.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"cannot create the store directory {root}: {e}") from e
    reason = reason or readonly_reason(root)
    ledger = root / "ledger"
    if ledger.exists() and not ledger.is_dir():
        raise LedgerDamagedError(
            f"{ledger} is a file, not the ledger directory; {RECOVER_HINT} "
            "(it moves the file aside)"
        )
    df = ledger_file.check(ledger / "data.mdb")
    if df.committed or df.state == "unknown":
        try:
            return _open_existing(root, reason, options)
        except NoFormatError:
            # A creator may be between LMDB creating the databases and its first
            # commit: it holds the directory lock until it is done. A creation
            # that was killed there left its marker: finish it.
            with directory_lock(root):
                if reason is None and (root / CREATING).exists():
                    return _create(root, options)
                return _open_existing(root, reason, options)
    if reason is not None:
        _refuse_missing(root, df)
        raise StoreError(f"no store at {root} (it is read-only, {reason}: none is created)")
    with directory_lock(root):
        # Another process may have created (or recovered) the ledger meanwhile.
        df = ledger_file.check(ledger / "data.mdb")
        if df.committed or df.state == "unknown":
            return _open_existing(root, None, options)
        _refuse_missing(root, df)
        return _create(root, options)


def _open_existing(
    root: Path, reason: str | None, options: Options, *, create: bool = False
) -> Ledger:
    """Open the ledger at ``root``; with ``create``, initialise it when it
    holds no store yet (only for a store being created)."""
    path = root / "ledger"
    secret, problem = load_secret(root, create=create)
    lock = reason is None or lock_usable(path)
    kv = LmdbKV(path, STORE_DATABASES, map_size=options.map_size, readonly=reason, lock=lock)
    blobs: PackBlobStore | None = None
    try:
        blobs = PackBlobStore(root / "packs")
        led = Ledger(
            kv,
            blobs,
            path=root,
            secret=secret,
            chunk_size=options.chunk_size,
            level=options.level,
            workers=options.workers,
            create=create,
            readonly=reason,
        )
    except BaseException:
        if blobs is not None:
            blobs.close()
        kv.close()
        raise
    led.check_secret(problem)
    led.check_identity(write=reason is None)
    if reason is None:
        led.recover_blobs()
        if not create:  # a creation that died after its first commit is complete
            (root / CREATING).unlink(missing_ok=True)
    return led


def _create(root: Path, options: Options) -> Ledger:
    """A new store (the caller holds the directory lock and found no ledger
    and no sign of use). ``.creating`` marks the creation until the ledger
    and the identity file are written: an open that finds it finishes a
    creation that was killed half-way."""
    marker = root / CREATING
    marker.touch(mode=0o600)
    fsync_dir(root)
    led = _open_existing(root, None, options, create=True)
    marker.unlink(missing_ok=True)
    fsync_dir(root)
    return led


def _refuse_missing(root: Path, df: DataFile) -> None:
    """Raise :class:`LedgerMissingError` when ``root`` was used but its ledger is gone."""
    used = evidence_of_use(root)
    if used is None:
        return
    what = {
        "missing": "is missing",
        "empty": "is empty (0 bytes)",
        "blank": "holds a ledger that never committed anything",
    }.get(df.state, f"is unusable ({df.state})")
    raise LedgerMissingError(
        f"the store at {root} was used ({used}) but its ledger {df.path} {what}; "
        "refusing to start a new, empty ledger over it (every artifact would disappear and "
        f"the pack files' chunks would be unreachable). {RECOVER_HINT[0].upper()}"
        f"{RECOVER_HINT[1:]}"
    )
