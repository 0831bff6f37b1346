"""Export and import: a portable, versioned, checksummed stream of events and chunks.

Stream format, version 1 (all integers big-endian)::

    magic   b"ALEXPORT"            8 bytes
    version u16 = 1, flags u16 = 0
    frames  kind u8 | length u32 | payload (length bytes) | check (16 bytes)

``check`` is xxh3-128 over ``kind | length | payload``. Frames, in order:

- ``H`` (exactly one, first): msgpack map ``{format, store_id, created (ns),
  scope ("store" | "names"), names, upto (last source seq exported)}``.
- ``C`` chunk: a 16-byte key, then the chunk's raw (decompressed) bytes. The
  key is the *unseeded* xxh3-128 of the bytes, so it is store-independent;
  a chunk appears once however many manifests use it.
- ``A`` absent chunk: a 16-byte placeholder key for a chunk the source no
  longer holds (collected by ``gc``); only artifact versions deleted within
  the stream may reference one (``replay --into`` also allows live ones).
- ``E`` event: msgpack map ``{type, v, ts, data}`` (the stored envelope
  without its chain hash). Manifests in ``artifact.written`` name chunks by
  stream key, never by the source's seeded digest.
- ``T`` (exactly one, last, then end of file): msgpack map ``{events, chunks,
  absent, chunk_bytes, hash}``; ``hash`` is the hex xxh3-128 over the 12-byte
  preamble and the ``check`` of every frame before the trailer.

Import validates everything before anything is visible, and before any
chunk is written (``engine.ops.stream_scan``, one streaming pass): preamble and
version, every frame checksum, the trailer, each event's schema (known type,
required fields and their types; integer versions within int64; timestamps no
more than ``MAX_CLOCK_SKEW_NS``, five minutes, past this machine's clock),
manifest file names (relative, no ``..``, no NUL, no file that is also the
directory of another), sizes (a manifest's declared sizes against its
chunks, caps against absurd values), every chunk's key and every file's hash
recomputed (each distinct file once, within a hashing budget proportional to
the stream's size), references between events. Then the files are written
through the destination's chunk store (re-addressed under its seed and chunk
size, deduplicated against what it holds; each distinct chunk read, hashed
and written once however often it is referenced) and the events are read
again, appended after its head (re-chained) and folded in batches, in one
transaction: all or nothing. Memory holds ids, names and the chunk index,
never the events.

Identity: the ids of artifacts, runs and step runs travel with the stream.
Importing a stream whose ids are all present already is a no-op (reported as
``already_imported``); a stream sharing only some ids with the destination is
refused. Integer versions of a name the destination already has are shifted
past its versions; a clashing string label is refused. Timestamps are kept,
but never older than the destination's last event (the log's timestamps never
decrease, see ``engine.storage.log``). The source's ``store.created`` event is not
imported.

Pickles and classes: a signature made under the source store's secret does
not hold in the destination. Imported artifact versions are marked
``untrusted`` — their pickles refuse to load, and loading them imports no
module they name (``materializers.registry``: only classes already known or
allowed) — unless ``trust_pickles``, in which case every pickle is signed
again with the destination's secret and the versions load like local ones.

The stream is checksummed, not signed: it detects damage and truncation,
and everything in it is validated as untrusted input.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import msgpack
import xxhash

from engine import failpoints
from engine.errors import (
    ArtifactNotFoundError,
    ImportValidationError,
    MaterializerError,
    StoreError,
    StoreSecretError,
)
from engine.ops.rechunk import Rechunker
from engine.ops.stream import (
    FORMAT,
    MAGIC,
    PREAMBLE,
    ChunkSource,
    Progress,
    Writer,
    absent_key,
    manifests,
)
from engine.ops.stream_scan import Plan, scan
from engine.projections import apply
from engine.projections.fold import next_version
from engine.projections.keys import MAX_VERSION, version_key
from engine.storage.chunks import FileEntry
from engine.storage.kv import Txn
from engine.storage.log import SCHEMA_VERSIONS, pack

if TYPE_CHECKING:
    from engine.store import Store


@dataclass
class ExportReport:
    """What ``store.export()`` wrote."""

    path: Path
    events: int = 0
    chunks: int = 0
    absent: int = 0
    chunk_bytes: int = 0
    stream_bytes: int = 0
    seconds: float = 0.0


@dataclass
class ImportReport:
    """What ``Store.import_()`` did (nothing, when ``already_imported``)."""

    path: Path
    events: int = 0
    artifacts: int = 0
    runs: int = 0
    chunks_in_stream: int = 0
    chunks_written: int = 0
    bytes_written: int = 0
    logical_bytes: int = 0
    first_seq: int = 0
    last_seq: int = 0
    renumbered: dict[str, int] = field(default_factory=dict)
    untrusted: int = 0
    resigned: int = 0
    already_imported: bool = False
    seconds: float = 0.0


def _selection(store: Store, names: list[str], upto: int) -> tuple[set[str], set[str], set[str]]:
    """Artifact, step run and run ids to export for ``names``: their live versions,
    sibling outputs of their producers, and the whole upstream lineage."""
    from engine.storage.log import unpack

    arts: set[str] = set()
    steps: set[str] = set()
    runs: set[str] = set()
    queue: list[str] = []
    for name in names:
        found = [a for a in store.list_artifacts(name) if a.seq <= upto]
        if not found:
            raise ArtifactNotFoundError(
                f"cannot export {name!r}: no live artifact of that name; "
                "`artledger artifacts` lists them"
            )
        queue += [a.id for a in found]
    with store._read() as txn:
        while queue:
            aid = queue.pop()
            if aid in arts:
                continue
            raw = txn.get("artifacts", aid.encode())
            if raw is None:
                continue
            arts.add(aid)
            rec = unpack(raw)
            if rec.get("run"):
                runs.add(rec["run"])
            sid = rec.get("producer")
            if not sid or sid in steps:
                continue
            sraw = txn.get("steps", sid.encode())
            if sraw is None:
                continue
            steps.add(sid)
            srec = unpack(sraw)
            runs.add(srec["run"])
            queue += list(srec.get("inputs", {}).values())
            queue += list(srec.get("outputs", {}).values())
    return arts, steps, runs


def _wanted(etype: str, data: dict[str, Any], sel: tuple[set[str], set[str], set[str]]) -> bool:
    arts, steps, runs = sel
    if etype.startswith("artifact.") or etype == "metadata.logged":
        return data.get("id") in arts
    if etype.startswith("step."):
        return data.get("id") in steps
    if etype.startswith("run."):
        return data.get("id") in runs
    return False


def export_stream(
    store: Store,
    path: str | os.PathLike[str],
    *,
    names: list[str] | None = None,
    upto: int | None = None,
    progress: Progress | None = None,
) -> ExportReport:
    """Write the log (events ``1..upto``, default all) and the chunks its
    artifact versions reference to ``path``; with ``names``, only those
    artifacts with their upstream lineage and the runs and step runs that
    made them. The file appears complete or not at all."""
    from engine.storage.log import unpack

    t0 = time.perf_counter()
    store.flush()
    head = store.head
    upto = head if upto is None else upto
    if not 0 <= upto <= head:
        raise ImportValidationError(f"cannot export up to event {upto}: the log holds 1..{head}")
    sel = _selection(store, names, upto) if names else None
    target = Path(path)
    report = ExportReport(target)
    tmp = target.with_name(f".{target.name}.partial-{os.getpid()}")
    emitted: dict[bytes, bytes] = {}
    try:
        with open(tmp, "wb") as f:
            w = Writer(f)
            w.raw(PREAMBLE.pack(MAGIC, FORMAT, 0))
            header = {
                "format": FORMAT,
                "store_id": store.store_id,
                "created": time.time_ns(),
                "scope": "names" if names else "store",
                "names": list(names or []),
                "upto": upto,
            }
            w.frame(b"H", pack(header))
            with store.kv.snapshot() as txn:
                for seq, raw in store.log.read_raw(txn, 1, upto + 1):
                    env = unpack(raw)
                    etype, data = env["type"], env["data"]
                    if etype == "store.created":
                        continue
                    if sel is not None and not _wanted(etype, data, sel):
                        continue
                    if etype == "artifact.written":
                        data = _exportmanifests(store, w, data, emitted, report)
                    w.frame(
                        b"E",
                        pack({"type": etype, "v": env["v"], "ts": env["ts"], "data": data}),
                    )
                    report.events += 1
                    if progress is not None and report.events % 1000 == 0:
                        progress("export", seq, upto)
            trailer = {
                "events": report.events,
                "chunks": report.chunks,
                "absent": report.absent,
                "chunk_bytes": report.chunk_bytes,
                "hash": w.running.hexdigest(),
            }
            w.frame(b"T", pack(trailer))
            f.flush()
            os.fsync(f.fileno())
            report.stream_bytes = w.size
        tmp.replace(target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    if progress is not None:
        progress("export", upto, upto)
    report.seconds = time.perf_counter() - t0
    return report


def _exportmanifests(
    store: Store,
    w: Writer,
    data: dict[str, Any],
    emitted: dict[bytes, bytes],
    report: ExportReport,
) -> dict[str, Any]:
    label = f"artifact {data.get('name')}:{data.get('version')} (id {data.get('id')})"

    def convert(frec: list[Any]) -> list[Any]:
        keys = []
        for digest in frec[3]:
            key = emitted.get(digest)
            if key is None:
                if store.chunks.lookup(digest) is None:
                    key = absent_key(digest)
                    w.frame(b"A", key)
                    report.absent += 1
                else:
                    chunk = store.chunks.read_chunk(digest, label)
                    key = xxhash.xxh3_128(chunk).digest()
                    w.frame(b"C", key, chunk)
                    report.chunks += 1
                    report.chunk_bytes += len(chunk)
                emitted[digest] = key
            keys.append(key)
        return [frec[0], frec[1], frec[2], keys]

    out = dict(data)
    out["files"] = [convert(f) for f in data.get("files") or []]
    out["visualizations"] = [[v[0], v[1], convert(v[2])] for v in data.get("visualizations") or []]
    return out


# -- importing -----------------------------------------------------------------------


class StreamFiles:
    """Read-only ``ArtifactFiles`` over an artifact's files in the stream, signing
    with the destination's secret (for re-signing pickles)."""

    def __init__(
        self,
        source: ChunkSource,
        entries: dict[str, FileEntry],
        state: dict[str, Any],
        secret: bytes,
        secret_problem: str | None,
        prefix: str = "",
    ) -> None:
        self._source, self._entries = source, entries
        self._secret, self._secret_problem = secret, secret_problem
        self.state = state
        self._prefix = prefix

    def open_write(self, name: str) -> IO[bytes]:
        raise MaterializerError("imported artifact files are read-only")

    def open_read(self, name: str) -> IO[bytes]:
        entry = self._entries.get(self._prefix + name)
        if entry is None:
            raise FileNotFoundError(name)
        return io.BytesIO(b"".join(self._source.get(k) for k in entry.chunks))

    def names(self) -> list[str]:
        n = len(self._prefix)
        return sorted(k[n:] for k in self._entries if k.startswith(self._prefix))

    def size(self, name: str) -> int:
        return self._entries[self._prefix + name].size

    def sub(self, prefix: str) -> StreamFiles:
        return StreamFiles(
            self._source,
            self._entries,
            self.state,
            self._secret,
            self._secret_problem,
            self._prefix + prefix + "/",
        )

    def local_dir(self) -> str:
        raise MaterializerError("imported artifact files have no local directory")

    def sign(self, payload: bytes) -> str:
        import hmac

        if self._secret_problem is not None:
            raise StoreSecretError(
                f"cannot sign the imported pickles (trust_pickles): {self._secret_problem}; "
                "nothing was imported"
            )
        return hmac.new(self._secret, payload, hashlib.sha256).hexdigest()

    def verify(self, payload: bytes, signature: str) -> bool:
        import hmac

        return hmac.compare_digest(self.sign(payload), signature)


