"""The byte pipeline: file -> chunks -> hash -> compress -> blob store, and back.

A file written through :class:`ChunkWriter` is cut into fixed-size chunks;
each chunk is addressed by its xxh3-128 digest seeded with the store's seed,
stored once, zstd-compressed or raw (when a cheap sample says compression
would save less than ~10%), and inline in the index record when small.
Hashing and compression run in a thread pool (both release the GIL), so the
ledger's write lock is never held for them.

Nothing written here is visible until the caller commits the chunk index
entries returned by :meth:`WriteSession.index_entries` in the same ledger
transaction as the events that reference them. Every chunk read back is
checked against its digest.
"""

from __future__ import annotations

import io
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

import xxhash

from engine.errors import IntegrityError
from engine.storage.blobs import BlobStore, Location
from engine.storage.chunk_records import ChunkRecord, FileEntry, content_hash
from engine.storage.codecs import (
    CODEC_RAW,
    MIN_SAVING,
    RAW,
    ZSTD,
    CodecError,
    choose,
    codec,
)
from engine.storage.kv import KV

__all__ = [
    "CODEC_RAW",
    "INLINE_MAX",
    "ChunkReader",
    "ChunkRecord",
    "ChunkStore",
    "ChunkWriter",
    "FileEntry",
    "WriteSession",
    "content_hash",
]

INLINE_MAX = 2048
INLINE_POOL_MAX = 64 << 10  # chunks this small are encoded in the writing thread

T = TypeVar("T")


PREFETCH_WINDOW = 16  # chunks a remote backend is asked to fetch ahead of the reads


class ChunkStore:
    """Chunking, hashing, compression and verified reads over a blob store."""

    def __init__(
        self,
        kv: KV,
        blobs: BlobStore,
        seed: int,
        *,
        chunk_size: int = 4 << 20,
        level: int = 3,
        workers: int = 2,
    ) -> None:
        self.kv = kv
        self.blobs = blobs
        self.seed = seed
        self.chunk_size = chunk_size
        self.level = level
        self.workers = workers
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    @property
    def pool(self) -> ThreadPoolExecutor:
        if self._pool is None:
            with self._pool_lock:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="artledger")
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def digest(self, data: Any) -> bytes:
        return xxhash.xxh3_128(data, seed=self.seed).digest()

    def lookup(self, digest: bytes) -> ChunkRecord | None:
        with self.kv.snapshot() as txn:
            raw = txn.get("chunks", digest)
        return None if raw is None else ChunkRecord.unpack(raw)

    def session(self) -> WriteSession:
        return WriteSession(self)

    # -- reading ---------------------------------------------------------------
    def decode_into(self, digest: bytes, rec: ChunkRecord, out: memoryview, label: str) -> None:
        """Decode one chunk into ``out`` (exactly ``rec.raw_len`` bytes) and verify it."""
        try:
            if rec.codec == CODEC_RAW and rec.inline is None:
                self.blobs.readinto(rec.loc, out)  # type: ignore[arg-type]
            else:
                payload = rec.inline if rec.inline is not None else self.blobs.get(rec.loc)  # type: ignore[arg-type]
                if codec(rec.codec).decode_into(payload, out) != rec.raw_len:
                    raise IntegrityError(f"{label}: chunk {digest.hex()} decompresses short")
        except IntegrityError as e:
            moved = None if rec.inline is not None else self.lookup(digest)
            if moved is not None and moved.loc != rec.loc:
                # gc moved the chunk (and deleted its old segment) since ``rec`` was read.
                self.decode_into(digest, moved, out, label)
                return
            if label in str(e):
                raise
            raise IntegrityError(f"{label}: chunk {digest.hex()}: {e}") from e
        except CodecError as e:
            raise IntegrityError(
                f"{label}: chunk {digest.hex()} is damaged ({e}); run `artledger verify`"
            ) from e
        if self.digest(out) != digest:
            raise IntegrityError(
                f"{label}: chunk {digest.hex()} is damaged (its bytes do not match its digest); "
                "run `artledger verify` to list all damage"
            )

    def read_chunk(self, digest: bytes, label: str) -> bytes:
        rec = self.lookup(digest)
        if rec is None:
            raise IntegrityError(f"{label}: chunk {digest.hex()} is missing from the chunk index")
        buf = bytearray(rec.raw_len)
        self.decode_into(digest, rec, memoryview(buf), label)
        return bytes(buf)

    def open_file(self, entry: FileEntry, label: str) -> ChunkReader:
        return ChunkReader(self, entry, label)


