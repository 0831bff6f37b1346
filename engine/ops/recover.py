"""``Store.recover``: rebuild a lost or damaged ledger from what is left.

What is left of a store whose ledger (``ledger/data.mdb``) was deleted,
emptied, truncated or damaged:

- **events that still read**: the damaged data file is read in a child
  process (``engine.ops.salvage``), so a SIGBUS, SIGSEGV or SIGABRT inside LMDB
  kills only the child; a truncated file is read from a copy padded with
  zeros to the size its meta page expects, a file with one damaged meta page
  from a copy where the good one stands in for it. The events kept are
  1..k: gapless, each decoding, and each vouched for by the hash chain (the
  next event's ``prev``, or the head hash for the last one). Or, with
  ``from_export``, the events of an ``artledger export`` stream, imported
  with the ordinary import machinery;
- **chunks**: every pack segment is scanned record by record (header magic,
  digest, codec, lengths), each payload decoded and re-hashed with the
  store's seed, and the valid ones re-indexed by digest. Chunks of at most
  2 KiB live only in the ledger's chunk index: they come from the old index
  records that still read, each checked against its digest;
- **identity**: the seed and store id from ``<store>/identity`` (or the old
  ledger's meta records): without the seed no chunk can be re-indexed.

The old ledger is moved aside (``ledger.damaged-<time>``) and kept; the new
one is built beside it and renamed into place when complete, so a recovery
that dies half-way leaves the store refused (never half-recovered), and
running it again starts from the kept copy. Nothing is deleted.

This module runs the recovery; :mod:`engine.ops.recover_events` salvages the
events and checks their chain, :mod:`engine.ops.recover_packs` re-indexes the
chunks.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import shutil
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from engine.errors import ArtledgerError, IntegrityError, StoreError
from engine.events import STORE_CREATED
from engine.ledger.layout import (
    Identity,
    directory_lock,
    fsync_dir,
    read_identity,
    write_identity,
)
from engine.ops.recover_events import Chain, check_chain, salvage_ledger
from engine.ops.recover_packs import Packs, inline_chunks, pick_seed, scan_packs
from engine.projections import STORE_DATABASES, fold
from engine.projections.records import manifests
from engine.projections.temporal import TEMPORAL_META
from engine.storage.blobs import PackBlobStore
from engine.storage.chunks import ChunkRecord
from engine.storage.kv import LmdbKV, Txn, is_open_here
from engine.storage.lmdb_readers import FLOCK
from engine.storage.log import GENESIS, Event, chain, decode, key_seq, seq_key

if TYPE_CHECKING:
    from engine.store import Store

Progress = Callable[[str, int, int], None]
_Q = struct.Struct(">Q")


@dataclass
class RecoverReport:
    """What ``Store.recover`` did. ``missing`` lists live artifact versions
    (``name:version``) that lost chunks; ``problems`` is what ``verify``
    says about the recovered store."""

    path: Path
    moved_to: Path | None = None
    events_source: str = "ledger"
    events_salvaged: int = 0
    events_in_old_log: int | None = None
    stopped_at: int | None = None
    stop_reason: str | None = None
    events_imported: int = 0
    chunks_reindexed: int = 0
    inline_chunks: int = 0
    segments: int = 0
    damaged_pack_records: int = 0
    missing: list[str] = field(default_factory=list)
    unreferenced_chunks: int = 0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """Whether everything the store referenced is back and verify is clean."""
        return not self.missing and not self.problems and self.stopped_at is None


# -- the whole recovery ------------------------------------------------------------------


def _stamp() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())


def _refuse_in_use(root: Path, ledger: Path) -> None:
    if is_open_here(ledger):
        raise StoreError(
            f"the store at {root} is open in this process; close it before recovering it"
        )
    lock = ledger / "lock.mdb"
    if not ledger.is_dir() or not lock.exists():
        return
    fd = os.open(lock, os.O_RDONLY)
    try:
        # Every process with the ledger open holds a shared lock on byte 0.
        req = FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, 0, 1, 0)
        l_type, _, _, _, pid = FLOCK.unpack(fcntl.fcntl(fd, fcntl.F_GETLK, req))
    finally:
        os.close(fd)
    if l_type != fcntl.F_UNLCK:
        raise StoreError(
            f"the store at {root} is open in another process (pid {pid}); close every "
            "process using it, then run recover again"
        )


def _source(root: Path) -> tuple[Path | None, Path | None]:
    """(the data file to salvage from, the ledger path to move aside)."""
    ledger = root / "ledger"
    if ledger.is_dir():
        return ledger / "data.mdb", ledger
    if ledger.exists():  # a file where the ledger directory should be
        return ledger, ledger
    kept = sorted(p for p in root.glob("ledger.damaged-*") if (p / "data.mdb").exists())
    return (kept[-1] / "data.mdb" if kept else None), None


def _identity(root: Path, meta: dict[bytes, bytes], report: RecoverReport) -> tuple[Identity, bool]:
    """The store's identity, and whether its seed is known."""
    found = read_identity(root)
    seeds: list[int] = []
    raw_seed = meta.get(b"seed")
    if raw_seed is not None and len(raw_seed) == 8:
        seeds.append(_Q.unpack(raw_seed)[0])
    if found is not None and found.seed not in seeds:
        seeds.append(found.seed)
    seed = pick_seed(seeds, root / "packs")
    store_id = None
    with contextlib.suppress(UnicodeDecodeError):
        raw_id = meta.get(b"store_id")
        store_id = raw_id.decode() if raw_id else None
    store_id = store_id or (found.store_id if found else None)
    fp = meta.get(b"secret_fp") or (found.secret_fp if found else None)
    if seed is None:
        report.notes.append(
            f"the store's seed is unknown (no {root / 'identity'} and the old ledger's meta "
            "does not read): no chunk in the pack files can be re-indexed; they are kept. "
            "Restore the identity file from a backup and run recover again"
        )
    if store_id is None:
        store_id = secrets.token_hex(8)
        report.notes.append(f"the store id is unknown: the recovered store is {store_id}")
    return Identity(store_id, seed if seed is not None else secrets.randbits(63), fp), (
        seed is not None
    )


