"""Validate an export stream in one streaming pass, in bounded memory.

:func:`scan` reads the stream once, front to back, and checks everything the
rules in :mod:`engine.ops.transfer` list — framing, checksums, the trailer, every
event's schema, manifests, sizes, chunk keys, file hashes and the references
between events — keeping only what the cross-references need: ids, names,
the chunk index (key -> place in the file) and the file offsets of the
events, so that the import can read them again. Events themselves are not
kept. References to things that appear later in the stream (a chunk frame
after the event that uses it, a run started after a step names it) are
remembered and settled at the end.

Work is bounded by the stream's size: each distinct chunk is verified when
its frame is read, each distinct file is hashed once (its chunks read through
a small cache), and the bytes hashed to verify files may not exceed
``HASH_BUDGET_BASE + HASH_BUDGET_PER_BYTE`` x the stream's size — a tiny
stream naming one chunk a million times cannot make an import hash for
hours.
"""

from __future__ import annotations

import time
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import xxhash

from engine.errors import MaterializerError
from engine.events import (
    ARTIFACT_DELETED,
    ARTIFACT_WRITTEN,
    METADATA_LOGGED,
    RUN_STARTED,
    STEP_CACHED,
    STEP_SKIPPED,
    STEP_STARTED,
    STORE_CREATED,
)
from engine.ops.stream import (
    _HEX32,
    FORMAT,
    FRAME,
    MAX_CLOCK_SKEW_NS,
    MAX_FILE,
    MAX_NAME,
    ChunkSource,
    Progress,
    bad,
    check_event,
    frame_at,
    frames,
    open_stream,
    unpack_map,
)
from engine.projections.keys import MAX_VERSION, MIN_VERSION
from engine.storage.chunk_records import check_layout
from engine.storage.chunks import FileEntry, content_hash
from engine.storage.files import check_name, tree_clash
from engine.storage.log import Event, pack

HASH_BUDGET_BASE = 64 << 30
HASH_BUDGET_PER_BYTE = 256
"""Bytes an import may hash to verify files: the base plus this many per
stream byte. Files made of one chunk repeated (a huge array of zeros)
legitimately hash more than they weigh in the stream; past this, the stream
is refused as an amplification attempt."""


@dataclass
class NameInfo:
    """What an import needs to know about one artifact name in the stream."""

    labels: set[str] = field(default_factory=set)  # string versions
    max_int: int | None = None  # largest integer version


@dataclass
class Plan:
    """A validated stream: what the import passes need, and nothing per event
    but its place in the file."""

    path: Path
    header: dict[str, Any]
    chunks: dict[bytes, tuple[int, int]]  # key -> (offset of the bytes, length)
    absent: set[bytes]
    artifacts: set[str]  # ids written
    incomplete: set[str]  # ids with chunks absent from the stream
    run_ids: set[str]
    step_ids: set[str]
    names: dict[str, NameInfo]
    event_at: array[int]  # file offsets of the events to import, in order
    written_at: array[int]  # ... of the artifact.written events among them
    events_digest: bytes  # over those frames' checksums (a later pass re-checks)
    written_digest: bytes
    event_bytes: int = 0
    hashed_bytes: int = 0
    max_ts: int | None = None

    @property
    def events(self) -> int:
        return len(self.event_at)

    def read_events(self, f: IO[bytes], *, written_only: bool = False) -> Iterator[Event]:
        """The events again (or only the ``artifact.written`` ones), read from the
        file and checked to be the very frames validated."""
        offsets = self.written_at if written_only else self.event_at
        h = xxhash.xxh3_128()
        for i, off in enumerate(offsets, 1):
            payload, check = frame_at(f, self.path, off)
            h.update(check)
            env = unpack_map(self.path, payload, f"event at offset {off}")
            yield check_event(self.path, i, env, max_ts=None)
        want = self.written_digest if written_only else self.events_digest
        if h.digest() != want:
            raise bad(self.path, "its events changed while being imported")


