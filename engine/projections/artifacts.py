"""Projections: what you can query, folded from the event log.

:func:`apply` is the one pure function that folds an event into the
projection databases. The live append path calls it in the same transaction
as the append; ``Store.rebuild`` and ``Store.as_of`` call it over the whole
log. Folding the same events must give byte-identical projections.

Databases (all keys bytes, values msgpack):

- ``artifacts``: artifact id -> artifact record
- ``names``: name NUL seq -> id (creation order per name)
- ``versions``: name NUL packed(version) -> id
- ``name_meta``: name -> next integer version (8 bytes, big-endian)
- ``tags``: tag NUL id -> b""
- ``content``: content hash (16 bytes) id -> b""
- ``counters``: name -> integer (deleted_artifacts, logical_bytes, runs ...);
  live artifacts = entries of ``artifacts`` - deleted_artifacts
- run and step databases: see ``engine.projections.runs``.
"""

from __future__ import annotations

from engine.events import (
    ARTIFACT_DELETED,
    ARTIFACT_TAGGED,
    ARTIFACT_TRUSTED,
    ARTIFACT_UNTAGGED,
    ARTIFACT_WRITTEN,
    GC_COMPLETED,
    METADATA_LOGGED,
)
from engine.projections.fold import bump, get_record, handles, next_version, put_record
from engine.projections.keys import content_key, name_key, tag_key, u64, version_key
from engine.storage.kv import Txn
from engine.storage.log import Event

# -- artifacts -----------------------------------------------------------------


@handles(ARTIFACT_WRITTEN)
def _artifact_written(txn: Txn, e: Event) -> None:
    d = e.data
    aid = d["id"]
    rec = dict(d)
    rec["seq"] = e.seq
    rec["ts"] = e.ts
    rec["tags"] = sorted(set(d.get("tags") or ()))
    rec["user_metadata"] = dict(d.get("user_metadata") or {})
    rec["deleted"] = None
    put_record(txn, "artifacts", aid, rec)
    name, version = d["name"], d["version"]
    txn.put("names", name_key(name, e.seq), aid.encode())
    txn.put("versions", version_key(name, version), aid.encode())
    nxt = next_version(txn, name)
    if isinstance(version, int) and version >= nxt:
        nxt = version + 1
    txn.put("name_meta", name.encode(), u64(nxt))
    for tag in rec["tags"]:
        txn.put("tags", tag_key(tag, aid), b"")
    txn.put("content", content_key(d["content_hash"], aid), b"")
    bump(txn, "logical_bytes", int(d.get("size", 0)))


@handles(ARTIFACT_TAGGED, ARTIFACT_UNTAGGED)
def _artifact_tags(txn: Txn, e: Event) -> None:
    aid = e.data["id"]
    rec = get_record(txn, "artifacts", aid)
    if rec is None:
        return
    tags = set(rec["tags"])
    for tag in e.data["tags"]:
        if e.type == ARTIFACT_TAGGED:
            tags.add(tag)
            txn.put("tags", tag_key(tag, aid), b"")
        else:
            tags.discard(tag)
            txn.delete("tags", tag_key(tag, aid))
    rec["tags"] = sorted(tags)
    put_record(txn, "artifacts", aid, rec)


@handles(METADATA_LOGGED)
def _metadata_logged(txn: Txn, e: Event) -> None:
    aid = e.data["id"]
    rec = get_record(txn, "artifacts", aid)
    if rec is None:
        return
    rec["user_metadata"].update(e.data["metadata"])
    put_record(txn, "artifacts", aid, rec)


@handles(ARTIFACT_TRUSTED)
def _artifact_trusted(txn: Txn, e: Event) -> None:
    """An imported version vouched for here: its pickles signed again with this
    store's secret (the new ``state``). A trust event that came in with an
    import (``foreign``) was made under another store's secret: it trusts nothing."""
    if e.data.get("foreign"):
        return
    rec = get_record(txn, "artifacts", e.data["id"])
    if rec is None:
        return
    rec["state"] = e.data["state"]
    rec.pop("untrusted", None)
    put_record(txn, "artifacts", rec["id"], rec)


@handles(ARTIFACT_DELETED)
def _artifact_deleted(txn: Txn, e: Event) -> None:
    aid = e.data["id"]
    rec = get_record(txn, "artifacts", aid)
    if rec is None or rec["deleted"] is not None:
        return
    rec["deleted"] = e.seq
    put_record(txn, "artifacts", aid, rec)
    for tag in rec["tags"]:
        txn.delete("tags", tag_key(tag, aid))
    txn.delete("content", content_key(rec["content_hash"], aid))
    bump(txn, "deleted_artifacts", 1)
    bump(txn, "logical_bytes", -int(rec.get("size", 0)))


@handles(GC_COMPLETED)
def _gc_completed(txn: Txn, e: Event) -> None:
    bump(txn, "gc_runs", 1)
