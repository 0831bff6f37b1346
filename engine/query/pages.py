"""Paged, bounded queries for browsing a store: newest runs, artifact names,
a run's events, one file of an artifact.

The list queries of :class:`~engine.query.catalog.Catalog` return everything,
oldest first; a dashboard showing the newest fifty of a million rows needs
the same answers one page at a time, each page costing what it shows, not
what the store holds. Every function here takes a catalog (a ``Store`` or an
``as_of`` view) and only reads.
"""

from __future__ import annotations

from collections import Counter
from typing import IO, TYPE_CHECKING, Any, cast

from engine.errors import ArtifactNotFoundError, InvalidArgumentError
from engine.events import RUN_COMPLETED, RUN_FAILED
from engine.projections.fold import counter, fold
from engine.projections.keys import (
    ALL_RUNS,
    id_after_prefix,
    name_prefix,
    run_index_key,
    tag_prefix,
)
from engine.projections.records import record
from engine.projections.runs import run_step_ids
from engine.query.catalog import HasCatalog, catalog_of
from engine.query.history import HistoricalView
from engine.query.history import seq_at_time as seq_at_time  # beside the paged queries
from engine.query.models import ArtifactVersion, Run
from engine.storage.chunks import ChunkRecord
from engine.storage.kv import MemoryKV
from engine.storage.log import Event, seq_key

if TYPE_CHECKING:
    from engine.query.catalog import Catalog

STEP_STATES = ("completed", "cached", "failed", "skipped", "running")
# Versions of one name are counted up to this many (then COUNT_CAP + 1 means "more").
COUNT_CAP = 1000


def _check_limit(limit: int) -> None:
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise InvalidArgumentError(f"limit must be a positive int, not {limit!r}")


def run_count(source: Catalog | HasCatalog) -> int:
    """How many runs the catalog holds (deleted ones included)."""
    catalog = catalog_of(source)
    with catalog._read() as txn:
        return counter(txn, "runs")


def newest_runs(
    source: Catalog | HasCatalog, limit: int = 50, before: int | None = None
) -> list[Run]:
    """Up to ``limit`` runs (not deleted), newest first, started before event
    ``before`` (None: from the newest)."""
    catalog = catalog_of(source)
    _check_limit(limit)
    stop = None if before is None else run_index_key(None, max(before, 0))
    out: list[Run] = []
    with catalog._read() as txn:
        for _, rid in txn.scan("run_index", None, stop, prefix=ALL_RUNS, reverse=True):
            raw = txn.get("runs", rid)
            if raw is None:
                continue
            rec = record(raw, "runs")
            rec["steps"] = run_step_ids(txn, rec["id"])
            out.append(Run(catalog, rec))
            if len(out) >= limit:
                break
    return out


def step_status_counts(source: Catalog | HasCatalog, run: Run) -> dict[str, int]:
    """How many of the run's step runs are in each state (``STEP_STATES``)."""
    catalog = catalog_of(source)
    counts: Counter[str] = Counter()
    with catalog._read() as txn:
        for sid in run.record()["steps"].values():
            raw = txn.get("steps", sid.encode())
            if raw is not None:
                counts[str(record(raw, "steps")["status"])] += 1
    return {s: counts.get(s, 0) for s in STEP_STATES}


def artifact_names(
    source: Catalog | HasCatalog,
    *,
    contains: str | None = None,
    tag: str | None = None,
    limit: int = 50,
    after: str | None = None,
) -> tuple[list[tuple[ArtifactVersion, int]], str | None]:
    """One page of artifact names in name order, each as (latest live version,
    number of versions): names containing ``contains``, after the name
    ``after``. The count is of versions written (deleted ones included, so
    it costs a key scan, not a decode per version), up to ``COUNT_CAP + 1``
    (meaning more than ``COUNT_CAP``); with ``tag``, only names
    with a live version tagged ``tag``, showing the newest such version and
    counting the tagged ones. Also the name to pass as ``after`` for the next page (None at
    the end)."""
    catalog = catalog_of(source)
    _check_limit(limit)
    out: list[tuple[ArtifactVersion, int]] = []
    with catalog._read() as txn:
        if tag is not None:
            by_name: dict[str, list[dict[str, Any]]] = {}
            for k, _ in txn.scan("tags", prefix=tag_prefix(tag)):
                raw = txn.get("artifacts", id_after_prefix(k).encode())
                if raw is None:
                    continue
                rec = record(raw, "artifacts")
                if rec["deleted"] is None:
                    by_name.setdefault(rec["name"], []).append(rec)
            names = sorted(n for n in by_name if after is None or n > after)
            for name in names:
                if contains and contains not in name:
                    continue
                recs = by_name[name]
                out.append((ArtifactVersion(catalog, max(recs, key=lambda r: r["seq"])), len(recs)))
                if len(out) > limit:
                    break
        else:
            start = None if after is None else after.encode() + b"\x00"
            for key, _ in txn.scan("name_meta", start):
                name = key.decode()
                if contains and contains not in name:
                    continue
                latest: dict[str, Any] | None = None
                written = 0
                for _, aid in txn.scan("names", prefix=name_prefix(name), reverse=True):
                    written += 1
                    if written > COUNT_CAP and latest is not None:
                        break
                    if latest is None:  # decode only until the newest live version
                        raw = txn.get("artifacts", aid)
                        cand = None if raw is None else record(raw, "artifacts")
                        if cand is not None and cand["deleted"] is None:
                            latest = cand
                if latest is not None:
                    out.append((ArtifactVersion(catalog, latest), written))
                    if len(out) > limit:
                        break
    more = len(out) > limit
    out = out[:limit]
    return out, (out[-1][0].name if more and out else None)