def scan(
    path: Path,
    *,
    allow_absent: bool = False,
    check_clock: bool = True,
    progress: Progress | None = None,
) -> Plan:
    """Validate the stream at ``path`` completely (see the module docstring).

    ``allow_absent`` accepts live artifact versions whose chunks the source
    no longer held; ``check_clock`` refuses events stamped more than
    ``MAX_CLOCK_SKEW_NS`` past this machine's clock."""
    f, preamble = open_stream(path)
    with f, ChunkSource(path, {}) as source:
        v = _Validator(path, source, allow_absent=allow_absent, check_clock=check_clock)
        source.chunks = v.chunks
        running = xxhash.xxh3_128(preamble)
        total = path.stat().st_size
        v.budget = HASH_BUDGET_BASE + HASH_BUDGET_PER_BYTE * total
        for index, pos, kind, payload, check in frames(f, path):
            if kind == ord("T"):
                trailer = unpack_map(path, payload, "trailer")
                if trailer.get("hash") != running.hexdigest():
                    raise bad(path, "the trailer's running hash does not match the stream")
                v.trailer = trailer
            else:
                running.update(check)
                v.frame(index, pos, kind, payload, check)
            if progress is not None and index % 256 == 0:
                progress("read", pos, total)
        plan = v.finish()
    if progress is not None:
        progress("read", total, total)
    return plan


