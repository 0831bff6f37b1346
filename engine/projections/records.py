"""Decoding ledger records: damaged bytes become an ``IntegrityError``.

Projection and index records are msgpack maps and lists. A flipped byte can
make one undecodable (invalid msgpack, invalid UTF-8) or decode into the
wrong shape. Queries decode records with :func:`record` (which also checks
the keys every reader relies on), and every catalog read runs inside
:func:`damage_boundary`, so damage met by a query is an ``IntegrityError``
naming the ledger and the way out, never a ``UnicodeDecodeError`` or a
``KeyError`` from deep inside it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import msgpack

from engine.errors import ArtledgerError, IntegrityError
from engine.storage.damage import DECODE_ERRORS as DECODE_ERRORS

# The keys every reader of a projection record relies on.
REQUIRED: dict[str, tuple[str, ...]] = {
    "artifacts": (
        "id",
        "name",
        "version",
        "content_hash",
        "data_type",
        "materializer",
        "materializer_version",
        "files",
        "state",
        "tags",
        "size",
        "seq",
        "ts",
        "deleted",
    ),
    "steps": ("id", "run", "status", "invocation", "step", "seq", "inputs", "outputs"),
    "runs": ("id", "pipeline", "status", "seq"),
}
_REQUIRED_SETS = {db: frozenset(keys) for db, keys in REQUIRED.items()}
_NONE: frozenset[str] = frozenset()
HINT = (
    "run `artledger verify` to list the damage; `artledger replay --rebuild` refolds the "
    "projections from the log, `artledger recover` rebuilds a damaged log (docs/reliability.md)"
)


def record(raw: bytes, db: str) -> dict[str, Any]:
    """The projection record ``raw`` read from ``db`` (a msgpack map)."""
    try:
        rec = msgpack.unpackb(raw, raw=False, strict_map_key=False)
    except DECODE_ERRORS as e:
        raise IntegrityError(
            f"a record of the ledger's {db!r} database is damaged ({type(e).__name__}: {e}); {HINT}"
        ) from e
    if type(rec) is not dict or not rec.keys() >= _REQUIRED_SETS.get(db, _NONE):
        raise IntegrityError(
            f"a record of the ledger's {db!r} database is damaged (it is not a record "
            f"of the right shape); {HINT}"
        )
    return rec


def damaged(where: object, e: Exception) -> IntegrityError:
    """The error for decoding error ``e`` met at ``where``."""
    return IntegrityError(f"{where}: a record cannot be decoded ({type(e).__name__}: {e}); {HINT}")


@contextlib.contextmanager
def damage_boundary(where: str) -> Iterator[None]:
    """Turn a decoding error raised inside the block into an ``IntegrityError``
    naming ``where`` (artledger's own errors pass through)."""
    try:
        yield
    except ArtledgerError:
        raise
    except DECODE_ERRORS as e:
        raise damaged(where, e) from e


def manifests(rec: dict[str, Any]) -> list[list[Any]]:
    """Every file record (``[name, size, hash, chunk digests]``) of an artifact
    version: its files, then its visualizations' files. ``rec`` is an
    ``artifact.written`` event's data or an ``artifacts`` projection record."""
    out = list(rec.get("files") or [])
    out += [v[2] for v in rec.get("visualizations") or []]
    return out


def map_manifests(rec: dict[str, Any], fn: Callable[[list[Any]], list[Any]]) -> dict[str, Any]:
    """A copy of ``rec`` with every file record replaced by ``fn(record)``, files
    first, then visualizations (in the order :func:`manifests` lists them)."""
    out = dict(rec)
    out["files"] = [fn(f) for f in rec.get("files") or []]
    out["visualizations"] = [[v[0], v[1], fn(v[2])] for v in rec.get("visualizations") or []]
    return out
