"""Chunk payloads as objects in an object store (S3 and compatibles, a local
directory, memory): the ``BlobStore`` of a store shared between machines.

One object per chunk, content addressed: key ``<prefix>/<ab>/<digest hex>``
(``ab``: the digest's first two hex digits), body the pack record of
:mod:`engine.storage.blobs.packs` (32-byte header: magic, digest, codec,
payload and raw lengths, then the payload), so a fetched object is checked
against the index before it is used. A location is ``(digest hex, 0,
payload length)``.

``put`` never overwrites (a conditional create): an object already there
holds the same bytes, and its location is remembered as *pre-existing*,
because a concurrent gc may delete it before the commit that references it;
:meth:`ObjectBlobStore.confirm`, called under the ledger's lock, finds such
losses. Uploads run in a bounded thread pool (``put`` returns at once and
blocks only when ``concurrency`` uploads are in flight); ``flush`` waits for
them. Reads go through a local :class:`~engine.storage.blobs.cache.ChunkCache`.

The client is obstore (the Rust ``object_store`` crate), imported only when a
store is opened. URLs: ``s3://bucket/prefix`` (endpoint and credentials from
the standard ``AWS_*`` environment variables; plain http allowed when
``AWS_ENDPOINT_URL`` is an ``http://`` address), ``file:///dir``,
``memory://`` (tests), and ``gs://``, ``az://`` through obstore's
``from_url`` (their own environment variables). Credentials are never kept
or shown: messages name the URL without user info or query.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit, urlunsplit

from engine.errors import ChunkStoreUnavailableError, IntegrityError, InvalidArgumentError
from engine.storage.blobs.base import BlobStore, ContainerState, Location
from engine.storage.blobs.cache import ChunkCache
from engine.storage.blobs.packs import HEADER, MAGIC

if TYPE_CHECKING:
    from obstore.store import ClientConfig, ObjectStore, RetryConfig

DIGEST_HEX = 32
Payload = bytes | bytearray | memoryview  # what a fetch or a cache read hands back
PREFETCH_HELD = 64  # prefetched payloads held for reads at most (4 MiB chunks: 256 MiB)


def safe_url(url: str) -> str:
    """``url`` without user info, query or fragment (where secrets hide)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:300] if text else type(e).__name__


def open_object_store(url: str, timeout: float) -> tuple[ObjectStore, bool]:
    """An obstore store for ``url`` and whether it outlives the process;
    requests time out and stop retrying after about ``timeout`` seconds."""
    import obstore.store as ob

    parts = urlsplit(url)
    scheme = parts.scheme
    limit = timedelta(seconds=timeout)
    client: ClientConfig = {
        "timeout": limit,
        "connect_timeout": timedelta(seconds=max(0.5, min(timeout / 2, 5.0))),
    }
    retry: RetryConfig = {
        "max_retries": 3,
        "retry_timeout": limit,
        "backoff": {
            "init_backoff": timedelta(milliseconds=100),
            "max_backoff": timedelta(seconds=max(0.2, timeout / 4)),
            "base": 2,
        },
    }
    if scheme == "memory":
        return ob.MemoryStore(), False
    if scheme == "file":
        root = Path(unquote(parts.path))
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ChunkStoreUnavailableError(
                f"cannot create the chunk directory {root}: {e}"
            ) from None
        return ob.LocalStore(root), True
    if scheme == "s3":
        if not parts.hostname:
            raise InvalidArgumentError(f"chunk store URL {safe_url(url)} names no bucket")
        endpoint = os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT") or ""
        if endpoint.startswith("http://"):
            client["allow_http"] = True
        prefix = parts.path.strip("/") or None
        return ob.S3Store(
            parts.hostname, prefix=prefix, client_options=client, retry_config=retry
        ), True
    if scheme in ("gs", "gcs", "az", "azure", "abfs", "abfss"):
        return ob.from_url(url, client_options=client, retry_config=retry), True
    raise InvalidArgumentError(
        f"unsupported chunk store URL {safe_url(url)}: use s3://bucket/prefix, "
        "file:///dir, memory://, gs://bucket/prefix or az://container/prefix"
    )


