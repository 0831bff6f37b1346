"""The export stream's format: framing, checksums, event schemas and validation.

See :mod:`engine.transfer` for the format and the rules an import enforces.
Nothing here touches a store: :func:`read_stream` checks the framing of a
file and :func:`validate` everything else, so a stream is judged completely
before an import writes anything.
"""

from __future__ import annotations

import hashlib
import os
import re
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO

import msgpack
import xxhash

from engine.artifact_files import check_name
from engine.chunks import FileEntry, content_hash
from engine.errors import ArtledgerError, ImportValidationError, MaterializerError
from engine.log import Event, upcast
from engine.projections import HANDLERS

MAGIC = b"ALEXPORT"
FORMAT = 1
PREAMBLE = struct.Struct(">8sHH")
FRAME = struct.Struct(">BI")
CHECK = 16
MAX_EVENT = 64 << 20
MAX_CHUNK = 256 << 20
MAX_HEADER = 1 << 20
MAX_FILE = 1 << 46
MAX_NAME = 512
ABSENT_PERSON = b"artledger-absent"

_HEX = re.compile(r"^[0-9a-f]+$")
_HEX32 = re.compile(r"^[0-9a-f]{32}$")

Progress = Callable[[str, int, int], None]

# -- writing -------------------------------------------------------------------------


class Writer:
    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        self.running = xxhash.xxh3_128()
        self.size = 0

    def raw(self, data: bytes) -> None:
        self.f.write(data)
        self.running.update(data)
        self.size += len(data)

    def frame(self, kind: bytes, *parts: bytes | memoryview) -> None:
        n = sum(len(p) for p in parts)
        head = FRAME.pack(kind[0], n)
        h = xxhash.xxh3_128(head)
        self.f.write(head)
        for p in parts:
            h.update(p)
            self.f.write(p)
        check = h.digest()
        self.f.write(check)
        self.running.update(check)
        self.size += FRAME.size + n + CHECK


def absent_key(digest: bytes) -> bytes:
    return hashlib.blake2b(digest, digest_size=16, person=ABSENT_PERSON).digest()


def manifests(data: dict[str, Any]) -> list[list[Any]]:
    """Every file record of an ``artifact.written`` event (files and visualizations)."""
    out = list(data.get("files") or [])
    out += [v[2] for v in data.get("visualizations") or []]
    return out


# -- reading and validation ------------------------------------------------------------


def bad(path: Path, msg: str) -> ImportValidationError:
    return ImportValidationError(f"{path}: {msg}; nothing was imported")


@dataclass
class Stream:
    path: Path
    header: dict[str, Any]
    events: list[dict[str, Any]]
    chunks: dict[bytes, tuple[int, int]]  # key -> (offset of the bytes, length)
    absent: set[bytes]


