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

import xxhash
import zstandard

from engine.errors import ArtledgerError, IntegrityError, StoreError
from engine.ledger.layout import (
    Identity,
    directory_lock,
    fsync_dir,
    read_identity,
    write_identity,
)
from engine.ops.salvage import readable_copy, run_child
from engine.projections import fold
from engine.storage import lmdb_file as ledger_file
from engine.storage.blobs import HEADER, MAGIC, PackBlobStore
from engine.storage.chunks import CODEC_RAW, CODEC_ZSTD, ChunkRecord
from engine.storage.kv import LmdbKV, Txn, is_open_here
from engine.storage.lmdb_pages import leaf_records
from engine.storage.lmdb_readers import FLOCK
from engine.storage.log import GENESIS, Event, chain, decode, key_seq, seq_key, unpack

if TYPE_CHECKING:
    from engine.store import Store

Progress = Callable[[str, int, int], None]
_Q = struct.Struct(">Q")
_MAX_RAW = 1 << 31


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


@dataclass
class _Salvage:
    """What the old ledger still gives: its meta records (through LMDB), and
    candidate copies of events (seq -> distinct raw values) and of inline
    chunk index records (digest -> raw values), through LMDB and from a scan
    of its leaf pages."""

    meta: dict[bytes, bytes] = field(default_factory=dict)
    events: dict[int, list[bytes]] = field(default_factory=dict)
    events_read_whole: bool = False  # LMDB read the whole events database
    events_why: str = ""
    chunks: dict[bytes, list[bytes]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add_event(self, key: bytes, raw: bytes) -> None:
        if len(key) != 8:
            return
        copies = self.events.setdefault(key_seq(key), [])
        if raw not in copies:
            copies.append(raw)

    def add_chunk(self, key: bytes, raw: bytes) -> None:
        copies = self.chunks.setdefault(key, [])
        if raw not in copies:
            copies.append(raw)


def _salvage(data: Path | None, scratch: Path, progress: Progress | None) -> _Salvage:
    out = _Salvage()
    if data is None or not data.is_file():
        out.notes.append(
            "there is no ledger data file to salvage events from: only an export "
            "(`recover --from FILE`) can bring the events back"
        )
        return out
    df = ledger_file.inspect(data)
    problem = df.problem()
    if problem:
        out.notes.append(problem)
    readable = readable_copy(df, scratch)
    if readable is None:
        out.notes.append(f"LMDB cannot read anything of {data} ({df.state})")
    else:
        for i, db in enumerate(("meta", "chunks", "events")):
            dump = run_child(readable, db, scratch / f"{db}.salvage")
            if not dump.complete:
                out.notes.append(
                    f"old ledger, database {db!r}: LMDB read {dump.count} records, then {dump.why}"
                )
            if db == "meta":
                out.meta = dict(dump.pairs())
            elif db == "chunks":
                for key, raw in dump.pairs():
                    out.add_chunk(key, raw)
            else:
                out.events_read_whole, out.events_why = dump.complete, dump.why
                for key, raw in dump.pairs():
                    out.add_event(key, raw)
            if progress is not None:
                progress("salvage", i + 1, 4)
    # The leaf pages LMDB could not reach (a truncated file loses its newest roots).
    newest = df.newest
    psize = newest.page_size if newest is not None else os.sysconf("SC_PAGE_SIZE")
    found = 0
    for key, raw in leaf_records(data, psize):
        if len(key) == 8 and raw[:1] == b"\x85" and b"prev" in raw:
            found += 1
            out.add_event(key, raw)
        elif len(key) == 16 and raw[:1] == b"\x94":
            out.add_chunk(key, raw)
    if progress is not None:
        progress("salvage", 4, 4)
    return out


# -- the event chain ----------------------------------------------------------------------

_UNREADABLE: tuple[type[Exception], ...] = (
    ArtledgerError,
    ValueError,
    KeyError,
    TypeError,
    IndexError,
)


@dataclass
class _Chain:
    raws: list[bytes] = field(default_factory=list)  # events 1..len(raws), kept
    stopped_at: int | None = None
    reason: str | None = None
    unverified: bool = False  # the last kept event has nothing after it to vouch for it


def _prev_of(seq: int, raw: bytes) -> bytes | None:
    """The chain hash an event records for the event before it (None: it does not decode)."""
    try:
        decode(seq, raw)
        prev = unpack(raw)["prev"]
    except _UNREADABLE:
        return None
    return prev if isinstance(prev, bytes) else None


def _check_chain(salvage: _Salvage) -> _Chain:
    """The longest prefix 1..k of the old log that is gapless, decodes, and
    whose events the hash chain vouches for (each by the next event's
    ``prev``, the last by the head hash). Of several copies of an event (the
    page scan sees stale pages too), the one the chain holds through is taken.
    An event nothing after it could be read for is kept, marked unverified,
    unless the head hash contradicts it."""
    out = _Chain()
    meta = salvage.meta
    head_raw = meta.get(b"head_seq")
    head = key_seq(head_raw) if head_raw is not None and len(head_raw) == 8 else None
    head_hash = meta.get(b"head_hash")

    def stop(seq: int, why: str) -> None:
        out.stopped_at, out.reason = seq, why

    prev = GENESIS  # the chain hash through the last kept event
    pending: bytes | None = None  # event len(raws) + 1: fits the chain, not yet vouched for
    n = 1
    while head is None or n <= head:
        through = prev if pending is None else chain(prev, pending)
        copies = salvage.events.get(n, [])
        prevs = [(raw, _prev_of(n, raw)) for raw in copies]
        fitting = [raw for raw, p in prevs if p == through]
        if not fitting:
            readable = [raw for raw, p in prevs if p is not None]
            if readable and pending is not None:
                stop(
                    n - 1,
                    f"event {n - 1} does not match the hash chain (event {n} records another "
                    "hash for it): it was altered",
                )
                pending = None
            elif readable:
                stop(n, f"event {n} does not fit the hash chain")
            elif copies:
                stop(n, f"event {n} cannot be decoded")
            break
        if len(fitting) > 1:  # differing copies: the next event says which one is right
            nexts = {_prev_of(n + 1, raw) for raw in salvage.events.get(n + 1, [])}
            fitting = [raw for raw in fitting if chain(through, raw) in nexts]
            if len(fitting) != 1:
                stop(n, f"differing copies of event {n} fit the hash chain")
                break
        if pending is not None:
            out.raws.append(pending)
            prev = through
        pending = fitting[0]
        n += 1
    if pending is not None:
        seq = len(out.raws) + 1
        if head == seq and head_hash is not None and head_hash != chain(prev, pending):
            stop(seq, f"event {seq}, the last, does not match the head hash: it was altered")
        else:
            out.raws.append(pending)
            out.unverified = head != seq or head_hash is None
    last = len(out.raws)
    if out.reason is None:
        if head is not None and head > last:
            stop(last + 1, f"no readable copy of event {last + 1} was found (the log had {head})")
        elif head is None and not salvage.events_read_whole:
            stop(
                last + 1,
                f"no readable copy of event {last + 1} was found (how long the log was is "
                "unknown: its head record does not read)",
            )
    return out


@dataclass
class _Packs:
    index: dict[bytes, ChunkRecord] = field(default_factory=dict)
    ends: dict[str, int] = field(default_factory=dict)
    damaged: int = 0
    max_raw: int = 0
    notes: list[str] = field(default_factory=list)


def _decode_payload(codec: int, payload: bytes, raw_len: int) -> bytes | None:
    try:
        if codec == CODEC_RAW:
            return payload if len(payload) == raw_len else None
        if codec == CODEC_ZSTD:
            out = zstandard.ZstdDecompressor().decompress(payload, max_output_size=raw_len)
            return out if len(out) == raw_len else None
    except zstandard.ZstdError:
        return None
    return None


def _records(fd: int, size: int) -> Iterator[tuple[int, bytes, int, int, int]]:
    """(offset, digest, codec, payload length, raw length) of every plausible
    record header; after a bad header, scan on for the next magic."""
    pos = 0
    while pos + HEADER.size <= size:
        head = os.pread(fd, HEADER.size, pos)
        if len(head) < HEADER.size:
            return
        magic, digest, codec, plen, rlen = HEADER.unpack(head)
        if (
            magic == MAGIC
            and codec in (CODEC_RAW, CODEC_ZSTD)
            and pos + HEADER.size + plen <= size
            and 0 < rlen <= _MAX_RAW
        ):
            yield pos, digest, codec, plen, rlen
            pos += HEADER.size + plen
            continue
        found = -1
        at = pos + 1
        while at < size and found < 0:
            block = os.pread(fd, 1 << 20, at)
            if not block:
                break
            i = block.find(MAGIC)
            found = at + i if i >= 0 else -1
            at += max(1, len(block) - len(MAGIC) + 1)
        if found < 0:
            return
        yield found, b"", -1, 0, 0  # a gap: the bytes between were not a record
        pos = found


def _scan_packs(packs: Path, seed: int | None, progress: Progress | None) -> _Packs:
    out = _Packs()
    names = sorted(p.stem for p in packs.glob("*.pack")) if packs.is_dir() else []
    for i, name in enumerate(names):
        path = packs / f"{name}.pack"
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as e:
            out.notes.append(f"pack segment {name}.pack cannot be read: {e}")
            continue
        try:
            size = os.fstat(fd).st_size
            if seed is None:
                out.ends[name] = size
                continue
            end = 0
            valid = 0
            for off, digest, codec, plen, rlen in _records(fd, size):
                if codec < 0:
                    out.damaged += 1
                    continue
                payload = os.pread(fd, plen, off + HEADER.size)
                raw = _decode_payload(codec, payload, rlen)
                if raw is None or xxhash.xxh3_128(raw, seed=seed).digest() != digest:
                    out.damaged += 1
                    continue
                valid += 1
                end = off + HEADER.size + plen
                out.max_raw = max(out.max_raw, rlen)
                if digest not in out.index:
                    out.index[digest] = ChunkRecord(codec, rlen, [name, off + HEADER.size, plen])
            if valid:
                out.ends[name] = end
                if size > end:
                    out.notes.append(
                        f"pack segment {name}.pack: {size - end} bytes after its last valid "
                        "record (a torn write or damage) are past its recorded end"
                    )
            elif size:
                out.ends[name] = size  # kept whole: nothing in it verifies
                out.notes.append(
                    f"pack segment {name}.pack ({size} bytes) holds no chunk that verifies "
                    "under this store's seed; it is kept as it is"
                )
        finally:
            os.close(fd)
        if progress is not None:
            progress("packs", i + 1, len(names))
    return out


def _pick_seed(candidates: list[int], packs: Path) -> int | None:
    """The first candidate seed under which a pack record verifies (the first
    candidate when no pack holds a record)."""
    if not candidates:
        return None
    for path in sorted(packs.glob("*.pack")) if packs.is_dir() else []:
        with contextlib.suppress(OSError):
            fd = os.open(path, os.O_RDONLY)
            try:
                size = os.fstat(fd).st_size
                for off, digest, codec, plen, rlen in _records(fd, size):
                    if codec < 0:
                        continue
                    raw = _decode_payload(codec, os.pread(fd, plen, off + HEADER.size), rlen)
                    if raw is None:
                        continue
                    for seed in candidates:
                        if xxhash.xxh3_128(raw, seed=seed).digest() == digest:
                            return seed
            finally:
                os.close(fd)
    return candidates[0]


def _inline_chunks(salvage: _Salvage, seed: int) -> dict[bytes, ChunkRecord]:
    """Chunks kept inline in the old chunk index, each checked against its digest."""
    out: dict[bytes, ChunkRecord] = {}
    for digest, copies in salvage.chunks.items():
        for raw in copies:
            try:
                rec = ChunkRecord.unpack(raw)
            except IntegrityError:
                continue
            if not isinstance(rec.inline, bytes) or not isinstance(rec.raw_len, int):
                continue
            data = _decode_payload(rec.codec, rec.inline, rec.raw_len)
            if data is not None and xxhash.xxh3_128(data, seed=seed).digest() == digest:
                out[digest] = ChunkRecord(rec.codec, rec.raw_len, None, rec.inline)
                break
    return out


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
    seed = _pick_seed(seeds, root / "packs")
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
            salvage = _salvage(data, scratch, progress)
            report.notes += salvage.notes
            ident, seed_known = _identity(root, salvage.meta, report)
            packs = _scan_packs(root / "packs", ident.seed if seed_known else None, progress)
            report.notes += packs.notes
            inline = _inline_chunks(salvage, ident.seed) if seed_known else {}
            chain_ = _Chain() if export is not None else _check_chain(salvage)
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
    chain_: _Chain,
    packs: _Packs,
    inline: dict[bytes, ChunkRecord],
    report: RecoverReport,
) -> None:
    """Write the new ledger: identity, chunk index, segment ends, the salvaged
    events and their projections, in one transaction."""
    from engine.store import FORMAT_VERSION, _fingerprint

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
            for ev in EventLog().append(txn, [("store.created", created)]):
                apply(txn, ev)
        return n

    kv = LmdbKV(new_dir)
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
    from engine.ops.transfer import import_stream
    from engine.store import _load_secret

    secret, _ = _load_secret(root, create=False)
    kv = LmdbKV(new_dir)
    blobs = PackBlobStore(root / "packs")
    store = cls(
        kv, blobs, path=root, secret=secret, chunk_size=chunk_size, level=3, workers=2, create=False
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
        with store.kv.snapshot() as txn:
            referenced: set[bytes] = set()
            for _, raw in txn.scan("artifacts"):
                rec = record(raw, "artifacts")
                if rec["deleted"] is not None:
                    continue
                files = list(rec["files"]) + [v[2] for v in rec.get("visualizations") or []]
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