def _preflight(store: Store, plan: Plan, txn: Txn) -> tuple[bool, str | None]:
    """(every id already present, the first id present) in the destination."""
    present: list[str] = []
    total = 0
    for db, ids in (
        ("artifacts", plan.artifacts),
        ("runs", plan.run_ids),
        ("steps", plan.step_ids),
    ):
        for i in ids:
            total += 1
            if txn.get(db, i.encode()) is not None:
                present.append(f"{db[:-1].replace('step', 'step run')} {i}")
    return bool(total) and len(present) == total, (present[0] if present else None)


def _renumber(txn: Txn, plan: Plan) -> dict[str, int]:
    """Version shift per name the destination already has (raises on a label
    clash, or when a shifted version would leave the integer range)."""
    shifts: dict[str, int] = {}
    for name, info in plan.names.items():
        shift = next_version(txn, name) - 1
        if shift and info.max_int is not None and info.max_int + shift > MAX_VERSION:
            raise ImportValidationError(
                f"{plan.path}: {name}:{info.max_int} would become version "
                f"{info.max_int + shift} after the destination's versions, past the largest "
                f"integer version ({MAX_VERSION}); nothing was imported"
            )
        for label in info.labels:
            if txn.get("versions", version_key(name, label)) is not None:
                raise ImportValidationError(
                    f"the destination already has {name}:{label} (a version label the stream "
                    "also uses); nothing was imported. Rename the label in one of the stores"
                )
        if shift:
            shifts[name] = shift
    return shifts