def stored_size(source: Catalog | HasCatalog, art: ArtifactVersion) -> int:
    """Bytes the artifact's chunks take on disk (compressed; a chunk shared
    with other artifacts counted in full; chunks collected by gc count 0)."""
    catalog = catalog_of(source)
    seen: set[bytes] = set()
    total = 0
    kv = catalog.chunks.kv
    txn = kv.read()
    try:
        for f in art.record()["files"]:
            for digest in f[3]:
                if digest in seen:
                    continue
                seen.add(digest)
                raw = txn.get("chunks", digest)
                if raw is not None:
                    total += ChunkRecord.unpack(raw).stored_len
    finally:
        kv.end_read(txn)
    return total


def file_sizes(art: ArtifactVersion) -> list[tuple[str, int]]:
    """The artifact's files as (name, logical size), in name order."""
    return sorted((str(f[0]), int(f[1])) for f in art.record()["files"])


def open_file(source: Catalog | HasCatalog, art: ArtifactVersion, name: str) -> IO[bytes]:
    """One of the artifact's own files, read back verified. ``name`` must be
    exactly one of ``art.files``: nothing else can be opened."""
    catalog = catalog_of(source)
    rec = art.record()
    if name not in {f[0] for f in rec["files"]}:
        raise ArtifactNotFoundError(
            f"artifact {art.name}:{art.version} has no file {name!r}; files: "
            + ", ".join(art.files[:20])
        )
    if rec["deleted"] is not None:
        raise ArtifactNotFoundError(f"artifact {art.name}:{art.version} was deleted")
    return catalog._files(rec).open_read(name)


def run_events(source: Catalog | HasCatalog, run: Run, *, scan: int = 20000) -> list[Event]:
    """The events of one run (its own, its step runs' and its artifacts'), in
    order: read forward from the run's first event until it ended, at most
    ``scan`` events (runs interleaved with many others may be cut short)."""
    catalog = catalog_of(source)
    rid = run.id
    sids = set(run.record()["steps"].values())
    out: list[Event] = []
    pos, end, window = run.seq, run.seq + scan, 64
    while pos < end:  # growing windows: a short run costs a short read
        stop = min(end, pos + window)
        batch = list(catalog.events(pos, stop))
        for e in batch:
            d = e.data
            if e.type.startswith("run.") and d.get("id") == rid:
                out.append(e)
                if e.type in (RUN_COMPLETED, RUN_FAILED):
                    return out
            elif d.get("run") == rid or d.get("id") in sids:
                out.append(e)
        if len(batch) < stop - pos:
            break
        pos, window = stop, min(window * 2, 4096)
    return out


def newest_events(
    source: Catalog | HasCatalog, limit: int = 100, before: int | None = None
) -> list[Event]:
    """Up to ``limit`` events, newest first, with ``seq < before`` (None: all)."""
    catalog = catalog_of(source)
    _check_limit(limit)
    stop = catalog.head + 1 if before is None else min(before, catalog.head + 1)
    start = max(1, stop - limit)
    return list(reversed(list(catalog.events(start, stop))))


def advance(view: HistoricalView, seq: int) -> HistoricalView:
    """The store as of a later event ``seq``, built from ``view`` (left as it
    was): a copy of its projections with only the events after it folded in.
    The same catalog ``store.as_of(seq)`` folds from the start of the log, at
    the cost of a copy plus the difference instead of the whole prefix."""
    store = view.store
    head = store.head
    if not view.seq <= seq <= head:
        raise InvalidArgumentError(
            f"advance({seq}): a view as of event {view.seq} moves forward to at most {head}"
        )
    if view.indexed:  # the temporal index answers at any point: nothing to fold
        return store.as_of(seq)
    src = cast(MemoryKV, view.kv)  # a view of a store without the index folded the log
    kv = src.copy()
    w = kv.unsafe_writer()
    with store.ledger.kv.snapshot() as txn:
        fold(w, store.ledger.log.read(txn, view.seq + 1, seq + 1))
    if seq:
        w.put("meta", b"head_seq", seq_key(seq))
    return HistoricalView(store, seq, kv)