class _Validator:
    def __init__(
        self, path: Path, source: ChunkSource, *, allow_absent: bool, check_clock: bool
    ) -> None:
        self.path = path
        self.source = source
        self.allow_absent = allow_absent
        self.max_ts = time.time_ns() + MAX_CLOCK_SKEW_NS if check_clock else None
        self.header: dict[str, Any] | None = None
        self.trailer: dict[str, Any] | None = None
        self.chunks: dict[bytes, tuple[int, int]] = {}
        self.absent: set[bytes] = set()
        self.chunk_bytes = 0
        self.e_frames = 0
        self.event_bytes = 0
        self.event_at: array[int] = array("Q")
        self.written_at: array[int] = array("Q")
        self.events_hash = xxhash.xxh3_128()
        self.written_hash = xxhash.xxh3_128()
        self.runs: set[str] = set()
        self.steps: set[str] = set()
        self.arts: set[str] = set()
        self.deleted: set[str] = set()
        self.incomplete: dict[str, str] = {}  # id -> label
        self.versions: set[bytes] = set()
        self.names: dict[str, NameInfo] = {}
        # References to runs and step runs not started (yet): id -> where
        self.forward: dict[tuple[str, str], str] = {}
        # Artifacts whose manifests name chunks not seen (yet)
        self.pending: list[tuple[str, str, list[FileEntry]]] = []
        self.verified: set[bytes] = set()
        self.hashed = 0
        self.budget = 0

    # -- frames ------------------------------------------------------------------
    def frame(self, index: int, pos: int, kind: int, payload: bytes, check: bytes) -> None:
        path = self.path
        if index == 0 and kind != ord("H"):
            raise bad(path, "the first frame is not the stream header")
        if kind == ord("H"):
            if index != 0:
                raise bad(path, f"a second header at offset {pos}")
            header = unpack_map(path, payload, "header")
            if header.get("format") != FORMAT:
                raise bad(path, f"header format {header.get('format')!r} is not {FORMAT}")
            self.header = header
        elif kind == ord("E"):
            self.e_frames += 1
            env = unpack_map(path, payload, f"event {self.e_frames}")
            e = check_event(path, self.e_frames, env, max_ts=self.max_ts)
            if e.type != STORE_CREATED:
                self.event(e)
                self.event_bytes += len(payload)
                self.event_at.append(pos)
                self.events_hash.update(check)
                if e.type == ARTIFACT_WRITTEN:
                    self.written_at.append(pos)
                    self.written_hash.update(check)
        else:  # C or A
            n = len(payload)
            if n < 16 or (kind == ord("A") and n != 16):
                raise bad(path, f"chunk frame {index} at offset {pos} is malformed")
            key = payload[:16]
            if key in self.chunks or key in self.absent:
                raise bad(path, f"chunk {key.hex()} appears twice in the stream")
            if kind == ord("A"):
                self.absent.add(key)
            else:
                if xxhash.xxh3_128(memoryview(payload)[16:]).digest() != key:
                    raise bad(path, f"chunk {key.hex()}: its bytes do not match its key")
                self.chunks[key] = (pos + FRAME.size + 16, n - 16)
                self.chunk_bytes += n - 16

    # -- events ------------------------------------------------------------------
    def _refer(self, kind: str, ident: str, where: str) -> None:
        started = self.runs if kind == "run" else self.steps
        if ident not in started:
            self.forward.setdefault((kind, ident), where)

    def event(self, e: Event) -> None:
        path, d = self.path, e.data
        where = f"event {e.seq} of the stream ({e.type})"
        if e.type == RUN_STARTED:
            if d["id"] in self.runs:
                raise bad(path, f"event {e.seq} of the stream starts run {d['id']} twice")
            self.runs.add(d["id"])
        elif e.type in (STEP_STARTED, STEP_CACHED, STEP_SKIPPED):
            if d["id"] in self.steps:
                raise bad(path, f"event {e.seq} of the stream starts step {d['id']} twice")
            self.steps.add(d["id"])
        if e.type == ARTIFACT_WRITTEN:
            self.artifact(where, d)
        elif e.type.startswith("artifact.") or e.type == METADATA_LOGGED:
            if d["id"] not in self.arts:
                raise bad(path, f"{where} refers to artifact {d['id']} the stream does not write")
            if e.type == ARTIFACT_DELETED:
                self.deleted.add(d["id"])
        elif e.type.startswith("run."):
            self._refer("run", d["id"], where)
        elif e.type.startswith("step."):
            self._refer("step", d["id"], where)
            self._refer("run", d["run"], where)

    def artifact(self, where: str, d: dict[str, Any]) -> None:
        path = self.path
        aid = d["id"]
        if aid in self.arts:
            raise bad(path, f"{where} writes artifact id {aid} a second time")
        name, version = d["name"], d["version"]
        if not name or "\x00" in name or len(name) > MAX_NAME:
            raise bad(path, f"{where} has an invalid artifact name {name!r:.80}")
        if isinstance(version, str) and (not version or "\x00" in version):
            raise bad(path, f"{where} has an invalid version {version!r:.80}")
        if isinstance(version, int) and not MIN_VERSION <= version <= MAX_VERSION:
            raise bad(
                path,
                f"{where} has an out-of-range version {version} (integer versions lie "
                f"between {MIN_VERSION} and {MAX_VERSION})",
            )
        info = self.names.get(name)
        if info is None:
            info = self.names[name] = NameInfo()
        nv = xxhash.xxh3_128(pack([name, version])).digest()  # 16 bytes per version
        if nv in self.versions:
            raise bad(path, f"{where} writes {name}:{version} a second time")
        self.versions.add(nv)
        if isinstance(version, str):
            info.labels.add(version)
        elif info.max_int is None or version > info.max_int:
            info.max_int = version
        if not _HEX32.match(d["content_hash"]):
            raise bad(path, f"{where} has an invalid content hash {d['content_hash']!r:.80}")
        entries = [self._file(where, frec) for frec in d["files"]]
        vis: list[FileEntry] = []
        for rec in d["visualizations"]:
            if not (
                isinstance(rec, list) and len(rec) == 3 and all(isinstance(x, str) for x in rec[:2])
            ):
                raise bad(path, f"{where} has a malformed visualization record")
            vis.append(self._file(where, rec[2]))
        total = sum(e.size for e in entries)
        if total != d["size"]:
            raise bad(path, f"{where} declares size {d['size']} but its files hold {total} bytes")
        names = [e.name for e in entries]
        if len(set(names)) != len(names):
            raise bad(path, f"{where} lists a file twice")
        clash = tree_clash(names)
        if clash is not None:
            raise bad(path, f"{where} has a file {clash[0]!r} and a file {clash[1]!r} under it")
        if content_hash(entries) != d["content_hash"]:
            raise bad(path, f"{where}: its content hash does not match its manifest")
        if d["producer"] is not None:
            self._refer("step", d["producer"], where)
        if d["run"] is not None:
            self._refer("run", d["run"], where)
        self.arts.add(aid)
        label = f"artifact {name}:{version}"
        if all(k in self.chunks or k in self.absent for e in entries + vis for k in e.chunks):
            self._contents(label, aid, entries + vis)
        else:
            self.pending.append((label, aid, entries + vis))

    def _file(self, where: str, frec: Any) -> FileEntry:
        path = self.path
        if not (isinstance(frec, list) and len(frec) in (4, 5)):
            raise bad(path, f"{where} has a malformed manifest entry")
        name, size, fhash, keys = frec[:4]
        layout = frec[4] if len(frec) == 5 else None
        if not isinstance(name, str):
            raise bad(path, f"{where} has a non-string file name")
        try:
            check_name(name)
        except MaterializerError:
            raise bad(
                path, f"{where} has an unsafe file name {name!r:.80} (absolute, '..' or NUL)"
            ) from None
        if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_FILE:
            raise bad(path, f"{where} file {name!r} declares an absurd size {size!r:.40}")
        if not isinstance(fhash, str) or not _HEX32.match(fhash):
            raise bad(path, f"{where} file {name!r} has an invalid hash")
        if not isinstance(keys, list) or not all(
            isinstance(k, bytes) and len(k) == 16 for k in keys
        ):
            raise bad(path, f"{where} file {name!r} has malformed chunk keys")
        problem = None if layout is None else check_layout(layout)
        if problem is not None:
            raise bad(path, f"{where} file {name!r}: {problem}")
        entry = FileEntry(name, size, fhash, keys, layout or None)
        self._held(where, entry)
        return entry

    def _held(self, where: str, entry: FileEntry) -> bool:
        """Whether every chunk of ``entry`` is in the stream (seen so far); if so,
        they must add up to its declared size."""
        chunks = self.chunks
        if not all(k in chunks for k in entry.chunks):
            return False
        held = sum(chunks[k][1] for k in entry.chunks)
        if held != entry.size:
            raise bad(
                self.path,
                f"{where} file {entry.name!r} declares {entry.size} bytes but its chunks "
                f"hold {held}",
            )
        return True

    def _contents(self, label: str, aid: str, entries: list[FileEntry]) -> None:
        """Sizes against the chunks, file hashes, completeness (every chunk known)."""
        path = self.path
        complete = True
        for entry in entries:
            if self._held(label, entry):
                continue
            complete = False
            for k in entry.chunks:
                if k not in self.chunks and k not in self.absent:
                    raise bad(
                        path,
                        f"{label} file {entry.name!r} needs chunk {k.hex()}, not in the stream",
                    )
        if not complete:
            self.incomplete[aid] = label
            return
        for entry in entries:
            self._verify_hash(label, entry)

    def _verify_hash(self, label: str, entry: FileEntry) -> None:
        """Hash a file once per distinct content (its size and chunk keys)."""
        ident = xxhash.xxh3_128(entry.size.to_bytes(8, "big") + b"".join(entry.chunks)).digest()
        ident += bytes.fromhex(entry.hash)
        if ident in self.verified:
            return
        if self.hashed + entry.size > self.budget:
            raise bad(
                self.path,
                f"verifying its files would hash more than {self.budget} bytes for a "
                f"{self.path.stat().st_size}-byte stream ({label} file {entry.name!r} "
                "repeats chunks over and over): refused as an amplification attempt. If the "
                "stream is genuine, raise engine.ops.stream_scan.HASH_BUDGET_PER_BYTE",
            )
        self.hashed += entry.size
        h = xxhash.xxh3_128()
        for k in entry.chunks:
            h.update(self.source.get(k))
        if h.hexdigest() != entry.hash:
            raise bad(self.path, f"{label} file {entry.name!r}: its bytes do not match its hash")
        self.verified.add(ident)

    # -- the end ---------------------------------------------------------------------
    def finish(self) -> Plan:
        path = self.path
        if self.header is None:
            raise bad(path, "empty stream (no header)")
        if self.trailer is None:
            raise bad(path, "truncated: the stream has no trailer")
        t = self.trailer
        want = (t.get("events"), t.get("chunks"), t.get("absent"), t.get("chunk_bytes"))
        got = (self.e_frames, len(self.chunks), len(self.absent), self.chunk_bytes)
        if want != got:
            raise bad(
                path,
                f"the trailer counts {want} do not match the stream's contents {got} "
                "(events, chunks, absent chunks, chunk bytes)",
            )
        for (kind, ident), where in self.forward.items():
            if ident not in (self.runs if kind == "run" else self.steps):
                what = "run" if kind == "run" else "step run"
                raise bad(path, f"{where} refers to {what} {ident}, which the stream never starts")
        for label, aid, entries in self.pending:
            self._contents(label, aid, entries)
        if not self.allow_absent:
            for aid, label in self.incomplete.items():
                if aid not in self.deleted:
                    raise bad(
                        path,
                        f"{label} (id {aid}) is live but some of its chunks are absent from "
                        "the stream",
                    )
        return Plan(
            path=path,
            header=self.header,
            chunks=self.chunks,
            absent=self.absent,
            artifacts=self.arts,
            incomplete=set(self.incomplete),
            run_ids=self.runs,
            step_ids=self.steps,
            names=self.names,
            event_at=self.event_at,
            written_at=self.written_at,
            events_digest=self.events_hash.digest(),
            written_digest=self.written_hash.digest(),
            event_bytes=self.event_bytes,
            hashed_bytes=self.hashed,
            max_ts=self.max_ts,
        )
