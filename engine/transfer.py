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
chunk is written: preamble and version, every frame checksum, the trailer,
each event's schema (known type, required fields and their types), manifest
file names (relative, no ``..``, no NUL), sizes (a manifest's declared sizes
against its chunks, caps against absurd values), every chunk's key and every
file's hash recomputed, references between events. Then the files are
written through the destination's chunk store (re-addressed under its seed,
deduplicated against what it holds) and the events are appended after its
head (re-chained) and folded, in one transaction: all or nothing.

Identity: the ids of artifacts, runs and step runs travel with the stream.
Importing a stream whose ids are all present already is a no-op (reported as
``already_imported``); a stream sharing only some ids with the destination is
refused. Integer versions of a name the destination already has are shifted
past its versions; a clashing string label is refused. Timestamps are kept,
but never older than the destination's last event before the import (the
log's time order is what ``as_of(datetime)`` relies on). The source's
``store.created`` event is not imported.

Pickles: a signature made under the source store's secret does not hold in
the destination. Imported artifact versions are marked ``untrusted`` (their
pickles refuse to load) unless ``trust_pickles``, in which case every pickle
is signed again with the destination's secret.

The stream is checksummed, not signed: it detects damage and truncation,
and everything in it is validated as untrusted input.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import msgpack
import xxhash

