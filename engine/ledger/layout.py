"""The files of a store directory besides the ledger and the packs.

- ``identity`` (mode 0600, JSON, written whole and linked into place, never
  overwritten): the store id, the chunk-address seed and the secret's
  fingerprint. They live in the ledger too, but a lost ledger must not take
  them along: without the seed no chunk in the pack files can be re-indexed.
- ``.creating``: present while a new store is being created, so a creation
  killed half-way is finished by the next open instead of being mistaken for
  a store whose ledger was lost.

And what a store's directory says about it: whether it was used (so a
missing ledger is a loss, not a new store), whether this process can write
it, and the lock that serialises creating (and recovering) a ledger.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from engine.errors import StoreError

IDENTITY = "identity"
CREATING = ".creating"


@dataclass(frozen=True)
class Identity:
    """What a store is, independently of its ledger."""

    store_id: str
    seed: int
    secret_fp: bytes | None = None

    def to_json(self) -> bytes:
        doc = {"store_id": self.store_id, "seed": self.seed}
        if self.secret_fp is not None:
            doc["secret_fp"] = self.secret_fp.hex()
        return (json.dumps(doc, sort_keys=True) + "\n").encode()


def read_identity(root: Path) -> Identity | None:
    """The identity recorded in ``root`` (None when absent or unreadable)."""
    try:
        doc = json.loads((root / IDENTITY).read_bytes())
        fp = doc.get("secret_fp")
        return Identity(
            str(doc["store_id"]), int(doc["seed"]), None if fp is None else bytes.fromhex(fp)
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def write_identity(root: Path, ident: Identity) -> None:
    """Write ``identity`` whole (mode 0600) and link it into place; an existing
    one is kept."""
    path = root / IDENTITY
    if path.exists():
        return
    write_new(path, ident.to_json())


def write_new(path: Path, data: bytes) -> None:
    """Create ``path`` holding ``data`` (mode 0600), atomically: a crash leaves
    the whole file or none; an existing file is kept."""
    tmp = path.with_name(f".{path.name}-{secrets.token_hex(8)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        tmp.unlink()
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def directory_lock(root: Path) -> Iterator[None]:
    """An exclusive lock on the store directory (``flock``), held while a
    ledger is created or recovered."""
    try:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as e:
        raise StoreError(f"cannot lock the store directory {root}: {e}") from e
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def evidence_of_use(root: Path) -> str | None:
    """Why ``root`` is a store that was used (None for a new or empty one):
    pack files, an identity file, or a secret beside a ledger directory that a
    creation in progress did not leave (a directory holding only a secret is
    a store about to be created, e.g. by ``replay --into``)."""
    packs = sorted((root / "packs").glob("*.pack")) if (root / "packs").is_dir() else []
    if packs:
        size = sum(p.stat().st_size for p in packs if p.is_file())
        return f"it holds {len(packs)} pack file(s), {size} bytes of chunks"
    if (root / IDENTITY).exists():
        return f"it has an identity file ({root / IDENTITY})"
    if (root / "secret").exists() and (root / "ledger").exists() and not (root / CREATING).exists():
        return f"it has a secret ({root / 'secret'})"
    return None


def readonly_reason(root: Path) -> str | None:
    """Why this process cannot write the store at ``root`` (None when it can)."""
    try:
        if os.statvfs(root).f_flag & os.ST_RDONLY:
            return "its filesystem is mounted read-only"
    except OSError:
        pass
    ledger = root / "ledger"
    for path in (root, ledger, ledger / "data.mdb"):
        if path.exists() and not os.access(path, os.W_OK):
            return f"this user cannot write {path}"
    return None


def lock_usable(ledger: Path) -> bool:
    """Whether LMDB's lock file can be used (opened read-write, or created)."""
    lock = ledger / "lock.mdb"
    if lock.exists():
        return os.access(lock, os.R_OK | os.W_OK)
    return os.access(ledger, os.W_OK | os.X_OK)