def read_stream(path: Path, progress: Progress | None) -> Stream:
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError as e:
        raise ImportValidationError(f"cannot read the export stream {path}: {e}") from e
    with f:
        total = os.fstat(f.fileno()).st_size
        pre = f.read(PREAMBLE.size)
        if len(pre) != PREAMBLE.size:
            raise bad(path, "not an artledger export stream (too short)")
        magic, version, _flags = PREAMBLE.unpack(pre)
        if magic != MAGIC:
            raise bad(path, "not an artledger export stream (bad magic)")
        if version != FORMAT:
            raise bad(
                path,
                f"stream format version {version} is not supported (this artledger reads "
                f"version {FORMAT}); export it again with a matching artledger",
            )
        running = xxhash.xxh3_128(pre)
        header: dict[str, Any] | None = None
        events: list[dict[str, Any]] = []
        chunks: dict[bytes, tuple[int, int]] = {}
        absent: set[bytes] = set()
        trailer: dict[str, Any] | None = None
        chunk_bytes = 0
        pos = PREAMBLE.size
        index = 0
        while True:
            head = f.read(FRAME.size)
            if not head:
                break
            if trailer is not None:
                raise bad(path, f"unexpected bytes after the trailer at offset {pos}")
            if len(head) != FRAME.size:
                raise bad(path, f"truncated: frame {index} at offset {pos} is cut off")
            kind, n = FRAME.unpack(head)
            cap = {ord("H"): MAX_HEADER, ord("T"): MAX_HEADER, ord("E"): MAX_EVENT}.get(
                kind, MAX_CHUNK + 16
            )
            if kind not in b"HTECA":
                raise bad(path, f"frame {index} at offset {pos} has unknown kind {kind!r}")
            if n > cap:
                raise bad(path, f"frame {index} at offset {pos} declares {n} bytes (limit {cap})")
            if pos + FRAME.size + n + CHECK > total:
                raise bad(path, f"truncated: frame {index} at offset {pos} runs past the end")
            payload = f.read(n)
            check = f.read(CHECK)
            if len(payload) != n or len(check) != CHECK:
                raise bad(path, f"truncated: frame {index} at offset {pos} is cut off")
            h = xxhash.xxh3_128(head)
            h.update(payload)
            if h.digest() != check:
                raise bad(
                    path, f"frame {index} at offset {pos} fails its checksum (damaged or altered)"
                )
            if kind == ord("T"):
                trailer = _unpack_map(path, payload, "trailer")
                if trailer.get("hash") != running.hexdigest():
                    raise bad(path, "the trailer's running hash does not match the stream")
            else:
                running.update(check)
            if index == 0 and kind != ord("H"):
                raise bad(path, "the first frame is not the stream header")
            if kind == ord("H"):
                if index != 0:
                    raise bad(path, f"a second header at offset {pos}")
                header = _unpack_map(path, payload, "header")
                if header.get("format") != FORMAT:
                    raise bad(path, f"header format {header.get('format')!r} is not {FORMAT}")
            elif kind == ord("E"):
                env = _unpack_map(path, payload, f"event {len(events) + 1}")
                events.append(env)
            elif kind in (ord("C"), ord("A")):
                if n < 16 or (kind == ord("A") and n != 16):
                    raise bad(path, f"chunk frame {index} at offset {pos} is malformed")
                key = payload[:16]
                if key in chunks or key in absent:
                    raise bad(path, f"chunk {key.hex()} appears twice in the stream")
                if kind == ord("A"):
                    absent.add(key)
                else:
                    if xxhash.xxh3_128(memoryview(payload)[16:]).digest() != key:
                        raise bad(path, f"chunk {key.hex()}: its bytes do not match its key")
                    chunks[key] = (pos + FRAME.size + 16, n - 16)
                    chunk_bytes += n - 16
            pos += FRAME.size + n + CHECK
            index += 1
            if progress is not None and index % 256 == 0:
                progress("read", pos, total)
    if header is None:
        raise bad(path, "empty stream (no header)")
    if trailer is None:
        raise bad(path, "truncated: the stream has no trailer")
    want = (
        trailer.get("events"),
        trailer.get("chunks"),
        trailer.get("absent"),
        trailer.get("chunk_bytes"),
    )
    got = (len(events), len(chunks), len(absent), chunk_bytes)
    if want != got:
        raise bad(
            path,
            f"the trailer counts {want} do not match the stream's contents {got} "
            "(events, chunks, absent chunks, chunk bytes)",
        )
    if progress is not None:
        progress("read", total, total)
    return Stream(path, header, events, chunks, absent)


def _unpack_map(path: Path, payload: bytes, what: str) -> dict[str, Any]:
    try:
        obj = msgpack.unpackb(payload, raw=False, strict_map_key=False)
    except Exception as e:
        raise bad(path, f"{what} cannot be decoded ({e})") from None
    if not isinstance(obj, dict):
        raise bad(path, f"{what} is not a map")
    return obj


# -- event schemas -------------------------------------------------------------------

_STR, _INT, _LIST, _DICT = (str,), (int,), (list,), (dict,)
_OPT_STR = (str, type(None))
_VERSION = (int, str)

# Required fields per event type (after upcasting), and their types.
SCHEMAS: dict[str, dict[str, tuple[type, ...]]] = {
    "artifact.written": {
        "id": _STR,
        "name": _STR,
        "version": _VERSION,
        "content_hash": _STR,
        "data_type": _STR,
        "materializer": _STR,
        "materializer_version": _INT,
        "artifact_type": _STR,
        "files": _LIST,
        "visualizations": _LIST,
        "state": _DICT,
        "metadata": _DICT,
        "user_metadata": _DICT,
        "tags": _LIST,
        "producer": _OPT_STR,
        "run": _OPT_STR,
        "size": _INT,
    },
    "artifact.tagged": {"id": _STR, "tags": _LIST},
    "artifact.untagged": {"id": _STR, "tags": _LIST},
    "metadata.logged": {"id": _STR, "metadata": _DICT},
    "artifact.deleted": {"id": _STR},
    "run.started": {"id": _STR, "pipeline": _STR},
    "run.completed": {"id": _STR},
    "run.failed": {"id": _STR},
    "run.deleted": {"id": _STR},
    "step.started": {"id": _STR, "run": _STR, "invocation": _STR, "step": _STR},
    "step.cached": {"id": _STR, "run": _STR, "invocation": _STR, "step": _STR},
    "step.skipped": {"id": _STR, "run": _STR, "invocation": _STR, "step": _STR},
    "step.completed": {"id": _STR, "run": _STR},
    "step.failed": {"id": _STR, "run": _STR},
    "gc.completed": {"chunks": _INT, "bytes": _INT},
}
_ID_MAPS = {"step.completed": ("inputs", "outputs"), "step.cached": ("inputs", "outputs")}


