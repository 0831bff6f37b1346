"""Reading and forging export streams in tests: frames in, valid framing out.

A forged stream has valid checksums, counts and trailer, so only the content
checks of an import (or the load of what it imported) can catch it.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import msgpack
import xxhash

from engine.ops.stream import FRAME, MAGIC, PREAMBLE, Writer
from engine.storage.chunks import FileEntry, content_hash

Frames = list[tuple[bytes, bytes]]


def read_frames(data: bytes) -> Frames:
    """The frames of a well-formed stream, without its trailer."""
    pos = PREAMBLE.size
    out = []
    while pos < len(data):
        kind, n = FRAME.unpack_from(data, pos)
        out.append((bytes([kind]), data[pos + FRAME.size : pos + FRAME.size + n]))
        pos += FRAME.size + n + 16
    return out[:-1]


def build_stream(frames: Frames) -> bytes:
    """A stream with valid checksums and trailer around ``frames``."""
    buf = io.BytesIO()
    w = Writer(buf)
    w.raw(PREAMBLE.pack(MAGIC, 1, 0))
    counts = {b"E": 0, b"C": 0, b"A": 0}
    chunk_bytes = 0
    for kind, payload in frames:
        w.frame(kind, payload)
        counts[kind] = counts.get(kind, 0) + 1
        if kind == b"C":
            chunk_bytes += len(payload) - 16
    trailer = {
        "events": counts[b"E"],
        "chunks": counts[b"C"],
        "absent": counts[b"A"],
        "chunk_bytes": chunk_bytes,
        "hash": w.running.hexdigest(),
    }
    w.frame(b"T", msgpack.packb(trailer, use_bin_type=True))
    return buf.getvalue()


def unpack(payload: bytes) -> dict[str, Any]:
    out: dict[str, Any] = msgpack.unpackb(payload, raw=False, strict_map_key=False)
    return out


def pack(obj: Any) -> bytes:
    out: bytes = msgpack.packb(obj, use_bin_type=True)
    return out


def edit_artifact(frames: Frames, name: str, change: Callable[[dict[str, Any]], None]) -> Frames:
    """``frames`` with ``change`` applied to the envelope of artifact ``name``'s
    ``artifact.written`` event (``change(env)``; the data is ``env["data"]``)."""
    out = list(frames)
    for i, (kind, payload) in enumerate(out):
        if kind == b"E":
            env = unpack(payload)
            if env["type"] == "artifact.written" and env["data"]["name"] == name:
                change(env)
                out[i] = (b"E", pack(env))
                return out
    raise AssertionError(f"no artifact.written for {name}")


def chunk(frames: Frames, key: bytes) -> bytes:
    return next(p[16:] for k, p in frames if k == b"C" and p[:16] == key)


def replace_file(frames: Frames, name: str, file: str, data: bytes) -> Frames:
    """``frames`` with file ``file`` of artifact ``name`` holding ``data`` (one
    chunk), its chunk frame, file hash and the artifact's content hash updated."""
    key = xxhash.xxh3_128(data).digest()
    out = list(frames)

    def change(env: dict[str, Any]) -> None:
        d = env["data"]
        for rec in d["files"]:
            if rec[0] == file:
                rec[1], rec[2], rec[3] = len(data), xxhash.xxh3_128(data).hexdigest(), [key]
        entries = [FileEntry.from_record(r) for r in d["files"]]
        d["content_hash"] = content_hash(entries)
        d["size"] = sum(e.size for e in entries)

    out = edit_artifact(out, name, change)
    first_event = next(i for i, (k, _) in enumerate(out) if k == b"E")
    out.insert(first_event, (b"C", key + data))
    return out


def file_bytes(frames: Frames, name: str, file: str) -> bytes:
    """The bytes of file ``file`` of artifact ``name`` in the stream."""
    for kind, payload in frames:
        if kind == b"E":
            env = unpack(payload)
            if env["type"] == "artifact.written" and env["data"]["name"] == name:
                rec = next(r for r in env["data"]["files"] if r[0] == file)
                return b"".join(chunk(frames, k) for k in rec[3])
    raise AssertionError(f"no file {file} in {name}")