from engine import failpoints
from engine.chunks import FileEntry
from engine.errors import (
    ArtifactNotFoundError,
    ImportValidationError,
    MaterializerError,
    StoreError,
)
from engine.kv import Txn
from engine.log import SCHEMA_VERSIONS, Event, pack
from engine.projections import apply, next_version, version_key
from engine.transfer_stream import (
    FORMAT,
    MAGIC,
    PREAMBLE,
    Plan,
    Progress,
    Stream,
    Writer,
    absent_key,
    bad,
    chunk_reader,
    read_stream,
    validate,
)

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
    from engine.log import unpack

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
    from engine.log import unpack

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
            txn = store.kv.read()
            try:
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
            finally:
                store.kv.end_read(txn)
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
        f: IO[bytes],
        s: Stream,
        entries: dict[str, FileEntry],
        state: dict[str, Any],
        secret: bytes,
        prefix: str = "",
    ) -> None:
        self._f, self._s, self._entries, self._secret = f, s, entries, secret
        self.state = state
        self._prefix = prefix

    def open_write(self, name: str) -> IO[bytes]:
        raise MaterializerError("imported artifact files are read-only")

    def open_read(self, name: str) -> IO[bytes]:
        entry = self._entries.get(self._prefix + name)
        if entry is None:
            raise FileNotFoundError(name)
        return io.BytesIO(b"".join(chunk_reader(self._f, self._s, entry.chunks)))

    def names(self) -> list[str]:
        n = len(self._prefix)
        return sorted(k[n:] for k in self._entries if k.startswith(self._prefix))

    def size(self, name: str) -> int:
        return self._entries[self._prefix + name].size

    def sub(self, prefix: str) -> StreamFiles:
        return StreamFiles(
            self._f, self._s, self._entries, self.state, self._secret, self._prefix + prefix + "/"
        )

    def local_dir(self) -> str:
        raise MaterializerError("imported artifact files have no local directory")

    def sign(self, payload: bytes) -> str:
        import hmac

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
    """Version shift per name the destination already has (raises on a label clash)."""
    shifts: dict[str, int] = {}
    for d in plan.artifacts.values():
        name, v = d["name"], d["version"]
        if name not in shifts:
            shifts[name] = next_version(txn, name) - 1
        if isinstance(v, str) and txn.get("versions", version_key(name, v)) is not None:
            raise ImportValidationError(
                f"the destination already has {name}:{v} (a version label the stream also "
                "uses); nothing was imported. Rename the label in one of the stores"
            )
    return {k: v for k, v in shifts.items() if v}


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

    ``preserve_trust`` keeps the events' own trust marks and signatures (for a
    copy that shares the source's secret, ``replay --into``); ``allow_absent``
    accepts live artifact versions whose chunks the source no longer held."""
    from engine.store import _ChunkGoneError, record_segment_ends

    t0 = time.perf_counter()
    src = Path(path)
    report = ImportReport(src)
    stream = read_stream(src, progress)
    plan = validate(stream, allow_absent=allow_absent, progress=progress)
    report.chunks_in_stream = len(stream.chunks)
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
    # Write the files through the destination's chunk store (re-addressed, deduplicated).
    session = store.chunks.session()
    written: dict[tuple[str, int, str, tuple[bytes, ...]], list[Any]] = {}
    datas: dict[str, dict[str, Any]] = {}
    n_done = 0
    with open(src, "rb") as f:
        for aid, d in plan.artifacts.items():
            d = dict(d)
            if aid in plan.complete:

                def rewrite(frec: list[Any], f: IO[bytes] = f) -> list[Any]:
                    entry = FileEntry.from_record(frec)
                    sig = (entry.name, entry.size, entry.hash, tuple(entry.chunks))
                    if sig not in written:
                        got: list[FileEntry] = []
                        with session.writer(entry.name, got.append) as out:
                            for data in chunk_reader(f, stream, entry.chunks):
                                out.write(data)
                        new = got[0]
                        if (new.size, new.hash) != (entry.size, entry.hash):
                            raise bad(src, f"file {entry.name!r} changed while being imported")
                        written[sig] = new.to_record()
                    return written[sig]

                if trust_pickles and not preserve_trust:
                    from materializers.cloudpickle_materializer import resign_pickles

                    state = _deep_copy(d["state"])
                    entries = {r[0]: FileEntry.from_record(r) for r in d["files"]}
                    files = StreamFiles(f, stream, entries, state, store._secret)
                    report.resigned += resign_pickles(files)
                    d["state"] = state
                d["files"] = [rewrite(r) for r in d["files"]]
                d["visualizations"] = [[v[0], v[1], rewrite(v[2])] for v in d["visualizations"]]
                report.logical_bytes += int(d["size"])
            if not preserve_trust:
                if trust_pickles:
                    d.pop("untrusted", None)
                else:
                    d["untrusted"] = True
            if d.get("untrusted"):
                report.untrusted += 1
            datas[aid] = d
            n_done += 1
            if progress is not None:
                progress("write", n_done, len(plan.artifacts))
    ends = store.blobs.flush(session.held)
    failpoints.hit("import.after_chunks")

    def fn(txn: Txn) -> list[Event]:
        _, clash = _preflight(store, plan, txn)
        if clash is not None:
            raise ImportValidationError(
                f"{src}: {clash} appeared in the destination during the import; "
                "nothing was imported, retry"
            )
        shifts = _renumber(txn, plan)
        head = store.log.head(txn)
        floor = 0
        if head > 1:
            floor = next(store.log.read(txn, head, head + 1)).ts
        envs: list[dict[str, Any]] = []
        for e in plan.events:
            data = e.data
            if e.type == "artifact.written":
                data = datas[data["id"]]
                shift = shifts.get(data["name"], 0)
                if shift and isinstance(data["version"], int):
                    data = {**data, "version": data["version"] + shift}
            floor = max(floor, e.ts)
            envs.append(
                {"type": e.type, "v": SCHEMA_VERSIONS.get(e.type, 1), "ts": floor, "data": data}
            )
        store._index(txn, session)
        record_segment_ends(txn, ends)
        out = store.log.append_raw(txn, envs)
        for ev in out:
            apply(txn, ev)
        report.renumbered = shifts
        failpoints.hit("import.in_txn")
        return out

    try:
        out = store.kv.write(fn)
    except _ChunkGoneError as e:
        raise StoreError(
            f"chunk {e.args[0].hex()} was collected by a concurrent gc during the import; "
            "nothing was imported, retry"
        ) from None
    finally:
        session.release()
    failpoints.hit("import.after_commit")
    report.events = len(out)
    report.artifacts = len(plan.artifacts)
    report.runs = len(plan.run_ids)
    report.chunks_written = len(session.new)
    report.bytes_written = sum(r.stored_len for r in session.new.values())
    if out:
        report.first_seq, report.last_seq = out[0].seq, out[-1].seq
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