class WriteSession:
    """The chunks written for one commit: dedups within itself and against the
    index, and hands back the index entries to commit."""

    def __init__(self, store: ChunkStore) -> None:
        self.store = store
        self.new: dict[bytes, ChunkRecord] = {}
        self.referenced: set[bytes] = set()
        self.held: list[Location] = []  # blob locations put, until released
        self._lock = threading.Lock()

    def _known(self, digest: bytes) -> bool:
        return digest in self.new or self.store.lookup(digest) is not None

    def _encode(self, chunk: memoryview, itemsize: int = 0) -> tuple[bytes, int, Any, int]:
        """Hash ``chunk`` and, when new, encode it under the codec the sample test
        picks (``itemsize``: the element size of the numbers it holds, 0 if none)."""
        store = self.store
        digest = store.digest(chunk)
        n = len(chunk)
        if self._known(digest):
            return digest, -1, None, n
        if store.level > 0:
            pick = ZSTD if n <= INLINE_MAX else choose(chunk, itemsize)
            if pick is not RAW:
                packed = pick.encode(chunk, store.level)
                if len(packed) < n * MIN_SAVING:
                    return digest, pick.id, packed, n
        return digest, RAW.id, RAW.encode(chunk, store.level), n

    def _store(self, result: tuple[bytes, int, Any, int]) -> bytes:
        digest, codec, payload, n = result
        with self._lock:
            self.referenced.add(digest)
            if codec < 0 or digest in self.new:
                return digest
            if len(payload) <= INLINE_MAX:
                rec = ChunkRecord(codec, n, None, bytes(payload))
            else:
                loc = self.store.blobs.put(digest, codec, n, payload)
                self.held.append(loc)
                rec = ChunkRecord(codec, n, loc)
            self.new[digest] = rec
        return digest

    def relocate(self, digest: bytes, rec: ChunkRecord, payload: bytes) -> Location:
        """Put a copy of an indexed chunk's payload (gc compaction); its new location."""
        loc = self.store.blobs.put(digest, rec.codec, rec.raw_len, payload)
        with self._lock:
            self.held.append(loc)
        return loc

    def release(self) -> None:
        """Tell the blob store the commit of these chunks has returned (or will
        never happen); idempotent."""
        with self._lock:
            held, self.held = self.held, []
        if held:
            self.store.blobs.release(held)

    def __enter__(self) -> WriteSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def put_chunks(
        self, chunks: Iterable[tuple[T, Any]], itemsize: Callable[[T], int] | None = None
    ) -> Iterator[tuple[T, bytes]]:
        """Hash, compress and store each ``(tag, bytes)`` chunk, several at once in
        the pool (a bounded window in flight); yields ``(tag, digest)`` in order.
        ``itemsize(tag)``, when given, is the chunk's element-size hint."""
        window = max(2, self.store.workers * 2)
        inflight: deque[tuple[T, Future[tuple[bytes, int, Any, int]]]] = deque()
        for tag, data in chunks:
            mv = memoryview(data)
            k = 0 if itemsize is None else itemsize(tag)
            if not inflight and len(mv) <= INLINE_POOL_MAX:
                yield tag, self._store(self._encode(mv, k))
                continue
            while len(inflight) >= window:
                done, job = inflight.popleft()
                yield done, self._store(job.result())
            inflight.append((tag, self.store.pool.submit(self._encode, mv, k)))
        while inflight:
            done, job = inflight.popleft()
            yield done, self._store(job.result())

    def writer(
        self, name: str, on_close: Callable[[FileEntry], None], *, itemsize: int = 0
    ) -> ChunkWriter:
        """A writer for file ``name``; ``itemsize`` > 1 says the file holds numbers
        of that many bytes (aligned in the file), so their chunks may be shuffled."""
        return ChunkWriter(self, name, on_close, itemsize=itemsize)

    def index_entries(self) -> dict[bytes, ChunkRecord]:
        return self.new


class ChunkWriter(io.RawIOBase):
    """A writable binary file that streams into chunks; ``close`` finishes it."""

    def __init__(
        self,
        session: WriteSession,
        name: str,
        on_close: Callable[[FileEntry], None],
        *,
        itemsize: int = 0,
    ):
        super().__init__()
        self._s = session
        self._itemsize = itemsize
        self.name = name
        self._on_close = on_close
        self._cs = session.store.chunk_size
        self._buf = bytearray()
        self._hash = xxhash.xxh3_128()
        self._size = 0
        self._digests: list[bytes] = []
        self._inflight: deque[Future[tuple[bytes, int, Any, int]]] = deque()
        self._window = max(2, session.store.workers * 2)
        self.entry: FileEntry | None = None

    def writable(self) -> bool:
        return True

    def _submit(self, chunk: memoryview) -> None:
        if not self._inflight and len(chunk) <= INLINE_POOL_MAX:
            # Small chunks: a thread hop costs more than the work.
            self._digests.append(self._s._store(self._s._encode(chunk, self._itemsize)))
            return
        while len(self._inflight) >= self._window:
            self._digests.append(self._s._store(self._inflight.popleft().result()))
        self._inflight.append(self._s.store.pool.submit(self._s._encode, chunk, self._itemsize))

    def _drain(self) -> None:
        while self._inflight:
            self._digests.append(self._s._store(self._inflight.popleft().result()))

    def write(self, b: Any) -> int:
        if self.closed:
            raise ValueError("write to a closed artifact file")
        mv = memoryview(b)
        if not mv.contiguous:
            mv = memoryview(mv.tobytes())
        mv = mv.cast("B")
        n = len(mv)
        if not n:
            return 0
        self._hash.update(mv)
        self._size += n
        cs = self._cs
        pos = 0
        if self._buf:
            take = min(cs - len(self._buf), n)
            self._buf += mv[:take]
            pos = take
            if len(self._buf) == cs:
                chunk, self._buf = self._buf, bytearray()
                self._submit(memoryview(chunk))
        if n - pos >= cs:
            # Large write: chunk the caller's buffer in place, and finish with it
            # before returning (the caller may reuse it afterwards).
            full = pos + (n - pos) // cs * cs
            for off in range(pos, full, cs):
                self._submit(mv[off : off + cs])
            self._drain()
            pos = full
        if pos < n:
            self._buf += mv[pos:]
        return n

    def close(self) -> None:
        if self.closed:
            return
        try:
            if self._buf:
                self._submit(memoryview(bytes(self._buf)))
                self._buf = bytearray()
            self._drain()
            layout = {"itemsize": self._itemsize} if self._itemsize > 1 else None
            self.entry = FileEntry(
                self.name, self._size, self._hash.hexdigest(), self._digests, layout
            )
            self._on_close(self.entry)
        finally:
            super().close()


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
        import bisect

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
