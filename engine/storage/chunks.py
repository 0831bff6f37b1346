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

import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

import xxhash

from engine.errors import IntegrityError
from engine.storage.blobs import BlobStore, Location
from engine.storage.cdc import FIXED
from engine.storage.chunk_reader import ChunkReader
from engine.storage.chunk_records import ChunkRecord, FileEntry, content_hash
from engine.storage.chunk_writer import INLINE_POOL_MAX, ChunkWriter, RecentCuts
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
        self.recent = RecentCuts()
        """Where the content-defined files written lately were cut (a file
        written again skips cutting, see :class:`ChunkWriter`)."""
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
        self._watchers: list[Callable[[], None]] = []

    def watch_new(self, call: Callable[[], None]) -> None:
        """Call ``call`` once this session stores a chunk the store did not hold
        (at once if it has already; it must be quick and not write)."""
        with self._lock:
            if not self.new:
                self._watchers.append(call)
                return
        call()

    def unwatch_new(self, call: Callable[[], None]) -> None:
        """Forget ``call`` if :meth:`watch_new` has not called it yet."""
        with self._lock:
            if call in self._watchers:
                self._watchers.remove(call)

    def _known(self, digest: bytes) -> bool:
        return digest in self.new or self.store.lookup(digest) is not None

    def _encode(self, chunk: memoryview, itemsize: int = 0) -> tuple[bytes, int, Any, int]:
        """Hash ``chunk`` and, when new, encode it under the codec the sample test
        picks (``itemsize``: the element size of the numbers it holds, 0 if none)."""
        return self._encode_digest(self.store.digest(chunk), chunk, itemsize)

    def _encode_expected(
        self, chunk: memoryview, itemsize: int, expected: bytes
    ) -> tuple[bytes, int, Any, int] | None:
        """:meth:`_encode` when ``chunk``'s digest is ``expected``, else None."""
        digest = self.store.digest(chunk)
        return None if digest != expected else self._encode_digest(digest, chunk, itemsize)

    def _encode_digest(
        self, digest: bytes, chunk: memoryview, itemsize: int
    ) -> tuple[bytes, int, Any, int]:
        store = self.store
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
            watchers, self._watchers = self._watchers, []
        for call in watchers:
            call()
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