APPEND_BATCH = 1024
LEDGER_BYTES_PER_EVENT_BYTE = 4  # events, projections and B-tree slack, measured: ~3


def import_stream(
    store: Store,
    path: str | os.PathLike[str],
    *,
    trust_pickles: bool = False,
    preserve_trust: bool = False,
    allow_absent: bool = False,
    progress: Progress | None = None,
) -> ImportReport:
    """Validate the stream at ``path`` completely, then import it into ``store``
    in one transaction (see the module docstring for the rules).

    Memory stays bounded by the stream's ids and chunk index, not its events:
    one pass validates, a second writes the chunks, a third (inside the
    transaction) appends and folds the events in batches, each pass reading
    the events again from the file.

    ``preserve_trust`` keeps the events' own trust marks and signatures (for a
    copy that shares the source's secret, ``replay --into``); ``allow_absent``
    accepts live artifact versions whose chunks the source no longer held."""
    from engine.store import _ChunkGoneError, record_segment_ends

    t0 = time.perf_counter()
    src = Path(path)
    report = ImportReport(src)
    plan = scan(src, allow_absent=allow_absent, check_clock=not preserve_trust, progress=progress)
    report.chunks_in_stream = len(plan.chunks)
    store.flush()
    with store._read() as txn:
        everything, clash = _preflight(store, plan, txn)
        if clash is None:
            _renumber(txn, plan)
    if everything:
        report.already_imported = True
        report.seconds = time.perf_counter() - t0
        return report
    if clash is not None:
        raise ImportValidationError(
            f"{src}: the destination already holds {clash} from this stream but not all of "
            "it (a partial overlap, e.g. another export of the same source); nothing was "
            "imported. Import into a store that has none of it"
        )
    from materializers.cloudpickle_materializer import resign_pickles

    resign = trust_pickles and not preserve_trust
    session = store.chunks.session()
    resigned: dict[str, dict[str, Any]] = {}  # artifact id -> its state, signed again
    with session, ChunkSource(src, plan.chunks) as source, open(src, "rb") as f:
        chunks = Rechunker(session, source, store.chunks.chunk_size)

        def files() -> Iterator[FileEntry]:
            n_done = 0
            for e in plan.read_events(f, written_only=True):
                d = e.data
                n_done += 1
                if d["id"] in plan.incomplete:
                    continue
                if resign:
                    state = _deep_copy(d["state"])
                    entries = {r[0]: FileEntry.from_record(r) for r in d["files"]}
                    sf = StreamFiles(source, entries, state, store._secret, store._secret_problem)
                    signed = resign_pickles(sf)
                    if signed:
                        resigned[d["id"]] = state
                        report.resigned += signed
                for frec in manifests(d):
                    yield FileEntry.from_record(frec)
                if progress is not None and n_done % 64 == 0:
                    progress("write", n_done, len(plan.written_at))

        chunks.write(files())
        if progress is not None:
            progress("write", len(plan.written_at), len(plan.written_at))
        ends = store.blobs.flush(session.held)
        failpoints.hit("import.after_chunks")

        def finish(d: dict[str, Any], shifts: dict[str, int]) -> dict[str, Any]:
            d = dict(d)
            aid = d["id"]
            if aid not in plan.incomplete:
                if aid in resigned:
                    d["state"] = resigned[aid]
                d["files"] = [chunks.record(r) for r in d["files"]]
                d["visualizations"] = [
                    [v[0], v[1], chunks.record(v[2])] for v in d["visualizations"]
                ]
            if not preserve_trust:
                if trust_pickles:
                    d.pop("untrusted", None)
                else:
                    d["untrusted"] = True
            shift = shifts.get(d["name"], 0)
            if shift and isinstance(d["version"], int):
                d["version"] += shift
            return d

        def fn(txn: Txn) -> tuple[int, int, int, int, dict[str, int]]:
            _, clash = _preflight(store, plan, txn)
            if clash is not None:
                raise ImportValidationError(
                    f"{src}: {clash} appeared in the destination during the import; "
                    "nothing was imported, retry"
                )
            shifts = _renumber(txn, plan)
            store._index(txn, session)
            record_segment_ends(txn, ends)
            first = last = untrusted = logical = 0
            batch: list[dict[str, Any]] = []

            def append() -> None:
                nonlocal first, last
                for ev in store.log.append_raw(txn, batch):
                    apply(txn, ev)
                    first, last = first or ev.seq, ev.seq
                batch.clear()

            for n, e in enumerate(plan.read_events(f), 1):
                data = e.data
                if e.type == "artifact.written":
                    data = finish(data, shifts)
                    untrusted += bool(data.get("untrusted"))
                    if data["id"] not in plan.incomplete:
                        logical += int(data["size"])
                v = SCHEMA_VERSIONS.get(e.type, 1)
                batch.append({"type": e.type, "v": v, "ts": e.ts, "data": data})
                if len(batch) >= APPEND_BATCH:
                    append()
                if progress is not None and n % 4096 == 0:
                    progress("append", n, plan.events)
            append()
            failpoints.hit("import.in_txn")
            return first, last, untrusted, logical, shifts

        store.kv.reserve(LEDGER_BYTES_PER_EVENT_BYTE * plan.event_bytes)
        try:
            first, last, untrusted, logical, shifts = store.kv.write(fn)
        except _ChunkGoneError as e:
            raise StoreError(
                f"chunk {e.args[0].hex()} was collected by a concurrent gc during the import; "
                "nothing was imported, retry"
            ) from None
    failpoints.hit("import.after_commit")
    report.events = plan.events
    report.artifacts = len(plan.artifacts)
    report.runs = len(plan.run_ids)
    report.renumbered = shifts
    report.untrusted = untrusted
    report.logical_bytes = logical
    report.chunks_written = len(session.new)
    report.bytes_written = sum(r.stored_len for r in session.new.values())
    report.first_seq, report.last_seq = first, last
    report.seconds = time.perf_counter() - t0
    return report


