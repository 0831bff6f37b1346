"""The store secret: the key that signs pickles, in ``<store>/secret`` (0600)."""

from __future__ import annotations

import hashlib
import secrets
from pathlib import Path

from engine.errors import StoreError
from engine.ledger.layout import write_new


def fingerprint(secret: bytes) -> bytes:
    """What the ledger records of the secret, to notice it was replaced."""
    return hashlib.blake2b(secret, digest_size=16, person=b"artledger-secret").digest()


def load_secret(root: Path, *, create: bool) -> tuple[bytes, str | None]:
    """The secret of the store at ``root`` (created when ``create`` and
    missing), and a problem line when it is missing or truncated (a random
    secret then stands in, so nothing signed with it verifies)."""
    path = root / "secret"
    if create and not path.exists():
        # Written whole to a private file, then linked into place: a crash or a
        # concurrent first open never sees an empty or partial secret.
        write_new(path, secrets.token_bytes(32))
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return secrets.token_bytes(32), (
            f"the store secret {path} is missing: pickled artifacts will neither load nor "
            "save; restore the file from a backup and reopen the store"
        )
    except OSError as e:
        raise StoreError(f"cannot read the store secret {path}: {e}") from e
    if len(data) < 16:
        return secrets.token_bytes(32), (
            f"the store secret {path} is truncated: pickled artifacts will neither load nor "
            "save; restore the file from a backup and reopen the store"
        )
    return data, None
