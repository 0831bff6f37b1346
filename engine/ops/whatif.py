"""What-if replay: the store's whole history re-chunked and re-compressed under
another policy, in memory, without writing anything.

Every artifact version whose chunks the store still holds is read back
(verified, a block at a time) and streamed through the same
:class:`~engine.storage.chunks.ChunkWriter` a save uses, over a chunk store
whose blob store keeps no payloads: only each distinct chunk's record (its
codec and stored length) is kept, so memory grows with the number of distinct
chunks, never with the bytes. The figures are what a re-save of every version,
in history order, under the policy would store, per artifact name, next to
what the store holds for the same versions today.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from engine.errors import InvalidArgumentError
from engine.projections.records import manifests, record
from engine.storage.blobs.memory import MemoryBlobStore
from engine.storage.cdc import STRATEGIES
from engine.storage.chunk_records import ChunkRecord, FileEntry
from engine.storage.chunks import ChunkStore

if TYPE_CHECKING:
    from engine.storage.blobs import Location
    from engine.store import Store

Progress = Callable[[str, int, int], None]
CODEC_POLICIES = ("auto", "zstd", "raw")
"""``auto``: the sample test among raw, zstd and shuffle+zstd (a save's own
choice); ``zstd``: among raw and zstd only (no shuffling); ``raw``: no compression."""
READ_BLOCK = 16 << 20


@dataclass
class WhatIfName:
    """One artifact name's versions: logical bytes, and stored bytes (and
    distinct chunks) now and under the policy. A chunk shared by several
    names counts for the first that stored it, as in a real save."""

    name: str
    versions: int = 0
    logical: int = 0
    stored_now: int = 0
    stored_what_if: int = 0
    chunks_now: int = 0
    chunks_what_if: int = 0
    seconds: float = 0.0

    @property
    def dedup_now(self) -> float:
        """Logical bytes per stored byte today."""
        return self.logical / self.stored_now if self.stored_now else 0.0

    @property
    def dedup_what_if(self) -> float:
        """Logical bytes per stored byte under the policy."""
        return self.logical / self.stored_what_if if self.stored_what_if else 0.0


@dataclass
class WhatIfReport:
    """What :func:`what_if` found: the policy, one entry per artifact name
    (sorted), versions skipped because their chunks are gone, and the time."""

    policy: dict[str, Any]
    names: list[WhatIfName] = field(default_factory=list)
    skipped: int = 0
    seconds: float = 0.0

    def total(self) -> WhatIfName:
        out = WhatIfName("(all)")
        for n in self.names:
            for key in ("versions", "logical", "stored_now", "stored_what_if"):
                setattr(out, key, getattr(out, key) + getattr(n, key))
            out.chunks_now += n.chunks_now
            out.chunks_what_if += n.chunks_what_if
            out.seconds += n.seconds
        return out

    def to_dict(self) -> dict[str, Any]:
        rows = [*self.names, self.total()]
        return {
            "policy": self.policy,
            "skipped": self.skipped,
            "seconds": self.seconds,
            "names": [
                asdict(n) | {"dedup_now": n.dedup_now, "dedup_what_if": n.dedup_what_if}
                for n in rows
            ],
        }


class _Counting(MemoryBlobStore):
    """A blob store that keeps nothing: a what-if counts, it does not store."""

    def put(self, digest: bytes, codec: int, raw_len: int, payload: Any) -> Location:
        with self._lock:
            self._next += 1
            return self.location(self._next, len(payload))

    @staticmethod
    def location(n: int, length: int) -> Location:
        from engine.storage.blobs import Location

        return Location("what-if", n, length)


class _Scratch(ChunkStore):
    """A chunk store that knows no chunk but those of its own session."""

    def lookup(self, digest: bytes) -> ChunkRecord | None:
        return None


def check_policy(
    chunking: str | None, chunk_size: int | None, codec: str, level: int | None
) -> None:
    """Raise ``InvalidArgumentError`` for a policy no store could write."""
    if chunking is not None and chunking not in STRATEGIES:
        raise InvalidArgumentError(f"chunking {chunking!r}: use one of {', '.join(STRATEGIES)}")
    if chunk_size is not None and not (64 << 10) <= chunk_size <= (16 << 20):
        raise InvalidArgumentError(f"chunk size {chunk_size}: give 64 KiB to 16 MiB")
    if codec not in CODEC_POLICIES:
        raise InvalidArgumentError(f"codec {codec!r}: use one of {', '.join(CODEC_POLICIES)}")
    if level is not None and not 1 <= level <= 22:
        raise InvalidArgumentError(f"level {level}: zstd levels are 1 to 22")


def what_if(
    store: Store,
    *,
    chunking: str | None = None,
    chunk_size: int | None = None,
    codec: str = "auto",
    level: int | None = None,
    progress: Progress | None = None,
) -> WhatIfReport:
    """Replay every stored artifact version under a policy (see the module doc).

    ``chunking``: ``"cdc"`` or ``"fixed"`` for every file, None for how each
    file was cut; ``chunk_size`` (None: the store's) the fixed size or the
    content-defined maximum; ``codec`` one of :data:`CODEC_POLICIES`;
    ``level`` the zstd level (None: the store's)."""
    check_policy(chunking, chunk_size, codec, level)
    live = store.ledger.chunks
    size = chunk_size or live.chunk_size
    lvl = 0 if codec == "raw" else (level or live.level or 3)
    policy = {"chunking": chunking or "as written", "chunk_size": size, "codec": codec}
    policy["level"] = lvl
    report = WhatIfReport(policy)
    t0 = time.perf_counter()
    with store.ledger.kv.snapshot() as txn:
        recs = [record(raw, "artifacts") for _, raw in txn.scan("artifacts")]
    recs.sort(key=lambda r: r["seq"])
    # The live KV is never asked (lookup is overridden): no chunk is known outside the session.
    scratch = _Scratch(live.kv, _Counting(), 0, chunk_size=size, level=lvl, workers=live.workers)
    names: dict[str, WhatIfName] = {}
    seen_now: set[bytes] = set()
    buf = bytearray(READ_BLOCK)
    try:
        session = scratch.session()
        for i, rec in enumerate(recs):
            entries = [FileEntry.from_record(f) for f in manifests(rec)]
            held = {d: live.lookup(d) for e in entries for d in e.chunks}
            if any(r is None for r in held.values()):
                report.skipped += 1  # deleted and collected
                continue
            entry = names.setdefault(rec["name"], WhatIfName(rec["name"]))
            entry.versions += 1
            t = time.perf_counter()
            before = len(session.new)
            label = f"artifact {rec['name']}:{rec['version']}"
            for f in entries:
                entry.logical += f.size
                _replay(live, session, f, label, chunking, codec, buf)
            for d, r in held.items():
                if d not in seen_now:
                    seen_now.add(d)
                    entry.stored_now += r.stored_len  # type: ignore[union-attr]
                    entry.chunks_now += 1
            added = list(session.new.values())[before:]
            entry.stored_what_if += sum(r.stored_len for r in added)
            entry.chunks_what_if += len(added)
            entry.seconds += time.perf_counter() - t
            if progress is not None:
                progress("what-if", i + 1, len(recs))
    finally:
        scratch.close()
    report.names = sorted(names.values(), key=lambda n: n.name)
    report.seconds = time.perf_counter() - t0
    return report


def _replay(
    live: ChunkStore,
    session: Any,
    entry: FileEntry,
    label: str,
    chunking: str | None,
    codec: str,
    buf: bytearray,
) -> None:
    """Stream one stored file through a writer of the what-if session."""
    itemsize = entry.itemsize if codec == "auto" else 0
    cut = chunking or entry.cut
    writer = session.writer(entry.name, lambda _: None, itemsize=itemsize, chunking=cut)
    view = memoryview(buf)
    with live.open_file(entry, f"{label} file {entry.name!r}") as src:
        while n := src.readinto(view):
            writer.write(view[:n])
    writer.close()
