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
from engine.storage.cdc import CDC, FIXED, STRATEGIES, Cutter
from engine.storage.chunk_reader import ChunkReader
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
HASH_IN_POOL = 1 << 20  # content-defined writes this large hash the file in the pool

T = TypeVar("T")


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
        chunking: str = FIXED,
    ) -> None:
        self.kv = kv
        self.chunking = chunking
        """How files without a hint are cut: ``"fixed"`` (``chunk_size`` each) or ``"cdc"``."""
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
        self._watchers: list[threading.Event] = []

    def watch_new(self, event: threading.Event) -> None:
        """Set ``event`` once this session stores a chunk the store did not hold
        (at once if it has already)."""
        with self._lock:
            if self.new:
                event.set()
            else:
                self._watchers.append(event)

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
            if self._watchers:
                for event in self._watchers:
                    event.set()
                self._watchers.clear()
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
        self,
        name: str,
        on_close: Callable[[FileEntry], None],
        *,
        itemsize: int = 0,
        chunking: str | None = None,
    ) -> ChunkWriter:
        """A writer for file ``name``. ``itemsize`` > 1 says the file holds numbers
        of that many bytes (aligned in the file), so their chunks may be
        shuffled; ``chunking`` is ``"fixed"`` or ``"cdc"`` (content-defined),
        ``None`` for the store's default."""
        return ChunkWriter(self, name, on_close, itemsize=itemsize, chunking=chunking)

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
        chunking: str | None = None,
    ):
        super().__init__()
        self._s = session
        self._itemsize = itemsize
        chunking = chunking or session.store.chunking
        if chunking not in STRATEGIES:
            raise ValueError(f"unknown chunking {chunking!r}; use one of {STRATEGIES}")
        self._cutter = Cutter(session.store.chunk_size, itemsize) if chunking == CDC else None
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
        self._size += n
        if self._cutter is not None:
            # The file's hash runs in the pool while the main thread cuts (both
            # release the GIL); it is done before the caller gets its buffer back.
            big = n >= HASH_IN_POOL
            job = self._s.store.pool.submit(self._hash.update, mv) if big else None
            if job is None:
                self._hash.update(mv)
            try:
                self._write_cdc(mv)
            finally:
                if job is not None:
                    job.result()
            return n
        self._hash.update(mv)
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

    def _write_cdc(self, mv: memoryview) -> None:
        """Content-defined chunks: bytes are gathered (at most two maximum chunks)
        until the cutter finds boundaries; a large write is cut in place, and
        the piece after its last boundary is carried to the next write."""
        cutter = self._cutter
        assert cutter is not None
        window = 2 * cutter.max_size
        pos, n = 0, len(mv)
        while pos < n:
            if not self._buf and n - pos >= window:
                view = mv[pos:]
                start = self._cut(cutter, view, final=False)
                self._drain()  # the caller may reuse its buffer once this returns
                self._buf = bytearray(view[start:])
                return
            # Before a large write is cut in place, the piece carried from the
            # last write needs only enough bytes to end (a maximum chunk).
            target = cutter.max_size + 1 if n - pos >= window else window
            take = min(n - pos, max(0, target - len(self._buf)))
            self._buf += mv[pos : pos + take]
            pos += take
            if len(self._buf) < target:
                return
            buf, self._buf = self._buf, bytearray()
            start = self._cut(cutter, memoryview(buf), final=False)
            back = len(buf) - start
            if back <= take:
                pos -= back  # the unfinished piece is the caller's: re-read it in place
            else:
                self._buf = buf[start:]

    def _cut(self, cutter: Cutter, view: memoryview, final: bool) -> int:
        """Submit the chunks ``cutter`` finds in ``view``; where the rest begins."""
        start = 0
        for end in cutter.cuts(view, final):
            self._submit(view[start:end])
            start = end
        return start

    def close(self) -> None:
        if self.closed:
            return
        try:
            if self._buf and self._cutter is not None:
                self._cut(self._cutter, memoryview(bytes(self._buf)), final=True)
                self._buf = bytearray()
            elif self._buf:
                self._submit(memoryview(bytes(self._buf)))
                self._buf = bytearray()
            self._drain()
            layout: dict[str, Any] = {"itemsize": self._itemsize} if self._itemsize > 1 else {}
            if self._cutter is not None:
                layout["cut"] = CDC
            self.entry = FileEntry(
                self.name, self._size, self._hash.hexdigest(), self._digests, layout or None
            )
            self._on_close(self.entry)
        finally:
            super().close()
