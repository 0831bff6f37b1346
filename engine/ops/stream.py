"""The export stream's format: framing, checksums, event schemas, chunk access.

See :mod:`engine.ops.transfer` for the format and the rules an import
enforces, :mod:`engine.ops.stream_scan` for the validating pass and
:mod:`engine.events` for the event schemas. Nothing here touches a store.
"""

from __future__ import annotations

import hashlib
import os
import re
import struct
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, BinaryIO

import msgpack
import xxhash

from engine.errors import ArtledgerError, ImportValidationError
from engine.events import (
    ARTIFACT_TAGGED,
    ARTIFACT_UNTAGGED,
    ARTIFACT_WRITTEN,
    EVENT_TYPES,
    ID_MAPS,
    SCHEMAS,
)
from engine.projections import HANDLERS
from engine.storage.log import Event, upcast

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
MAX_CLOCK_SKEW_NS = 5 * 60 * 10**9
"""How far past the importing machine's clock an event may be stamped."""
CHUNK_CACHE_BYTES = 64 << 20
"""Chunk bytes an import keeps in memory for chunks referenced again soon."""

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


# -- reading ---------------------------------------------------------------------------


def bad(path: Path, msg: str) -> ImportValidationError:
    return ImportValidationError(f"{path}: {msg}; nothing was imported")


def open_stream(path: Path) -> tuple[IO[bytes], bytes]:
    """The stream file, positioned after its preamble (checked, and returned)."""
    try:
        f = open(path, "rb")  # noqa: SIM115 - the caller closes it
    except OSError as e:
        raise ImportValidationError(f"cannot read the export stream {path}: {e}") from e
    try:
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
    except BaseException:
        f.close()
        raise
    return f, pre


def frames(f: IO[bytes], path: Path) -> Iterator[tuple[int, int, int, bytes, bytes]]:
    """``(index, offset, kind, payload, check)`` for each frame after the
    preamble, every checksum verified; a trailer must be the last frame."""
    total = os.fstat(f.fileno()).st_size
    pos = PREAMBLE.size
    index = 0
    after_trailer = False
    while True:
        head = f.read(FRAME.size)
        if not head:
            return
        if after_trailer:
            raise bad(path, f"unexpected bytes after the trailer at offset {pos}")
        if len(head) != FRAME.size:
            raise bad(path, f"truncated: frame {index} at offset {pos} is cut off")
        kind, n = FRAME.unpack(head)
        if kind not in b"HTECA":
            raise bad(path, f"frame {index} at offset {pos} has unknown kind {kind!r}")
        cap = {ord("H"): MAX_HEADER, ord("T"): MAX_HEADER, ord("E"): MAX_EVENT}.get(
            kind, MAX_CHUNK + 16
        )
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
        after_trailer = kind == ord("T")
        yield index, pos, kind, payload, check
        pos += FRAME.size + n + CHECK
        index += 1


def frame_at(f: IO[bytes], path: Path, offset: int) -> tuple[bytes, bytes]:
    """``(payload, check)`` of the event frame at ``offset``, read again for a
    later pass; raises when it is no longer the frame validated there."""
    f.seek(offset)
    head = f.read(FRAME.size)
    if len(head) == FRAME.size:
        kind, n = FRAME.unpack(head)
        if kind == ord("E") and n <= MAX_EVENT:
            payload = f.read(n)
            check = f.read(CHECK)
            h = xxhash.xxh3_128(head)
            h.update(payload)
            if len(payload) == n and h.digest() == check:
                return payload, check
    raise bad(path, f"the event frame at offset {offset} changed while being imported")


def unpack_map(path: Path, payload: bytes, what: str) -> dict[str, Any]:
    try:
        obj = msgpack.unpackb(payload, raw=False, strict_map_key=False)
    except Exception as e:
        raise bad(path, f"{what} cannot be decoded ({e})") from None
    if not isinstance(obj, dict):
        raise bad(path, f"{what} is not a map")
    return obj


class ChunkSource:
    """The stream's chunks by key: read from the file and verified against
    their keys, the most recent ones kept in memory (``CHUNK_CACHE_BYTES``), so
    a chunk referenced many times in a row is read and verified once."""

    def __init__(
        self, path: Path, chunks: dict[bytes, tuple[int, int]], budget: int = CHUNK_CACHE_BYTES
    ) -> None:
        self.path = path
        self.chunks = chunks
        self.budget = budget
        self.reads = 0
        self._f = open(path, "rb")  # noqa: SIM115 - closed by close()
        self._cache: OrderedDict[bytes, bytes] = OrderedDict()
        self._cached = 0

    def get(self, key: bytes) -> bytes:
        data = self._cache.get(key)
        if data is not None:
            self._cache.move_to_end(key)
            return data
        off, n = self.chunks[key]
        self._f.seek(off)
        data = self._f.read(n)
        self.reads += 1
        if len(data) != n or xxhash.xxh3_128(data).digest() != key:
            raise bad(self.path, f"chunk {key.hex()} changed while being imported")
        if n <= self.budget:
            self._cache[key] = data
            self._cached += n
            while self._cached > self.budget:
                _, old = self._cache.popitem(last=False)
                self._cached -= len(old)
        return data

    def close(self) -> None:
        self._cache.clear()
        self._f.close()

    def __enter__(self) -> ChunkSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- event schemas (engine.events) ----------------------------------------------

_known: tuple[int, frozenset[str]] = (-1, frozenset())


def known_types() -> frozenset[str]:
    """Event types an import accepts: those with a schema here or a fold function."""
    global _known
    if _known[0] != len(HANDLERS):
        _known = (len(HANDLERS), EVENT_TYPES | set(HANDLERS))
    return _known[1]


def check_event(path: Path, i: int, env: dict[str, Any], *, max_ts: int | None) -> Event:
    """Event ``i`` of the stream, its envelope and data checked against the
    schema (and upcast); ``max_ts``: the latest timestamp accepted."""
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
    if max_ts is not None and ts > max_ts:
        raise bad(
            path,
            f"{where} ({etype}) is stamped {_iso(ts)}, more than "
            f"{MAX_CLOCK_SKEW_NS // 60_000_000_000} minutes after this machine's clock; "
            "a stream from the future would hide everything after it from "
            "as_of(datetime). Check the clocks of both machines",
        )
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
    for key in ID_MAPS.get(etype, ()):
        value = data.get(key, {})
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(x, str) for k, x in value.items()
        ):
            raise bad(path, f"{where} ({etype}) field {key!r} must map names to ids")
    if etype in (ARTIFACT_TAGGED, ARTIFACT_UNTAGGED, ARTIFACT_WRITTEN):
        tags = data["tags"]
        if not all(isinstance(t, str) and t and "\x00" not in t for t in tags):
            raise bad(path, f"{where} ({etype}) has an invalid tag in {tags!r:.80}")
    return Event(i, etype, data, ts)


def _iso(ts: int) -> str:
    import datetime as dt

    try:
        return dt.datetime.fromtimestamp(ts / 1e9, dt.timezone.utc).isoformat()
    except (OverflowError, ValueError, OSError):
        return f"{ts} ns after the epoch"