def recover(
    cls: type[Store],
    root: Path,
    *,
    from_export: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
) -> RecoverReport:
    """See :meth:`engine.store.Store.recover`."""
    t0 = time.perf_counter()
    if not root.is_dir():
        raise StoreError(f"no store at {root}: nothing to recover")
    export = Path(from_export) if from_export is not None else None
    if export is not None and not export.is_file():
        raise StoreError(f"cannot recover from {export}: no such export file")
    report = RecoverReport(root)
    if export is not None:
        report.events_source = f"export {export}"
    stamp = _stamp()
    with directory_lock(root):
        _refuse_in_use(root, root / "ledger")
        stale = sorted(root.glob(".ledger-recovering-*"))
        if stale:
            report.notes.append(
                f"left from an earlier recovery that did not finish (not used): "
                f"{', '.join(p.name for p in stale)}"
            )
        data, aside = _source(root)
        scratch = root / f".recover-{stamp}-{secrets.token_hex(4)}"
        scratch.mkdir(mode=0o700)
        try:
            salvage = salvage_ledger(data, scratch, progress)
            report.notes += salvage.notes
            ident, seed_known = _identity(root, salvage.meta, report)
            packs = scan_packs(root / "packs", ident.seed if seed_known else None, progress)
            report.notes += packs.notes
            inline = inline_chunks(salvage.chunks, ident.seed) if seed_known else {}
            chain_ = Chain() if export is not None else check_chain(salvage)
            head_raw = salvage.meta.get(b"head_seq")
            if head_raw is not None and len(head_raw) == 8:
                report.events_in_old_log = key_seq(head_raw)
            new_dir = root / f".ledger-recovering-{stamp}-{secrets.token_hex(4)}"
            chunk_size = max(64 << 10, packs.max_raw or 4 << 20)
            try:
                _build(root, new_dir, ident, chain_, packs, inline, report)
                if export is not None:
                    _import(cls, root, new_dir, export, chunk_size, report, progress)
            except BaseException:
                shutil.rmtree(new_dir, ignore_errors=True)  # our own half-built ledger
                raise
            report.moved_to = _swap(root, aside, new_dir, stamp)
            write_identity(root, ident)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    _check(cls, root, report)
    report.seconds = time.perf_counter() - t0
    return report


class _FoldError(Exception):
    def __init__(self, seq: int, error: IntegrityError) -> None:
        super().__init__(seq)
        self.seq = seq
        self.error = error