class ObjectBlobStore(BlobStore):
    """One object per chunk in an object store, read through a local cache."""

    persistent = True
    supports_deletes = True
    supports_compaction = False

    def __init__(
        self,
        url: str,
        *,
        cache_dir: Path | None,
        cache_bytes: int = 1 << 30,
        timeout: float = 10.0,
        concurrency: int = 8,
    ) -> None:
        if concurrency < 1:
            raise InvalidArgumentError(f"concurrency must be at least 1, not {concurrency}")
        self.url = safe_url(url)
        self.timeout = timeout
        self._store, self.persistent = open_object_store(url, timeout)
        self.cache = ChunkCache(cache_dir, cache_bytes) if cache_dir is not None else None
        self._uploads_pool = ThreadPoolExecutor(concurrency, thread_name_prefix="artledger-put")
        self._reads_pool = ThreadPoolExecutor(concurrency, thread_name_prefix="artledger-get")
        # Fetched payloads are written to the cache behind the reads (a bounded backlog).
        self._cache_pool = ThreadPoolExecutor(1, thread_name_prefix="artledger-cache")
        self._cache_backlog = threading.BoundedSemaphore(2 * concurrency)
        self._slots = threading.BoundedSemaphore(concurrency)
        self._lock = threading.Lock()
        # digest hex -> (its upload, how many held locations name it); the
        # upload's result says whether the object was there already.
        self._uploads: dict[str, tuple[Future[bool], int]] = {}
        self._ready: dict[Location, Future[Payload]] = {}  # prefetched, until read

    # -- names -------------------------------------------------------------------
    @staticmethod
    def key(name: str) -> str:
        """The object key of chunk ``name`` (digest hex), under the store's prefix."""
        return f"{name[:2]}/{name}"

    def shown(self, name: str) -> str:
        """The full address of chunk ``name``'s object, for messages."""
        return f"{self.url.rstrip('/')}/{self.key(name)}"

    def _name(self, loc: Location) -> str:
        name = loc.container
        if loc.offset != 0 or len(name) != DIGEST_HEX or loc.length < 0:
            raise IntegrityError(f"chunk location {list(loc)} is not an object of {self.url}")
        try:
            bytes.fromhex(name)
        except ValueError:
            raise IntegrityError(
                f"chunk location {list(loc)} is not an object of {self.url}"
            ) from None
        return name

    def _unavailable(self, what: str, e: BaseException) -> ChunkStoreUnavailableError:
        return ChunkStoreUnavailableError(
            f"the chunk store {self.url} is unavailable ({what}: {_first_line(e)}); check "
            "that it is reachable and the credentials in the environment are valid, "
            "then retry"
        )

    # -- writing -------------------------------------------------------------------
    def put(self, digest: bytes, codec: int, raw_len: int, payload: Any) -> Location:
        name = digest.hex()
        n = len(payload)
        loc = Location(name, 0, n)
        with self._lock:
            entry = self._uploads.get(name)
            if entry is not None:  # put already (or being put) by this store
                self._uploads[name] = (entry[0], entry[1] + 1)
                return loc
            done: Future[bool] = Future()
            self._uploads[name] = (done, 1)
        try:
            body = HEADER.pack(MAGIC, digest, codec, n, raw_len) + bytes(payload)
            self._slots.acquire()  # at most `concurrency` bodies in flight
            try:
                future = self._uploads_pool.submit(self._upload, name, body)
            except BaseException:
                self._slots.release()
                raise
        except BaseException as e:
            done.set_exception(e)
            self.release([loc])
            raise
        future.add_done_callback(lambda f: self._finished(f, done))
        return loc

    def _finished(self, future: Future[bool], done: Future[bool]) -> None:
        self._slots.release()
        if future.cancelled():
            done.set_exception(ChunkStoreUnavailableError(f"{self.url}: the store was closed"))
        elif (error := future.exception()) is not None:
            done.set_exception(error)
        else:
            done.set_result(future.result())

    def _upload(self, name: str, body: bytes) -> bool:
        """Create the object; True when it was there already (same content)."""
        import obstore
        from obstore.exceptions import AlreadyExistsError

        try:
            obstore.put(self._store, self.key(name), body, mode="create")
        except AlreadyExistsError:
            return True
        return False

    def flush(self, held: Iterable[Location]) -> ContainerState:
        """Wait for the uploads of ``held``; ``ChunkStoreUnavailableError`` if any failed."""
        failed: list[tuple[str, BaseException]] = []
        for name in self._held_names(held):
            with self._lock:
                entry = self._uploads.get(name)
            if entry is None:
                continue
            error = entry[0].exception()
            if error is not None:
                failed.append((name, error))
        if failed:
            name, error = failed[0]
            raise ChunkStoreUnavailableError(
                f"cannot store {len(failed)} chunk(s) in {self.url} (chunk {name}: "
                f"{_first_line(error)}); nothing was committed: check that the object store "
                "is reachable and the credentials in the environment are valid, then retry"
            )
        return {}

    def release(self, held: Iterable[Location]) -> None:
        with self._lock:
            for loc in held:
                entry = self._uploads.get(loc.container)
                if entry is None:
                    continue
                if entry[1] <= 1:
                    del self._uploads[loc.container]
                else:
                    self._uploads[loc.container] = (entry[0], entry[1] - 1)

    def confirm(self, held: Iterable[Location]) -> list[Location]:
        """Of ``held``, the pre-existing objects that are gone now."""
        import obstore

        missing: list[Location] = []
        seen: set[str] = set()
        for loc in held:
            name = loc.container
            with self._lock:
                entry = self._uploads.get(name)
            if name in seen or entry is None or not entry[0].done():
                continue
            seen.add(name)
            if entry[0].exception() is not None or not entry[0].result():
                continue
            try:
                obstore.head(self._store, self.key(name))
            except FileNotFoundError:
                missing.append(loc)
            except Exception as e:
                raise self._unavailable(f"checking chunk {name}", e) from None
        return missing

    @staticmethod
    def _held_names(held: Iterable[Location]) -> list[str]:
        return list(dict.fromkeys(loc.container for loc in held))

    # -- reading -------------------------------------------------------------------
    def prefetch(self, locs: list[Location]) -> None:
        """Start fetching ``locs`` (several at once, cached ones from the cache)
        and return: the reads that follow wait for them. At most
        :data:`PREFETCH_HELD` fetched payloads are held."""
        cache = self.cache
        fetch = [loc for loc in locs if cache is None or not cache.has(self._name(loc))]
        with self._lock:
            for loc in fetch:  # cached payloads are read straight into place later
                if loc in self._ready:
                    continue
                self._ready[loc] = self._reads_pool.submit(self._cached_or_fetched, loc, True)
            while len(self._ready) > PREFETCH_HELD:
                self._ready.pop(next(iter(self._ready))).cancel()

    def _cached_or_fetched(self, loc: Location, behind: bool = False) -> Payload:
        name = self._name(loc)
        if self.cache is not None:
            hit = self.cache.get(name, loc.length)
            if hit is not None:
                return hit
        return self._fetch(name, loc, behind=behind)

    def get(self, loc: Location) -> bytes:
        payload = self._payload(loc)
        return payload if isinstance(payload, bytes) else bytes(payload)

    def readinto(self, loc: Location, buf: memoryview) -> None:
        """The payload into ``buf``: read straight from the cache file, or one
        copy from the response body."""
        ready = self._prefetched(loc)
        if ready is not None:
            buf[:] = ready
        elif self.cache is None or not self.cache.readinto(self._name(loc), buf):
            buf[:] = self._fetch(self._name(loc), loc)

    def _payload(self, loc: Location) -> Payload:
        ready = self._prefetched(loc)
        return ready if ready is not None else self._cached_or_fetched(loc)

    def _prefetched(self, loc: Location) -> Payload | None:
        """The payload :meth:`prefetch` fetched for ``loc`` (waiting for it), once."""
        with self._lock:
            ready = self._ready.pop(loc, None)
        return None if ready is None else ready.result()

    def _fetch(self, name: str, loc: Location, *, behind: bool = False) -> Payload:
        """The payload of chunk ``name``, fetched and checked (a view of the
        response body: no copy), written to the cache (``behind``: by a
        background thread, for prefetched reads)."""
        import obstore

        try:
            body = memoryview(obstore.get(self._store, self.key(name)).bytes())
        except FileNotFoundError:
            raise IntegrityError(
                f"chunk {name} is missing: no object {self.shown(name)}; run `artledger verify`"
            ) from None
        except Exception as e:
            raise self._unavailable(f"reading chunk {name}", e) from None
        problem = self._header_problem(name, body[: HEADER.size], loc.length, None, None)
        if problem is None and len(body) != HEADER.size + loc.length:
            problem = f"holds {len(body) - HEADER.size} payload bytes, not {loc.length}"
        if problem is not None:
            raise IntegrityError(f"chunk {name}: object {self.shown(name)} {problem}")
        payload = body[HEADER.size :]
        if self.cache is not None:
            if behind:
                self._cache_later(name, payload)
            else:
                self.cache.put(name, payload)
        return payload

    def _cache_later(self, name: str, payload: memoryview) -> None:
        """Write ``payload`` to the cache in the background (at once when the
        backlog is full)."""
        cache = self.cache
        assert cache is not None
        if not self._cache_backlog.acquire(blocking=False):
            cache.put(name, payload)
            return

        def write() -> None:
            try:
                cache.put(name, payload)
            finally:
                self._cache_backlog.release()

        try:
            self._cache_pool.submit(write)
        except RuntimeError:  # closing
            self._cache_backlog.release()

    @staticmethod
    def _header_problem(
        name: str, raw: bytes | memoryview, length: int, codec: int | None, raw_len: int | None
    ) -> str | None:
        if len(raw) != HEADER.size:
            return "is shorter than its record header"
        magic, digest, hcodec, plen, rlen = HEADER.unpack(raw)
        if magic != MAGIC or digest.hex() != name:
            return "has a record header for another chunk"
        if plen != length:
            return f"records a {plen}-byte payload, the index {length}"
        if codec is not None and hcodec != codec:
            return f"records codec {hcodec}, the index {codec}"
        if raw_len is not None and rlen != raw_len:
            return f"records raw length {rlen}, the index {raw_len}"
        return None

    def get_many(self, locs: Iterable[Location]) -> list[bytes]:
        """The payloads at ``locs`` in order: cached ones locally, the rest fetched
        concurrently (each distinct chunk once)."""
        locs = list(locs)
        found: dict[Location, bytes] = {}
        todo: dict[Location, str] = {}
        for loc in locs:
            if loc in found or loc in todo:
                continue
            name = self._name(loc)
            hit = self.cache.get(name, loc.length) if self.cache is not None else None
            if hit is not None:
                found[loc] = bytes(hit)
            else:
                todo[loc] = name
        if len(todo) == 1:
            ((loc, name),) = todo.items()
            found[loc] = bytes(self._fetch(name, loc))
        elif todo:
            futures = {
                loc: self._reads_pool.submit(self._fetch, name, loc) for loc, name in todo.items()
            }
            for loc, future in futures.items():
                found[loc] = bytes(future.result())
        return [found[loc] for loc in locs]

    # -- verify and gc -------------------------------------------------------------
    def check(self, loc: Location, digest: bytes, codec: int, raw_len: int) -> str | None:
        """The object's record header against the index entry (one 32-byte range read)."""
        import obstore

        name = self._name(loc)
        try:
            raw = obstore.get_range(self._store, self.key(name), start=0, length=HEADER.size)
        except FileNotFoundError:
            return f"chunk {digest.hex()}: object {self.shown(name)} is missing"
        except Exception as e:
            raise self._unavailable(f"checking chunk {name}", e) from None
        if name != digest.hex():
            return f"chunk {digest.hex()}: the index points at object {self.shown(name)}"
        problem = self._header_problem(name, memoryview(raw), loc.length, codec, raw_len)
        return None if problem is None else f"chunk {name}: object {self.shown(name)} {problem}"

    def delete(self, loc: Location) -> None:
        self.delete_digest(self._name(loc))

    def delete_digest(self, name: str) -> None:
        """Delete chunk ``name``'s object (and its cached copy); missing is fine."""
        import obstore

        if self.cache is not None:
            self.cache.discard(name)
        try:
            obstore.delete(self._store, self.key(name))
        except FileNotFoundError:
            pass
        except Exception as e:
            raise self._unavailable(f"deleting chunk {name}", e) from None

    def unindexed(self, indexed: Callable[[bytes], bool], before: float) -> list[Location]:
        """Chunk objects last written before ``before`` whose digest no index
        knows (``indexed``): uploads whose commit never came."""
        return [
            Location(name, 0, max(size - HEADER.size, 0))
            for name, size, mtime in self.list_objects()
            if mtime < before and not indexed(bytes.fromhex(name))
        ]

    def list_objects(self) -> Iterator[tuple[str, int, float]]:
        """(digest hex, object size, last modified as epoch seconds) of every
        chunk object under the prefix; other keys are skipped."""
        import obstore

        try:
            for batch in obstore.list(self._store):
                for meta in batch:
                    name = meta["path"].rsplit("/", 1)[-1]
                    if len(name) != DIGEST_HEX or meta["path"] != self.key(name):
                        continue
                    yield name, meta["size"], meta["last_modified"].timestamp()
        except FileNotFoundError:
            return
        except Exception as e:
            raise self._unavailable("listing chunks", e) from None

    def close(self) -> None:
        for pool in (self._uploads_pool, self._reads_pool):
            with contextlib.suppress(RuntimeError):
                pool.shutdown(wait=True, cancel_futures=True)
        self._cache_pool.shutdown(wait=True)  # the cache writes behind finish
        with self._lock:
            self._uploads.clear()
