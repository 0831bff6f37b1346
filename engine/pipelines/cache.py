"""Cache lookups: is there a stored step run this step can reuse?

A hit needs a **completed** step run with the same cache key (the ``cache``
projection, newest first) such that

- none of its output artifact versions is deleted,
- every chunk of their files is still in the chunk index (``gc`` may have
  collected the bytes of a version deleted and then resurrected by nobody:
  a hit never points at data that cannot be loaded),
- it is not expired: ``cache_expires_after`` counts from the time the step
  run completed, and ``timedelta(0)`` means always expired,
- every artifact the step loaded while it ran (``load_artifact`` inside the
  step) would load the same content now: a load of what was then the newest
  version of its name needs the newest version to have the same content
  hash, and each tag the loaded version had must still lead to that content
  (:func:`stale_load`),
- (runner lookups) each output whose materializer was not given explicitly
  was saved by the materializer the registry would choose for its type now:
  registering a materializer for a type that fell back to cloudpickle, or
  bumping a materializer's ``VERSION``, makes the step run again.

A lookup is a handful of point reads in one read snapshot: a reverse prefix
scan of ``cache``, one ``steps`` get, one ``artifacts`` get per output and one
``chunks`` get per chunk. Nothing scans.
"""

from __future__ import annotations

import datetime as _dt
import inspect
import sys
import time
from collections.abc import Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engine.projections.keys import cache_prefix, name_prefix, tag_prefix
from engine.projections.records import record
from engine.query.catalog import HasCatalog, catalog_of
from engine.query.models import StepRun
from engine.storage.kv import Txn

if TYPE_CHECKING:
    from engine.query.catalog import Catalog

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


def _artifact(txn: Txn, aid: str) -> dict[str, Any] | None:
    raw = txn.get("artifacts", aid.encode())
    return None if raw is None else record(raw, "artifacts")


def _newest(txn: Txn, name: str, tag: str | None) -> dict[str, Any] | None:
    """The newest live version of ``name`` (carrying ``tag``, when given)."""
    if tag is None:
        for _, aid in txn.scan("names", prefix=name_prefix(name), reverse=True):
            art = _artifact(txn, aid.decode())
            if art is not None and art["deleted"] is None:
                return art
        return None
    best: dict[str, Any] | None = None
    prefix = tag_prefix(tag)
    for key, _ in txn.scan("tags", prefix=prefix):
        art = _artifact(txn, key[len(prefix) :].decode())
        live = art is not None and art["name"] == name and art["deleted"] is None
        if live and (best is None or art["seq"] > best["seq"]):  # type: ignore[index]
            best = art
    return best


def stale_load(txn: Txn, key: str, aid: str, flags: dict[str, Any]) -> str | None:
    """Why loading what the step loaded as input ``key`` (artifact ``aid``) would
    now give other content, or None when it would not."""
    art = _artifact(txn, aid)
    if art is None or art["deleted"] is not None:
        return f"loaded artifact {key}: deleted"
    name, was = art["name"], f"{art['name']}:{art['version']}"
    if flags.get("latest"):
        newest = _newest(txn, name, None)
        if newest is not None and newest["content_hash"] != art["content_hash"]:
            return f"loaded artifact {key}: {was} -> {name}:{newest['version']}"
    tags = flags.get("tags")
    for tag in tags if isinstance(tags, list) else ():
        if not isinstance(tag, str):
            continue
        tagged = _newest(txn, name, tag)
        if tagged is None or tagged["content_hash"] != art["content_hash"]:
            now = "no version" if tagged is None else f"{name}:{tagged['version']}"
            return f"loaded artifact {key}: tag {tag} {was} -> {now}"
    return None


def _known_type(topic: str) -> type | None:
    """The class named ``topic`` if its module is imported (nothing is imported)."""
    module, _, qualname = topic.partition(":")
    obj: Any = sys.modules.get(module)
    if obj is None:
        return None
    try:
        for part in qualname.split("."):
            obj = inspect.getattr_static(obj, part)
    except AttributeError:
        return None
    return obj if isinstance(obj, type) else None


def materializer_change(art: dict[str, Any]) -> str | None:
    """``"old -> new"`` when the registry would now save ``art``'s data type with
    another materializer (or another ``VERSION``) than the one that saved it."""
    from materializers import registry

    if art.get("untrusted"):
        return None
    data_type = _known_type(str(art["data_type"]))
    if data_type is None:
        return None
    try:
        cls = registry.find(data_type)
    except Exception:  # a broken can_handle_type: the save will say so if the step runs
        return None
    if cls is None:  # falls back, or chosen by value (a state dict): nothing better now
        return None
    old = f"{art['materializer']}@{art['materializer_version']}"
    new = f"{registry.identity(cls)}@{int(getattr(cls, 'VERSION', 1))}"
    return None if old == new else f"{old} -> {new}"


def _refusal(
    txn: Txn, rec: dict[str, Any], outputs: dict[str, Any], check: Collection[str] | None
) -> str | None:
    for key, flags in (rec.get("loaded") or {}).items():
        aid = rec["inputs"].get(key)
        if not isinstance(aid, str) or not isinstance(flags, dict):
            continue
        why = stale_load(txn, key, aid, flags)
        if why is not None:
            return why
    for name in check or ():
        art = outputs.get(name)
        change = None if art is None else materializer_change(art)
        if change is not None:
            return f"output {name}: materializer changed ({change})"
    return None


def lookup_in(
    txn: Txn,
    chunk_txn: Txn,
    cache_key: str,
    expires_after: _dt.timedelta | None,
    now_ns: int | None = None,
    check_materializers: Collection[str] | None = None,
) -> CacheLookup:
    """Look ``cache_key`` up in ``txn`` (projections), checking chunks in ``chunk_txn``
    (the live chunk index; the same transaction for a live store), and for the
    outputs named in ``check_materializers`` that the registry would still choose
    the materializer that saved them."""
    reason: str | None = None
    for _, sid in txn.scan("cache", prefix=cache_prefix(cache_key), reverse=True):
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
        if outputs is None:
            reason = GONE
            continue
        refused = _refusal(txn, rec, outputs, check_materializers)
        if refused is None:
            return CacheLookup(rec, None, outputs)
        reason = reason or refused
    return CacheLookup(None, reason)


def lookup(
    source: Catalog | HasCatalog, cache_key: str, *, expires_after: _dt.timedelta | None = None
) -> StepRun | None:
    """The step run a step with ``cache_key`` would reuse on ``source`` (a store,
    its catalog or an ``as_of`` view), or None. Chunk presence is always checked
    against the live chunk index (bytes are physical, not historical)."""
    catalog = catalog_of(source)
    with catalog._read() as txn:
        live = catalog.chunks.kv
        if live is catalog.kv:
            found = lookup_in(txn, txn, cache_key, expires_after)
        else:
            with live.snapshot() as ctxn:
                found = lookup_in(txn, ctxn, cache_key, expires_after)
    return None if found.record is None else StepRun(catalog, found.record)
