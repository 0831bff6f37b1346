"""verify (fsck) and gc.

**verify** walks the hash chain, re-reads and re-hashes every chunk, checks
every live manifest against the chunk index, compares the projections with a
fresh fold of the log, and checks pack files against the index. Every
problem names what is damaged: an event seq, a chunk and the artifacts that
use it, a pack segment.

**gc** has one liveness rule: a chunk lives while a non-deleted artifact
version references it. Dead index entries are dropped in one transaction
that also appends ``gc.completed``; pack segments that are mostly dead are
rewritten; files are deleted only after the index commit that dropped them.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from engine import failpoints
from engine.errors import ArtledgerError, IntegrityError
from engine.events import GC_COMPLETED
from engine.ledger.core import add_stored_bytes, read_container_state
from engine.projections import PROJECTION_DBS, STORE_DATABASES, fold
from engine.projections.records import DECODE_ERRORS, damage_boundary, manifests, record
from engine.projections.schema import LIVE_DBS
from engine.projections.temporal import TEMPORAL_META
from engine.storage.blobs import BlobStore, Location
from engine.storage.chunks import ChunkRecord
from engine.storage.kv import MemoryKV, Txn

if TYPE_CHECKING:
    from engine.store import Store

Progress = Callable[[str, int, int], None]
_RECORD_DAMAGE: tuple[type[Exception], ...] = (IntegrityError, *DECODE_ERRORS)
COMPACT_BELOW = 0.5
COMPACT_HEADROOM = 1 << 20  # room kept free for the ledger while rewriting segments


@dataclass
class VerifyReport:
    """What ``store.verify()`` found: ``ok`` when ``problems`` is empty."""

    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    checked: dict[str, int] = field(default_factory=dict)
    fixed: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class GcReport:
    """What ``store.gc()`` reclaimed (or, with ``dry_run``, would reclaim)."""

    dry_run: bool
    chunks_reclaimed: int = 0
    bytes_reclaimed: int = 0
    chunks_kept: int = 0
    bytes_kept: int = 0
    segments_deleted: int = 0
    segments_compacted: int = 0
    objects_deleted: int = 0
    why_kept: dict[str, list[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _live_refs(txn: Txn) -> dict[bytes, list[str]]:
    """digest -> labels of the live artifact versions that reference it."""
    refs: dict[bytes, list[str]] = defaultdict(list)
    for _, raw in txn.scan("artifacts"):
        rec = record(raw, "artifacts")
        if rec["deleted"] is not None:
            continue
        label = f"{rec['name']}:{rec['version']}"
        files = manifests(rec)
        for f in files:
            for d in f[3]:
                refs[d].append(label)
    return refs


def _refs(txn: Txn, report: VerifyReport) -> tuple[dict[bytes, list[str]], dict[bytes, list[str]]]:
    """digest -> labels of every artifact version that references it, and of
    the live ones; a damaged artifact record is a problem, and skipped."""
    refs: dict[bytes, list[str]] = defaultdict(list)
    live: dict[bytes, list[str]] = defaultdict(list)
    for key, raw in txn.scan("artifacts"):
        try:
            rec = record(raw, "artifacts")
            label = f"artifact {rec['name']}:{rec['version']} (id {rec['id']})"
            files = manifests(rec)
            digests = [d for f in files for d in f[3]]
        except _RECORD_DAMAGE as e:
            report.problems.append(
                f"artifact record {key!r} is damaged ({e}); `artledger replay --rebuild` "
                "refolds it from the log"
            )
            continue
        for d in digests:
            refs[d].append(label)
            if rec["deleted"] is None:
                live[d].append(label)
    return refs, live


def verify_isolated(
    store: Store, *, progress: Progress | None = None, fix: bool = False, isolate: bool = False
) -> VerifyReport:
    """:func:`verify`, after (with ``isolate``, for an on-disk store) reading
    every record of the ledger in a child process first, stopping there if
    that kills it."""
    if isolate and store.path is not None:
        from engine.ops.salvage import walk_ledger

        problems = walk_ledger(store.path / "ledger" / "data.mdb")
        if problems:
            return VerifyReport(
                problems=[
                    *problems,
                    "the ledger was not checked further in this process (reading it would "
                    "kill it); `artledger recover` rebuilds the ledger",
                ]
            )
    return verify(store, progress=progress, fix=fix)


def verify(store: Store, *, progress: Progress | None = None, fix: bool = False) -> VerifyReport:
    """Every check, stage by stage: a stage that meets damage it cannot read
    past (a damaged page of the ledger, a record that does not decode) is a
    problem line, and the next stage still runs. Never raises for damage."""
    report = VerifyReport()
    try:
        store.flush()
    except ArtledgerError as e:
        report.problems.append(f"deferred events could not be committed: {e}")
    kv = store.ledger.kv
    where = f"the ledger at {getattr(kv, 'path', 'memory')}"

    def stage(what: str, fn: Callable[[Txn], None]) -> None:
        with contextlib.ExitStack() as stack:
            try:
                txn = stack.enter_context(kv.snapshot())
            except ArtledgerError as e:
                report.problems.append(f"verify could not {what}: {e}")
                return
            try:
                with damage_boundary(where):
                    fn(txn)
            except (ArtledgerError, OSError) as e:
                report.problems.append(f"verify could not finish {what}: {e}")

    refs: dict[bytes, list[str]] = {}
    live: dict[bytes, list[str]] = {}

    def events(txn: Txn) -> None:
        head = store.ledger.log.head(txn)
        report.checked["events"] = head
        report.problems.extend(
            store.ledger.log.verify(
                txn, None if progress is None else (lambda n: progress("events", n, head))
            )
        )

    def shared(txn: Txn) -> None:
        report.problems.extend(store.ledger.verify_shared())

    def artifacts(txn: Txn) -> None:
        got, got_live = _refs(txn, report)
        refs.update(got)
        live.update(got_live)

    def manifests(txn: Txn) -> None:
        for digest, labels in live.items():
            if txn.get("chunks", digest) is None:
                report.problems.append(
                    f"chunk {digest.hex()} is missing from the index; needed by {', '.join(labels)}"
                )

    def chunks(txn: Txn) -> None:
        # Every chunk re-read and re-hashed; packs checked against the index.
        total = txn.count("chunks")
        n = 0
        for digest, raw in txn.scan("chunks"):
            n += 1
            report.checked["chunks"] = n
            who = ", ".join(refs.get(digest, ["no artifact"]))
            try:
                rec = ChunkRecord.unpack(raw)
            except Exception:
                report.problems.append(f"chunk {digest.hex()}: index record is damaged ({who})")
                continue
            if rec.loc is not None:
                try:
                    problem = store.ledger.blobs.check(rec.loc, digest, rec.codec, rec.raw_len)
                except ArtledgerError as e:
                    report.problems.append(f"chunk {digest.hex()} ({who}): {e}")
                    continue
                if problem is not None:
                    report.problems.append(f"{problem} ({who})")
            try:
                buf = bytearray(rec.raw_len)
                store.ledger.chunks.decode_into(digest, rec, memoryview(buf), who)
            except ArtledgerError as e:
                report.problems.append(str(e))
            if progress is not None and n % 64 == 0:
                progress("chunks", n, total)
        report.checked["chunks"] = n

    def packs(txn: Txn) -> None:
        # The blob store's containers (pack files) against the recorded state.
        state = read_container_state(txn)

        def referenced(name: str) -> bool:
            for _, v in txn.scan("chunks"):
                loc = ChunkRecord.unpack(v).loc
                if loc is not None and loc.container == name:
                    return True
            return False

        found = store.ledger.blobs.check_containers(state, referenced)
        if found is not None:
            report.problems += found.problems
            report.notes += found.notes
            report.checked["segments"] = found.checked

    def projections(txn: Txn) -> None:
        # Projections against a fresh fold.
        fresh = MemoryKV(STORE_DATABASES)
        w = fresh.unsafe_writer()
        fold(w, store.ledger.log.read(txn))
        # A store whose projections predate the temporal index has none to compare.
        indexed = txn.get("meta", TEMPORAL_META) is not None
        for db in PROJECTION_DBS if indexed else LIVE_DBS:
            try:
                live_items = list(txn.scan(db))
            except ArtledgerError as e:
                report.problems.append(f"projection {db!r} cannot be read: {e}")
                continue
            fresh_items = list(w.scan(db))
            if live_items != fresh_items:
                report.problems.append(
                    f"projection {db!r} differs from a fresh fold of the log "
                    "(`artledger replay --rebuild` or `verify --fix` rebuilds it)"
                )

    stage("walk the event log", events)
    stage("compare the replica with the shared log", shared)
    stage("read the artifact records", artifacts)
    stage("check manifests against the chunk index", manifests)
    stage("re-read every chunk", chunks)
    stage("check the pack files", packs)
    stage("compare the projections with a fresh fold of the log", projections)
    if store.ledger.secret_problem:
        report.problems.append(store.ledger.secret_problem)
    if store.ledger.identity_problem:
        report.problems.append(store.ledger.identity_problem)
    if fix:
        if any(p.startswith("projection") for p in report.problems):
            try:
                store.rebuild()
                report.fixed.append("projections rebuilt from the log")
            except ArtledgerError as e:
                report.problems.append(f"the projections could not be rebuilt: {e}")
        report.fixed += store.ledger.recover_blobs()
    return report


def _classify(txn: Txn, report: GcReport, explain: bool) -> list[tuple[bytes, ChunkRecord]]:
    """Count kept and reclaimable chunks into ``report``; the dead ones."""
    report.why_kept.clear()
    report.chunks_reclaimed = report.bytes_reclaimed = 0
    report.chunks_kept = report.bytes_kept = 0
    live = _live_refs(txn)
    dead: list[tuple[bytes, ChunkRecord]] = []
    for digest, raw in txn.scan("chunks"):
        rec = ChunkRecord.unpack(raw)
        if digest in live:
            report.chunks_kept += 1
            report.bytes_kept += rec.stored_len
            if explain:
                report.why_kept[digest.hex()] = sorted(set(live[digest]))
        else:
            dead.append((digest, rec))
            report.chunks_reclaimed += 1
            report.bytes_reclaimed += rec.stored_len
    return dead


def gc(
    store: Store, *, dry_run: bool = False, explain: bool = False, grace: float = 3600.0
) -> GcReport:
    report = GcReport(dry_run=dry_run)
    store.flush()
    if dry_run:
        with store.ledger.kv.snapshot() as txn:
            _classify(txn, report, explain)
        return report

    dead_locs: list[Location] = []

    def sweep(txn: Txn) -> list[tuple[str, dict[str, Any]]]:
        dead = _classify(txn, report, explain)
        dead_locs[:] = [rec.loc for _, rec in dead if rec.loc is not None]
        store.ledger.forget_chunks(txn, [digest for digest, _ in dead])
        add_stored_bytes(txn, -report.bytes_reclaimed)
        return [
            (
                GC_COMPLETED,
                {"chunks": report.chunks_reclaimed, "bytes": report.bytes_reclaimed},
            )
        ]

    store.ledger.commit(sweep)
    failpoints.hit("gc.after_index_commit")
    blobs = store.ledger.blobs
    report.objects_deleted = store.ledger.delete_blobs(dead_locs, grace)
    if blobs.supports_compaction:
        blobs.seal()
        _compact(store, blobs, report)
    return report


def _pack_layout(
    txn: Txn,
) -> tuple[dict[str, int], dict[str, int], dict[str, list[tuple[bytes, ChunkRecord]]]]:
    """(committed end, live payload bytes, chunks) of every pack segment."""
    ends = read_container_state(txn)
    live_bytes: dict[str, int] = defaultdict(int)
    members: dict[str, list[tuple[bytes, ChunkRecord]]] = defaultdict(list)
    for digest, raw in txn.scan("chunks"):
        rec = ChunkRecord.unpack(raw)
        if rec.loc is not None:
            live_bytes[rec.loc.container] += rec.loc.length
            members[rec.loc.container].append((digest, rec))
    return ends, live_bytes, members


def _worth_compacting(name: str, ends: dict[str, int], live_bytes: dict[str, int]) -> bool:
    end = ends.get(name, 0)
    return end > 0 and live_bytes.get(name, 0) < COMPACT_BELOW * end


def _compact(store: Store, blobs: BlobStore, report: GcReport) -> None:
    """Rewrite mostly-dead segments, delete dead and orphaned ones.

    Candidates come from a snapshot; each is then locked (a segment a live
    writer holds is skipped) and its end and members are read again in a
    fresh transaction, so chunks committed after the snapshot are never left
    behind. Segments with no live chunk go first (they need no room); the
    rest are rewritten only when the disk has room for their live bytes.
    Files are deleted only after the index commit that stopped using them."""
    with store.catalog._read() as txn:
        ends, live_bytes, _ = _pack_layout(txn)
    candidates = [n for n in ends if _worth_compacting(n, ends, live_bytes)]
    candidates += [n for n in blobs.containers() if n not in ends]  # orphans
    if not candidates:
        return
    with blobs.claimed(candidates) as held:
        if not held:
            return
        with store.catalog._read() as txn:
            ends, live_bytes, members = _pack_layout(txn)
        orphans = [n for n in held if n not in ends]
        victims = [n for n in held if _worth_compacting(n, ends, live_bytes)]
        empty = [n for n in victims if not members.get(n)]
        full = [n for n in victims if members.get(n)]
        if empty or orphans:
            store.ledger.commit(_forget_segments(empty))
            failpoints.hit("gc.before_delete_files")
            for name in empty + orphans:
                blobs.delete_container(name)
            report.segments_deleted += len(empty) + len(orphans)
        if not full:
            return
        need = sum(rec.stored_len + 64 for n in full for _, rec in members[n])
        room = blobs.free_space()
        if room is not None and room[1] < need + COMPACT_HEADROOM:
            where, free = room
            report.notes.append(
                f"{len(full)} mostly-dead pack segment{'s' if len(full) > 1 else ''} not "
                "rewritten: that needs "
                f"{need + COMPACT_HEADROOM} bytes free on the device holding {where}, "
                f"which has {free}; free some space and run gc again"
            )
            return
        failpoints.hit("gc.before_compact_copy")
        moved: dict[bytes, Location] = {}
        copies = store.ledger.chunks.session()
        for name in full:
            for digest, rec in members[name]:
                assert rec.loc is not None  # members are chunks with a location
                moved[digest] = copies.relocate(digest, rec, blobs.get(rec.loc))

        def relink(txn: Txn) -> list[tuple[str, dict[str, Any]]]:
            for digest, loc in moved.items():
                raw = txn.get("chunks", digest)
                if raw is None:
                    continue
                rec = ChunkRecord.unpack(raw)
                if rec.loc is not None and rec.loc.container in full:
                    rec.loc = loc
                    txn.put("chunks", digest, rec.pack())
            return _forget_segments(full)(txn)

        store.ledger.commit(relink, [copies])
        failpoints.hit("gc.before_delete_files")
        for name in full:
            blobs.delete_container(name)
        report.segments_compacted += len(full)
    blobs.cleanup(older_than=600)


def _forget_segments(names: list[str]) -> Callable[[Txn], list[tuple[str, dict[str, Any]]]]:
    def fn(txn: Txn) -> list[tuple[str, dict[str, Any]]]:
        for name in names:
            txn.delete("segments", name.encode())
        return []

    return fn
