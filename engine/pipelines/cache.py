"""Cache lookups: is there a stored step run this step can reuse?

A hit needs a **completed** step run with the same cache key (the ``cache``
projection, newest first) such that

- none of its output artifact versions is deleted,
- every chunk of their files is still in the chunk index (``gc`` may have
  collected the bytes of a version deleted and then resurrected by nobody:
  a hit never points at data that cannot be loaded),
- it is not expired: ``cache_expires_after`` counts from the time the step
  run completed, and ``timedelta(0)`` means always expired.

A lookup is a handful of point reads in one read snapshot: a reverse prefix
scan of ``cache``, one ``steps`` get, one ``artifacts`` get per output and one
``chunks`` get per chunk. Nothing scans.
"""

from __future__ import annotations

import datetime as _dt
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engine.projections.keys import cache_index_key
from engine.projections.records import record
from engine.query.catalog import HasCatalog, catalog_of
from engine.storage.kv import Txn

if TYPE_CHECKING:
    from engine.query.catalog import Catalog
    from engine.query.models import StepRun

EXPIRED = "expired"
GONE = "outputs deleted or collected"


@dataclass(frozen=True)
class CacheLookup:
    """The result of a lookup: the step run record to reuse, or why there is none.

    ``reason`` is None on a hit and when no step run ever had the key (the
    caller then explains the miss against the step's history); otherwise
    ``"expired"`` or ``"outputs deleted or collected"``.
    """

    record: dict[str, Any] | None
    reason: str | None
    outputs: dict[str, dict[str, Any]] | None = None  # output name -> artifact record, on a hit


def _chunks_present(chunk_txn: Txn, art: dict[str, Any]) -> bool:
    for f in art["files"]:
        for digest in f[3]:
            if chunk_txn.get("chunks", digest) is None:
                return False
    return True


def lookup_in(
    txn: Txn,
    chunk_txn: Txn,
    cache_key: str,
    expires_after: _dt.timedelta | None,
    now_ns: int | None = None,
) -> CacheLookup:
    """Look ``cache_key`` up in ``txn`` (projections), checking chunks in ``chunk_txn``
    (the live chunk index; the same transaction for a live store)."""
    reason: str | None = None
    for _, sid in txn.scan("cache", prefix=cache_index_key(cache_key, 0)[:-8], reverse=True):
        raw = txn.get("steps", sid)
        if raw is None:
            continue
        rec = record(raw, "steps")
        if rec["status"] != "completed":
            continue
        if expires_after is not None:
            now = time.time_ns() if now_ns is None else now_ns
            done = rec.get("ended_ts") or rec["ts"]
            if (
                not expires_after
                or done + expires_after // _dt.timedelta(microseconds=1) * 1000 <= now
            ):
                # Older step runs with this key completed earlier still: expired too.
                return CacheLookup(None, reason or EXPIRED)
        outputs: dict[str, dict[str, Any]] | None = {}
        for name, aid in rec["outputs"].items():
            araw = txn.get("artifacts", aid.encode())
            art = None if araw is None else record(araw, "artifacts")
            if art is None or art["deleted"] is not None or not _chunks_present(chunk_txn, art):
                outputs = None
                break
            outputs[name] = art  # type: ignore[index]
        if outputs is not None:
            return CacheLookup(rec, None, outputs)
        reason = GONE
    return CacheLookup(None, reason)


def lookup(
    source: Catalog | HasCatalog, cache_key: str, *, expires_after: _dt.timedelta | None = None
) -> StepRun | None:
    """The step run a step with ``cache_key`` would reuse on ``source`` (a store,
    its catalog or an ``as_of`` view), or None. Chunk presence is always checked
    against the live chunk index (bytes are physical, not historical)."""
    from engine.query.models import StepRun

    catalog = catalog_of(source)
    with catalog._read() as txn:
        live = catalog.chunks.kv
        if live is catalog.kv:
            found = lookup_in(txn, txn, cache_key, expires_after)
        else:
            with live.snapshot() as ctxn:
                found = lookup_in(txn, ctxn, cache_key, expires_after)
    return None if found.record is None else StepRun(catalog, found.record)
