"""Reading a stored file back: a seekable reader whose every chunk is verified.

Whole chunks are decoded straight into the caller's buffer (no copy for raw
and zstd chunks), several at once in the chunk store's pool; a remote blob
store is asked to fetch a window of chunks ahead of the reads.
"""

from __future__ import annotations

import bisect
import io
from typing import TYPE_CHECKING, Any

from engine.errors import IntegrityError
from engine.storage.blobs import Location
from engine.storage.chunk_records import ChunkRecord, FileEntry

if TYPE_CHECKING:
    from engine.storage.chunks import ChunkStore

PREFETCH_WINDOW = 16  # chunks a remote backend is asked to fetch ahead of the reads


class ChunkReader(io.RawIOBase):
    """A seekable binary reader over one stored file; every chunk is verified."""

    def __init__(self, store: ChunkStore, entry: FileEntry, label: str) -> None:
        super().__init__()
        self._store = store
        self.entry = entry
        self.label = label
        self._pos = 0
        self._recs: list[ChunkRecord] = []
        self._starts: list[int] = []
        with store.kv.snapshot() as txn:
            off = 0
            for d in entry.chunks:
                raw = txn.get("chunks", d)
                if raw is None:
                    raise IntegrityError(
                        f"{label}: chunk {d.hex()} is missing (deleted or collected); "
                        "run `artledger verify`"
                    )
                rec = ChunkRecord.unpack(raw)
                self._recs.append(rec)
                self._starts.append(off)
                off += rec.raw_len
        if off != entry.size:
            raise IntegrityError(
                f"{label}: chunks add up to {off} bytes but the manifest says {entry.size}"
            )
        self._cache_i = -1
        self._cache = bytearray()
        if len(self._recs) > 1:  # a remote backend fetches ahead while the header is read
            first = self._recs[:PREFETCH_WINDOW]
            store.blobs.prefetch([r.loc for r in first if r.loc is not None])

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = 0) -> int:
        if whence == 0:
            pos = offset
        elif whence == 1:
            pos = self._pos + offset
        else:
            pos = self.entry.size + offset
        if pos < 0:
            raise ValueError("negative seek position")
        self._pos = pos
        return pos

    def _chunk_at(self, pos: int) -> int:
        return bisect.bisect_right(self._starts, pos) - 1

    def readinto(self, b: Any) -> int:
        """Fill ``b`` from the current position. Whole chunks are decoded straight
        into ``b`` (no copy), in parallel when there are several."""
        out = memoryview(b).cast("B")
        want = len(out)
        done = 0
        size = self.entry.size
        direct: list[tuple[int, memoryview]] = []
        while done < want and self._pos < size:
            i = self._chunk_at(self._pos)
            rec = self._recs[i]
            inner = self._pos - self._starts[i]
            room = want - done
            if inner == 0 and room >= rec.raw_len and self._cache_i != i:
                direct.append((i, out[done : done + rec.raw_len]))
                n = rec.raw_len
            else:
                if self._cache_i != i:
                    if len(self._cache) != rec.raw_len:
                        self._cache = bytearray(rec.raw_len)
                    self._cache_i = -1
                    self._store.decode_into(
                        self.entry.chunks[i], rec, memoryview(self._cache), self.label
                    )
                    self._cache_i = i
                n = min(room, rec.raw_len - inner)
                out[done : done + n] = memoryview(self._cache)[inner : inner + n]
            done += n
            self._pos += n
        self._decode_all(direct)
        return done

    def _decode_all(self, jobs: list[tuple[int, memoryview]]) -> None:
        def one(job: tuple[int, memoryview]) -> None:
            i, target = job
            self._store.decode_into(self.entry.chunks[i], self._recs[i], target, self.label)

        blobs = self._store.blobs
        parts = [jobs[k : k + PREFETCH_WINDOW] for k in range(0, len(jobs), PREFETCH_WINDOW)]

        def locs(part: list[tuple[int, memoryview]]) -> list[Location]:
            return [r.loc for r in (self._recs[i] for i, _ in part) if r.loc is not None]

        # A remote backend fetches the next window's payloads while this one decodes.
        if len(jobs) > 1 and parts:
            blobs.prefetch(locs(parts[0]))
        for n, part in enumerate(parts):
            if n + 1 < len(parts):
                blobs.prefetch(locs(parts[n + 1]))
            if len(part) < 2 or self._store.workers < 2:
                for job in part:
                    one(job)
            else:
                # Reads and hashing release the GIL: decode several chunks at once.
                for _ in self._store.pool.map(one, part):
                    pass

    def readall(self) -> bytes:
        remaining = max(0, self.entry.size - self._pos)
        buf = bytearray(remaining)
        n = self.readinto(buf)
        del buf[n:]
        return bytes(buf)

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            return self.readall()
        buf = bytearray(min(size, max(0, self.entry.size - self._pos)))
        n = self.readinto(buf)
        del buf[n:]
        return bytes(buf)