def known_types() -> set[str]:
    """Event types an import accepts: those with a schema here or a fold function."""
    return set(SCHEMAS) | set(HANDLERS) | {"store.created"}


def _check_event(path: Path, i: int, env: dict[str, Any]) -> Event:
    where = f"event {i} of the stream"
    etype, v, ts, data = env.get("type"), env.get("v"), env.get("ts"), env.get("data")
    if set(env) != {"type", "v", "ts", "data"}:
        raise bad(path, f"{where} has envelope fields {sorted(map(str, env))}")
    if not isinstance(etype, str) or etype not in known_types():
        raise bad(path, f"{where} has an unknown type {etype!r}")
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise bad(path, f"{where} ({etype}) has an invalid schema version {v!r}")
    if not isinstance(ts, int) or isinstance(ts, bool) or not 0 <= ts < 1 << 63:
        raise bad(path, f"{where} ({etype}) has an invalid timestamp {ts!r}")
    if not isinstance(data, dict):
        raise bad(path, f"{where} ({etype}) has no data map")
    try:
        data = upcast(etype, v, data)
    except ArtledgerError as e:
        raise bad(path, f"{where}: {e}") from None
    for key, types in SCHEMAS.get(etype, {}).items():
        value = data.get(key)
        if key not in data or not isinstance(value, types) or isinstance(value, bool):
            raise bad(
                path,
                f"{where} ({etype}) field {key!r} must be "
                f"{' or '.join(t.__name__ for t in types)}, not {value!r:.80}",
            )
    for key in ("id", "run"):
        value = data.get(key)
        if isinstance(value, str) and not (0 < len(value) <= 128 and _HEX.match(value)):
            raise bad(path, f"{where} ({etype}) field {key!r} is not a hex id: {value!r:.80}")
    for key in _ID_MAPS.get(etype, ()):
        value = data.get(key, {})
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(x, str) for k, x in value.items()
        ):
            raise bad(path, f"{where} ({etype}) field {key!r} must map names to ids")
    if etype in ("artifact.tagged", "artifact.untagged") or etype == "artifact.written":
        tags = data["tags"]
        if not all(isinstance(t, str) and t and "\x00" not in t for t in tags):
            raise bad(path, f"{where} ({etype}) has an invalid tag in {tags!r:.80}")
    return Event(i, etype, data, ts)


def _check_artifact(s: Stream, where: str, d: dict[str, Any]) -> list[FileEntry]:
    path = s.path
    name = d["name"]
    if not name or "\x00" in name or len(name) > MAX_NAME:
        raise bad(path, f"{where} has an invalid artifact name {name!r:.80}")
    if isinstance(d["version"], str) and (not d["version"] or "\x00" in d["version"]):
        raise bad(path, f"{where} has an invalid version {d['version']!r:.80}")
    if not _HEX32.match(d["content_hash"]):
        raise bad(path, f"{where} has an invalid content hash {d['content_hash']!r:.80}")
    entries: list[FileEntry] = []
    total = 0
    for frec in d["files"]:
        entries.append(_check_file(s, where, frec))
        total += entries[-1].size
    for vis in d["visualizations"]:
        if not (
            isinstance(vis, list) and len(vis) == 3 and all(isinstance(x, str) for x in vis[:2])
        ):
            raise bad(path, f"{where} has a malformed visualization record")
        _check_file(s, where, vis[2])
    if total != d["size"]:
        raise bad(path, f"{where} declares size {d['size']} but its files hold {total} bytes")
    names = [e.name for e in entries]
    if len(set(names)) != len(names):
        raise bad(path, f"{where} lists a file twice")
    if content_hash(entries) != d["content_hash"]:
        raise bad(path, f"{where}: its content hash does not match its manifest")
    return entries


