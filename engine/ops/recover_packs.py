"""Recover, the chunks: re-index every pack record that still verifies.

Each pack segment is scanned record by record (header magic, digest, codec,
lengths); each payload is decoded and re-hashed with the store's seed. See
:mod:`engine.ops.recover`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import xxhash

from engine.errors import IntegrityError
from engine.storage.blobs import HEADER, MAGIC, Location
from engine.storage.chunks import ChunkRecord
from engine.storage.codecs import CODECS, CodecError, codec

Progress = Callable[[str, int, int], None]
_MAX_RAW = 1 << 31


@dataclass
class Packs:
    index: dict[bytes, ChunkRecord] = field(default_factory=dict)
    ends: dict[str, int] = field(default_factory=dict)
    damaged: int = 0
    max_raw: int = 0
    notes: list[str] = field(default_factory=list)


def decode_payload(codec_id: int, payload: bytes, raw_len: int) -> bytes | None:
    """The chunk ``payload`` holds under codec ``codec_id``, or None when it does not decode."""
    try:
        return codec(codec_id).decode(payload, raw_len)
    except CodecError:
        return None


def pack_records(fd: int, size: int) -> Iterator[tuple[int, bytes, int, int, int]]:
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
            and codec in CODECS
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


def scan_packs(packs: Path, seed: int | None, progress: Progress | None) -> Packs:
    out = Packs()
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
            for off, digest, codec, plen, rlen in pack_records(fd, size):
                if codec < 0:
                    out.damaged += 1
                    continue
                payload = os.pread(fd, plen, off + HEADER.size)
                raw = decode_payload(codec, payload, rlen)
                if raw is None or xxhash.xxh3_128(raw, seed=seed).digest() != digest:
                    out.damaged += 1
                    continue
                valid += 1
                end = off + HEADER.size + plen
                out.max_raw = max(out.max_raw, rlen)
                if digest not in out.index:
                    out.index[digest] = ChunkRecord(
                        codec, rlen, Location(name, off + HEADER.size, plen)
                    )
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


def pick_seed(candidates: list[int], packs: Path) -> int | None:
    """The first candidate seed under which a pack record verifies (the first
    candidate when no pack holds a record)."""
    if not candidates:
        return None
    for path in sorted(packs.glob("*.pack")) if packs.is_dir() else []:
        with contextlib.suppress(OSError):
            fd = os.open(path, os.O_RDONLY)
            try:
                size = os.fstat(fd).st_size
                for off, digest, codec, plen, rlen in pack_records(fd, size):
                    if codec < 0:
                        continue
                    raw = decode_payload(codec, os.pread(fd, plen, off + HEADER.size), rlen)
                    if raw is None:
                        continue
                    for seed in candidates:
                        if xxhash.xxh3_128(raw, seed=seed).digest() == digest:
                            return seed
            finally:
                os.close(fd)
    return candidates[0]


def inline_chunks(index: dict[bytes, list[bytes]], seed: int) -> dict[bytes, ChunkRecord]:
    """Chunks kept inline in the old chunk index (digest -> the copies of its
    record found), each checked against its digest."""
    out: dict[bytes, ChunkRecord] = {}
    for digest, copies in index.items():
        for raw in copies:
            try:
                rec = ChunkRecord.unpack(raw)
            except IntegrityError:
                continue
            if not isinstance(rec.inline, bytes) or not isinstance(rec.raw_len, int):
                continue
            data = decode_payload(rec.codec, rec.inline, rec.raw_len)
            if data is not None and xxhash.xxh3_128(data, seed=seed).digest() == digest:
                out[digest] = ChunkRecord(rec.codec, rec.raw_len, None, rec.inline)
                break
    return out
