"""Import: validate an export stream completely, then commit it in one transaction.

The stream format and the rules an import enforces are described in
:mod:`engine.ops.transfer`; the validating pass is :mod:`engine.ops.stream_scan`.
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import msgpack

from engine import failpoints
from engine.errors import ImportValidationError, MaterializerError
from engine.events import ARTIFACT_TRUSTED, ARTIFACT_WRITTEN
from engine.ops.rechunk import Rechunker
from engine.ops.stream import ChunkSource, Progress
from engine.ops.stream_scan import Plan, scan
from engine.ops.trust import signed_pickles
from engine.projections import apply
from engine.projections.fold import next_version
from engine.projections.keys import MAX_VERSION, version_key
from engine.projections.records import manifests, map_manifests
from engine.storage.chunks import FileEntry
from engine.storage.files import Signer
from engine.storage.kv import Txn
from engine.storage.log import SCHEMA_VERSIONS, pack

if TYPE_CHECKING:
    from engine.store import Store


@dataclass
class ImportReport:
    """What ``Store.import_()`` did (nothing, when ``already_imported``).

    ``untrusted`` counts the versions marked untrusted, ``untrusted_pickles``
    those of them that hold pickles (which refuse to load until trusted)."""

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
    untrusted_pickles: int = 0
    resigned: int = 0
    already_imported: bool = False
    seconds: float = 0.0


class StreamFiles(Signer):
    """Read-only ``ArtifactFiles`` over an artifact's files in the stream, signing
    with the destination's secret (for re-signing pickles)."""

    refusal = "cannot sign the imported pickles (trust_pickles): {problem}; nothing was imported"

    def __init__(
        self,
        source: ChunkSource,
        entries: dict[str, FileEntry],
        state: dict[str, Any],
        secret: bytes,
        secret_problem: str | None,
        prefix: str = "",
    ) -> None:
        super().__init__(secret, secret_problem)
        self._source, self._entries = source, entries
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
    t0 = time.perf_counter()
    ledger = store.ledger
    src = Path(path)
    report = ImportReport(src)
    plan = scan(src, allow_absent=allow_absent, check_clock=not preserve_trust, progress=progress)
    report.chunks_in_stream = len(plan.chunks)
    store.flush()
    with store.catalog._read() as txn:
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
    session = store.ledger.chunks.session()
    resigned: dict[str, dict[str, Any]] = {}  # artifact id -> its state, signed again
    with session, ChunkSource(src, plan.chunks) as source, open(src, "rb") as f:
        chunks = Rechunker(session, source, store.ledger.chunks.chunk_size)

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
                    sf = StreamFiles(
                        source, entries, state, store.ledger.secret, store.ledger.secret_problem
                    )
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
        failpoints.hit("import.after_chunks")

        def finish(d: dict[str, Any], shifts: dict[str, int]) -> dict[str, Any]:
            d = dict(d)
            aid = d["id"]
            if aid not in plan.incomplete:
                if aid in resigned:
                    d["state"] = resigned[aid]
                d = map_manifests(d, chunks.record)
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
            first = last = untrusted = logical = 0
            report.untrusted_pickles = 0
            batch: list[dict[str, Any]] = []

            def append() -> None:
                nonlocal first, last
                for ev in store.ledger.log.append_raw(txn, batch):
                    apply(txn, ev)
                    first, last = first or ev.seq, ev.seq
                batch.clear()

            for n, e in enumerate(plan.read_events(f), 1):
                data = e.data
                if e.type == ARTIFACT_WRITTEN:
                    data = finish(data, shifts)
                    if data.get("untrusted"):
                        untrusted += 1
                        report.untrusted_pickles += bool(signed_pickles(data["state"]))
                    if data["id"] not in plan.incomplete:
                        logical += int(data["size"])
                elif e.type == ARTIFACT_TRUSTED and not preserve_trust:
                    data = {**data, "foreign": True}  # signed under the source's secret
                v = SCHEMA_VERSIONS.get(e.type, 1)
                batch.append({"type": e.type, "v": v, "ts": e.ts, "data": data})
                if len(batch) >= APPEND_BATCH:
                    append()
                if progress is not None and n % 4096 == 0:
                    progress("append", n, plan.events)
            append()
            failpoints.hit("import.in_txn")
            return first, last, untrusted, logical, shifts

        ledger.kv.reserve(LEDGER_BYTES_PER_EVENT_BYTE * plan.event_bytes)
        first, last, untrusted, logical, shifts = ledger.transact(fn, [session], what="the import")
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