def _build(
    root: Path,
    new_dir: Path,
    ident: Identity,
    chain_: Chain,
    packs: Packs,
    inline: dict[bytes, ChunkRecord],
    report: RecoverReport,
) -> None:
    """Write the new ledger: identity, chunk index, segment ends, the salvaged
    events and their projections, in one transaction."""
    from engine.ledger.core import FORMAT_VERSION
    from engine.ledger.secret import fingerprint as _fingerprint

    index = dict(inline)
    index.update(packs.index)
    secret = root / "secret"
    fp = ident.secret_fp
    if fp is None and secret.exists():
        with contextlib.suppress(OSError):
            fp = _fingerprint(secret.read_bytes())
    last = len(chain_.raws)

    def events(upto: int) -> Iterator[tuple[int, bytes]]:
        for i, raw in enumerate(chain_.raws[:upto]):
            yield i + 1, raw

    def fn(txn: Txn) -> int:
        txn.put("meta", b"format", _Q.pack(FORMAT_VERSION))
        txn.put("meta", b"seed", _Q.pack(ident.seed))
        txn.put("meta", b"store_id", ident.store_id.encode())
        if fp is not None:
            txn.put("meta", b"secret_fp", fp)
        stored = 0
        for digest, rec in index.items():
            txn.put("chunks", digest, rec.pack())
            stored += rec.stored_len
        txn.put("meta", b"stored_bytes", stored.to_bytes(8, "big"))
        txn.put("meta", TEMPORAL_META, b"\x01")  # the fold below indexes history from seq 1
        for name, end in packs.ends.items():
            txn.put("segments", name.encode(), _Q.pack(end))
        prev = GENESIS
        n = 0
        for seq, raw in events(last):
            txn.put("events", seq_key(seq), raw)
            prev = chain(prev, raw)
            n = seq
        if n:
            txn.put("meta", b"head_seq", seq_key(n))
            txn.put("meta", b"head_hash", prev)
            at = [0]

            def decoded() -> Iterator[Event]:
                for seq, raw in events(n):
                    at[0] = seq
                    yield decode(seq, raw)

            try:
                fold(txn, decoded())
            except IntegrityError as e:
                raise _FoldError(at[0], e) from e
        else:
            from engine.projections import apply
            from engine.storage.log import EventLog

            created = {"store_id": ident.store_id, "format": FORMAT_VERSION}
            for ev in EventLog().append(txn, [(STORE_CREATED, created)]):
                apply(txn, ev)
        return n

    kv = LmdbKV(new_dir, STORE_DATABASES)
    try:
        while True:
            try:
                n = kv.write(fn)
                break
            except _FoldError as e:
                last = e.seq - 1
                chain_.stopped_at = e.seq
                chain_.reason = f"event {e.seq} cannot be folded ({e.error})"
    finally:
        kv.close()
    report.events_salvaged = n
    report.stopped_at = chain_.stopped_at
    report.stop_reason = chain_.reason
    report.chunks_reindexed = len(packs.index)
    report.inline_chunks = len(inline)
    report.segments = len(packs.ends)
    report.damaged_pack_records = packs.damaged
    if chain_.unverified and n:
        report.notes.append(
            f"event {n}, the last salvaged, decodes and fits the chain, but nothing after it "
            "could vouch for it (the rest of the old log is unreadable)"
        )


def _import(
    cls: type[Store],
    root: Path,
    new_dir: Path,
    export: Path,
    chunk_size: int,
    report: RecoverReport,
    progress: Progress | None,
) -> None:
    """Import the export's events (and the chunks the packs no longer hold)."""
    from engine.ledger.core import Ledger
    from engine.ledger.secret import load_secret as _load_secret
    from engine.ops.importing import import_stream

    secret, _ = _load_secret(root, create=False)
    kv = LmdbKV(new_dir, STORE_DATABASES)
    blobs = PackBlobStore(root / "packs")
    store = cls(
        Ledger(
            kv,
            blobs,
            path=root,
            secret=secret,
            chunk_size=chunk_size,
            level=3,
            workers=2,
            create=False,
        )
    )
    try:
        got = import_stream(
            store, export, preserve_trust=True, allow_absent=True, progress=progress
        )
    finally:
        store.close()
    report.events_imported = got.events


def _swap(root: Path, aside: Path | None, new_dir: Path, stamp: str) -> Path | None:
    """Move the old ledger aside, then the new one into place."""
    moved = None
    if aside is not None and aside.exists():
        moved = root / f"ledger.damaged-{stamp}"
        n = 1
        while moved.exists():
            n += 1
            moved = root / f"ledger.damaged-{stamp}-{n}"
        aside.rename(moved)
    new_dir.rename(root / "ledger")
    fsync_dir(root)
    return moved


def _check(cls: type[Store], root: Path, report: RecoverReport) -> None:
    """Open the recovered store: which live versions lost chunks, what verify says."""
    from engine.projections.records import record

    try:
        store = cls.open(root)
    except ArtledgerError as e:
        report.problems.append(f"the recovered store does not open: {e}")
        return
    with store:
        with store.ledger.kv.snapshot() as txn:
            referenced: set[bytes] = set()
            for _, raw in txn.scan("artifacts"):
                rec = record(raw, "artifacts")
                if rec["deleted"] is not None:
                    continue
                files = manifests(rec)
                digests = [d for f in files for d in f[3]]
                referenced.update(digests)
                if any(txn.get("chunks", d) is None for d in digests):
                    report.missing.append(f"{rec['name']}:{rec['version']}")
            report.unreferenced_chunks = sum(
                1 for d, _ in txn.scan("chunks") if d not in referenced
            )
        report.problems = [
            p for p in store.verify().problems if "is missing from the index" not in p
        ]
    if report.unreferenced_chunks:
        report.notes.append(
            f"{report.unreferenced_chunks} chunks are referenced by no live artifact version: "
            "`artledger gc` would reclaim them; import any export you have first"
        )