def _deep_copy(obj: Any) -> Any:
    return msgpack.unpackb(pack(obj), raw=False, strict_map_key=False)


# -- replay --into -----------------------------------------------------------------


def copy_history(
    store: Store,
    into: str | os.PathLike[str],
    *,
    upto: int | None = None,
    progress: Progress | None = None,
) -> tuple[Store, ImportReport]:
    """A new store at ``into`` holding this store's history up to event ``upto``
    (default: all): events re-chained in order (the same sequence numbers, the
    new store's own ``store.created`` standing in for the source's), chunks
    re-addressed under the new store's seed. The new store shares this store's
    secret (copied, mode 0600), so signed pickles stay loadable and untrusted
    ones stay untrusted. Returns the opened new store and the import report."""
    from engine.store import Store

    dest = Path(into)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise StoreError(f"{dest} exists and is not empty; `--into` creates a new store")
    if store.path is None:
        raise StoreError("replay --into needs an on-disk source store")
    dest.mkdir(mode=0o700, parents=True, exist_ok=True)
    secret = store.path / "secret"
    if secret.exists():
        fd = os.open(dest / "secret", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, secret.read_bytes())
            os.fsync(fd)
        finally:
            os.close(fd)
    tmp = dest / ".replay-stream"
    try:
        export_stream(store, tmp, upto=upto, progress=progress)
        new = Store.open(dest, chunk_size=store.chunks.chunk_size, level=store.chunks.level)
        try:
            report = import_stream(
                new, tmp, preserve_trust=True, allow_absent=True, progress=progress
            )
        except BaseException:
            new.close()
            raise
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    return new, report