def _check_file(s: Stream, where: str, frec: Any) -> FileEntry:
    path = s.path
    if not (isinstance(frec, list) and len(frec) == 4):
        raise bad(path, f"{where} has a malformed manifest entry")
    name, size, fhash, keys = frec
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
    if not isinstance(keys, list) or not all(isinstance(k, bytes) and len(k) == 16 for k in keys):
        raise bad(path, f"{where} file {name!r} has malformed chunk keys")
    if all(k in s.chunks for k in keys):
        held = sum(s.chunks[k][1] for k in keys)
        if held != size:
            raise bad(
                path, f"{where} file {name!r} declares {size} bytes but its chunks hold {held}"
            )
    for k in keys:
        if k not in s.chunks and k not in s.absent:
            raise bad(path, f"{where} file {name!r} needs chunk {k.hex()}, not in the stream")
    return FileEntry(name, size, fhash, list(keys))


def chunk_reader(f: IO[bytes], s: Stream, keys: list[bytes]) -> Iterator[bytes]:
    for k in keys:
        off, n = s.chunks[k]
        f.seek(off)
        data = f.read(n)
        if len(data) != n or xxhash.xxh3_128(data).digest() != k:
            raise bad(s.path, f"chunk {k.hex()} changed while being imported")
        yield data


@dataclass
class Plan:
    events: list[Event]
    artifacts: dict[str, dict[str, Any]]  # id -> artifact.written data (upcast)
    complete: set[str]  # artifact ids whose chunks are all in the stream
    run_ids: set[str]
    step_ids: set[str]


def validate(s: Stream, *, allow_absent: bool, progress: Progress | None) -> Plan:
    path = s.path
    events = [_check_event(path, i, env) for i, env in enumerate(s.events, 1)]
    events = [e for e in events if e.type != "store.created"]
    arts: dict[str, dict[str, Any]] = {}
    runs: set[str] = set()
    steps: set[str] = set()
    deleted: set[str] = set()
    versions: set[tuple[str, Any]] = set()
    for e in events:  # ids started anywhere in the stream may be referenced
        if e.type == "run.started":
            if e.data["id"] in runs:
                raise bad(path, f"event {e.seq} of the stream starts run {e.data['id']} twice")
            runs.add(e.data["id"])
        elif e.type in ("step.started", "step.cached", "step.skipped"):
            if e.data["id"] in steps:
                raise bad(path, f"event {e.seq} of the stream starts step {e.data['id']} twice")
            steps.add(e.data["id"])
    for e in events:
        d = e.data
        where = f"event {e.seq} of the stream ({e.type})"
        if e.type == "artifact.written":
            if d["id"] in arts:
                raise bad(path, f"{where} writes artifact id {d['id']} a second time")
            nv = (d["name"], d["version"])
            if nv in versions:
                raise bad(path, f"{where} writes {d['name']}:{d['version']} a second time")
            versions.add(nv)
            _check_artifact(s, where, d)
            if d["producer"] is not None and d["producer"] not in steps:
                raise bad(path, f"{where} names producer {d['producer']}, not in the stream")
            if d["run"] is not None and d["run"] not in runs:
                raise bad(path, f"{where} names run {d['run']}, not in the stream")
            arts[d["id"]] = d
        elif e.type.startswith("artifact.") or e.type == "metadata.logged":
            if d["id"] not in arts:
                raise bad(path, f"{where} refers to artifact {d['id']} the stream does not write")
            if e.type == "artifact.deleted":
                deleted.add(d["id"])
        elif e.type.startswith("run.") and d["id"] not in runs:
            raise bad(path, f"{where} refers to run {d['id']} the stream does not start")
        elif e.type.startswith("step.") and (d["id"] not in steps or d["run"] not in runs):
            raise bad(path, f"{where} refers to a step run or run the stream does not start")
    complete: set[str] = set()
    checked: set[tuple[str, int, str, tuple[bytes, ...]]] = set()
    total = len(arts)
    with open(path, "rb") as f:
        for n, (aid, d) in enumerate(arts.items(), 1):
            recs = [FileEntry.from_record(r) for r in manifests(d)]
            if all(k in s.chunks for r in recs for k in r.chunks):
                complete.add(aid)
                for entry in recs:
                    sig = (entry.name, entry.size, entry.hash, tuple(entry.chunks))
                    if sig in checked:
                        continue
                    h = xxhash.xxh3_128()
                    for data in chunk_reader(f, s, entry.chunks):
                        h.update(data)
                    if h.hexdigest() != entry.hash:
                        raise bad(
                            path,
                            f"artifact {d['name']}:{d['version']} file {entry.name!r}: "
                            "its bytes do not match its hash",
                        )
                    checked.add(sig)
            elif aid not in deleted and not allow_absent:
                raise bad(
                    path,
                    f"artifact {d['name']}:{d['version']} (id {aid}) is live but some of its "
                    "chunks are absent from the stream",
                )
            if progress is not None and n % 64 == 0:
                progress("validate", n, total)
    return Plan(events, arts, complete, runs, steps)
