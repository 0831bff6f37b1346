"""The store: opening, the commit path, and every write.

Write order is crash safety: an artifact's chunks are written and fsynced
first (outside the ledger's write lock, hashed and compressed in a thread
pool), then one LMDB write transaction appends the events, folds them into
the projections and records the chunk index entries, and commits durably.
A crash before the commit leaves only unreferenced bytes; after it,
everything is there.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import os
import secrets
import struct
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from engine import failpoints
from engine.errors import (
    ArtifactNotFoundError,
    ArtledgerError,
    InvalidArgumentError,
    LedgerDamagedError,
    LedgerMissingError,
    MaterializerError,
    ReadOnlyStoreError,
    StoreError,
    StoreFormatError,
    StoreSecretError,
)
from engine.ledger.layout import (
    CREATING,
    IDENTITY,
    Identity,
    directory_lock,
    evidence_of_use,
    fsync_dir,
    lock_usable,
    read_identity,
    readonly_reason,
    write_identity,
)
from engine.projections import PROJECTION_DBS, apply, fold
from engine.projections.fold import next_version
from engine.projections.keys import MAX_VERSION, version_key
from engine.projections.records import damage_boundary
from engine.query.catalog import Catalog, normalise_version
from engine.query.models import ArtifactVersion, Run
from engine.storage import lmdb_file as ledger_file
from engine.storage.blobs import BlobStore, MemoryBlobStore, PackBlobStore
from engine.storage.chunks import ChunkStore, WriteSession, content_hash
from engine.storage.files import WriteFiles
from engine.storage.kv import KV, LmdbKV, MemoryKV, Txn
from engine.storage.lmdb_file import RECOVER_HINT, DataFile
from engine.storage.log import Event, EventLog

if TYPE_CHECKING:
    from engine.ops.maintenance import GcReport, VerifyReport
    from engine.ops.recover import RecoverReport
    from engine.ops.transfer import ExportReport, ImportReport
    from engine.query.history import HistoricalView

FORMAT_VERSION = 1
DEFAULT_DIR = ".artledger"
_Q = struct.Struct(">Q")


def default_path() -> Path:
    """``$ARTLEDGER_STORE``, else ``./.artledger``."""
    return Path(os.environ.get("ARTLEDGER_STORE") or DEFAULT_DIR)


def plain(value: Any, *, where: str = "metadata") -> Any:
    """``value`` as msgpack-able plain data (numpy scalars to Python; tuples to lists)."""
    if value is None or isinstance(value, (bool, int, float, str, bytes)):
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 1 << 63:
            return str(value)
        return value
    if isinstance(value, Mapping):
        return {str(k): plain(v, where=where) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v, where=where) for v in value]
    item = getattr(value, "item", None)
    if callable(item) and type(value).__module__ == "numpy":
        return plain(item(), where=where)
    if isinstance(value, (set, frozenset)):
        return sorted((plain(v, where=where) for v in value), key=repr)
    raise InvalidArgumentError(
        f"{where} value {value!r} of type {type(value).__qualname__} cannot be stored; "
        "use str, int, float, bool, None, lists and dicts of those"
    )


@dataclass
class Prepared:
    """An artifact version whose bytes are written but not yet committed."""

    data: dict[str, Any]
    session: WriteSession
    requested_version: int | str | None = None


@dataclass(frozen=True)
class _Options:
    chunk_size: int
    level: int
    workers: int


class _NoFormatError(LedgerDamagedError):
    """A ledger that committed but holds no store format record."""


class _ChunkGoneError(Exception):
    """A chunk found during dedup was collected before the commit."""


class Store(Catalog):
    """An artledger store: the event log, the chunk store and the projections.

    Open with :meth:`Store.open` (LMDB and pack files on disk) or
    :meth:`Store.memory` (the in-memory twin). Thread-safe; several processes
    may open and write one on-disk store at once.
    """

    def __init__(
        self,
        kv: KV,
        blobs: BlobStore,
        *,
        path: Path | None,
        secret: bytes,
        chunk_size: int,
        level: int,
        workers: int,
        create: bool = True,
        readonly: str | None = None,
        identity: Identity | None = None,
    ) -> None:
        self.path = path
        self.kv = kv
        self.blobs = blobs
        self.log = EventLog()
        self._secret = secret
        self._secret_problem: str | None = None
        self._identity_problem: str | None = None
        self._readonly = readonly
        self._deferred: list[tuple[str, dict[str, Any]]] = []
        self._deferred_lock = threading.Lock()
        self._closed = False
        self._init_ledger(create, identity)
        seed_raw = self._meta(b"seed")
        if seed_raw is None:
            raise LedgerDamagedError(
                f"the ledger at {self.path}/ledger has no chunk-address seed; {RECOVER_HINT}"
            )
        self.chunks = ChunkStore(
            kv, blobs, _Q.unpack(seed_raw)[0], chunk_size=chunk_size, level=level, workers=workers
        )

    # -- opening ---------------------------------------------------------------
    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str] | None = None,
        *,
        chunk_size: int = 4 << 20,
        level: int = 3,
        workers: int = 2,
        map_size: int = 64 << 20,
        readonly: bool = False,
    ) -> Store:
        """Open the store at ``path`` (None: ``$ARTLEDGER_STORE`` or ``./.artledger``),
        creating it when missing.

        ``readonly`` opens it for reading only (every write raises
        :class:`ReadOnlyStoreError`); a store on a read-only filesystem, or one
        this user cannot write, is opened read-only without asking. A store
        whose ledger is missing or damaged is refused
        (:class:`LedgerMissingError`, :class:`LedgerDamagedError`), never
        replaced by an empty one: :meth:`recover` rebuilds it."""
        root = Path(path) if path is not None else default_path()
        if chunk_size < 64 << 10:
            raise InvalidArgumentError(f"chunk_size {chunk_size} is too small (minimum 64 KiB)")
        if root.exists() and not root.is_dir():
            raise StoreError(
                f"store path {root} is a file, not a store directory; pass a directory path"
            )
        reason = "opened with readonly=True" if readonly else None
        if not root.exists():
            if reason is not None:
                raise StoreError(f"no store at {root} (opened read-only: nothing is created)")
            try:
                root.mkdir(mode=0o700, parents=True, exist_ok=True)
            except OSError as e:
                raise StoreError(f"cannot create the store directory {root}: {e}") from e
        reason = reason or readonly_reason(root)
        ledger = root / "ledger"
        if ledger.exists() and not ledger.is_dir():
            raise LedgerDamagedError(
                f"{ledger} is a file, not the ledger directory; {RECOVER_HINT} "
                "(it moves the file aside)"
            )
        options = _Options(chunk_size, level, workers)
        df = ledger_file.check(ledger / "data.mdb")
        if df.committed or df.state == "unknown":
            try:
                return cls._open_existing(root, reason, map_size, options)
            except _NoFormatError:
                # A creator may be between LMDB creating the databases and its first
                # commit: it holds the directory lock until it is done. A creation
                # that was killed there left its marker: finish it.
                with directory_lock(root):
                    if reason is None and (root / CREATING).exists():
                        return cls._create(root, map_size, options)
                    return cls._open_existing(root, reason, map_size, options)
        if reason is not None:
            _refuse_missing(root, df)
            raise StoreError(f"no store at {root} (it is read-only, {reason}: none is created)")
        with directory_lock(root):
            # Another process may have created (or recovered) the ledger meanwhile.
            df = ledger_file.check(ledger / "data.mdb")
            if df.committed or df.state == "unknown":
                return cls._open_existing(root, None, map_size, options)
            _refuse_missing(root, df)
            return cls._create(root, map_size, options)

    @classmethod
    def _open_existing(
        cls,
        root: Path,
        reason: str | None,
        map_size: int,
        options: _Options,
        *,
        create: bool = False,
    ) -> Store:
        """Open the ledger at ``root``; with ``create``, initialise it when it
        holds no store yet (only for a store being created)."""
        ledger = root / "ledger"
        secret, problem = _load_secret(root, create=create)
        lock = reason is None or lock_usable(ledger)
        kv = LmdbKV(ledger, map_size=map_size, readonly=reason, lock=lock)
        blobs: PackBlobStore | None = None
        try:
            blobs = PackBlobStore(root / "packs")
            store = cls(
                kv,
                blobs,
                path=root,
                secret=secret,
                chunk_size=options.chunk_size,
                level=options.level,
                workers=options.workers,
                create=create,
                readonly=reason,
            )
        except BaseException:
            if blobs is not None:
                blobs.close()
            kv.close()
            raise
        store._check_secret(problem)
        store._check_identity(write=reason is None)
        if reason is None:
            store._recover_packs()
            if not create:  # a creation that died after its first commit is complete
                (root / CREATING).unlink(missing_ok=True)
        return store

    @classmethod
    def _create(cls, root: Path, map_size: int, options: _Options) -> Store:
        """A new store (the caller holds the directory lock and found no ledger
        and no sign of use). ``.creating`` marks the creation until the ledger
        and the identity file are written: an open that finds it finishes a
        creation that was killed half-way."""
        marker = root / CREATING
        marker.touch(mode=0o600)
        fsync_dir(root)
        store = cls._open_existing(root, None, map_size, options, create=True)
        marker.unlink(missing_ok=True)
        fsync_dir(root)
        return store

    @classmethod
    def memory(cls, *, chunk_size: int = 4 << 20, level: int = 3, workers: int = 2) -> Store:
        """A store held in memory (the in-memory twin of the LMDB/packs store)."""
        return cls(
            MemoryKV(),
            MemoryBlobStore(),
            path=None,
            secret=secrets.token_bytes(32),
            chunk_size=chunk_size,
            level=level,
            workers=workers,
        )

    @classmethod
    def recover(
        cls,
        path: str | os.PathLike[str] | None = None,
        *,
        from_export: str | os.PathLike[str] | None = None,
        progress: Callable[[str, int, int], None] | None = None,
    ) -> RecoverReport:
        """Rebuild the ledger of the store at ``path`` after it was lost or damaged.

        The old ledger is moved aside (``ledger.damaged-<time>``, never
        deleted). The new one holds the events that still read from it (a
        gapless prefix of the log whose hash chain holds, read in a child
        process) or, with ``from_export``, the events of an ``artledger
        export`` stream; every valid chunk found in the pack files,
        re-indexed by digest; and the projections folded from those events.
        The report says what was salvaged, where salvage stopped and why,
        and which artifact versions lost chunks. Nothing is deleted; refused
        while another process has the store open."""
        from engine.ops.recover import recover

        root = Path(path) if path is not None else default_path()
        return recover(cls, root, from_export=from_export, progress=progress)

    def _meta(self, key: bytes) -> bytes | None:
        txn = self.kv.read()
        try:
            return txn.get("meta", key)
        finally:
            self.kv.end_read(txn)

    def _init_ledger(self, create: bool, identity: Identity | None) -> None:
        ident = identity or Identity(secrets.token_hex(8), secrets.randbits(63))

        def init(txn: Txn) -> None:
            fmt = txn.get("meta", b"format")
            if fmt is not None:
                return
            txn.put("meta", b"format", _Q.pack(FORMAT_VERSION))
            txn.put("meta", b"seed", _Q.pack(ident.seed))
            txn.put("meta", b"store_id", ident.store_id.encode())
            txn.put("meta", b"secret_fp", ident.secret_fp or _fingerprint(self._secret))
            for e in self.log.append(
                txn, [("store.created", {"store_id": ident.store_id, "format": FORMAT_VERSION})]
            ):
                apply(txn, e)

        fmt = self._meta(b"format")
        if fmt is None:
            if not create:
                self.kv.close()
                raise _NoFormatError(
                    f"the ledger at {self.path}/ledger has committed transactions but no "
                    f"store format record: it is damaged (or not an artledger ledger); "
                    f"{RECOVER_HINT}"
                )
            self.kv.write(init)
            return
        version = _Q.unpack(fmt)[0]
        if version > FORMAT_VERSION:
            self.kv.close()
            raise StoreFormatError(
                f"the store at {self.path} has format version {version}, newer than this "
                f"artledger supports ({FORMAT_VERSION}); upgrade artledger to open it"
            )

    def identity(self) -> Identity:
        """The store id, chunk-address seed and secret fingerprint, from the ledger."""
        fp = self._meta(b"secret_fp")
        return Identity(self.store_id, self.chunks.seed, fp)

    def _check_identity(self, *, write: bool) -> None:
        """Write ``<store>/identity`` when missing; note when it disagrees with the ledger."""
        assert self.path is not None
        ours = self.identity()
        found = read_identity(self.path)
        if found is None:
            if write and not (self.path / IDENTITY).exists():
                with contextlib.suppress(OSError):
                    write_identity(self.path, ours)
            return
        if (found.store_id, found.seed) != (ours.store_id, ours.seed):
            self._identity_problem = (
                f"the identity file {self.path / IDENTITY} names store {found.store_id}, but "
                f"the ledger is store {ours.store_id}: it was copied from another store; "
                "move it aside (the next open writes the right one)"
            )

    def _check_writable(self, what: str) -> None:
        self._check_open()
        if self._readonly is not None:
            raise ReadOnlyStoreError(
                f"the store at {self.path} is read-only ({self._readonly}): cannot {what}; "
                "nothing was written"
            )

    def _check_secret(self, problem: str | None) -> None:
        fp = self._meta(b"secret_fp")
        if problem is None and fp is not None and fp != _fingerprint(self._secret):
            problem = (
                f"the store secret {self.path}/secret does not match the one this store was "
                "created with (replaced or altered): pickled artifacts will neither load nor "
                "save; restore the original file from a backup and reopen the store"
            )
        self._secret_problem = problem

    def _recover_packs(self) -> list[str]:
        """Truncate torn pack tails (see :meth:`PackBlobStore.recover`)."""
        if isinstance(self.blobs, PackBlobStore):
            return self.blobs.recover(self.segment_ends, self.segment_ends())
        return []

    def segment_ends(self) -> dict[str, int]:
        """The committed end of every pack segment, from the ledger."""
        with self._read() as txn:
            return {k.decode(): _Q.unpack(v)[0] for k, v in txn.scan("segments")}

    @property
    def store_id(self) -> str:
        raw = self._meta(b"store_id")
        return "" if raw is None else raw.decode()

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("this store is closed; open it again with Store.open()")

    def close(self) -> None:
        """Flush deferred events and release files; the store object is unusable after."""
        if self._closed:
            return
        try:
            self.flush()
        finally:
            self._closed = True
            self.chunks.close()
            self.blobs.close()
            self.kv.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        where = "memory" if self.path is None else str(self.path)
        return f"<Store {where}>"

    # -- the commit path -----------------------------------------------------------
    def defer(self, records: Iterable[tuple[str, dict[str, Any]]]) -> None:
        """Queue events whose loss costs nothing; they ride along with the next
        durable commit (or :meth:`flush`)."""
        with self._deferred_lock:
            self._deferred.extend(records)

    def flush(self) -> None:
        """Commit deferred events now (durably)."""
        with self._deferred_lock:
            if not self._deferred:
                return
        self.commit(lambda txn: [])

    def commit(
        self,
        build: Callable[[Txn], list[tuple[str, dict[str, Any]]]],
        sessions: Iterable[WriteSession] = (),
    ) -> list[Event]:
        """Append deferred events plus ``build(txn)``'s, fold them, index the
        sessions' chunks, and commit durably, all in one transaction."""
        self._check_writable("commit")
        sessions = list(sessions)
        try:
            return self._commit(build, sessions)
        finally:
            for s in sessions:
                s.release()

    def _commit(
        self,
        build: Callable[[Txn], list[tuple[str, dict[str, Any]]]],
        sessions: list[WriteSession],
    ) -> list[Event]:
        ends = self.blobs.flush([loc for s in sessions for loc in s.held])
        failpoints.hit("commit.before_txn")
        with self._deferred_lock:
            deferred = list(self._deferred)

            def fn(txn: Txn) -> list[Event]:
                # Segment ends first: ``build`` may drop a segment (gc compaction).
                record_segment_ends(txn, ends)
                records = deferred + build(txn)
                for s in sessions:
                    self._index(txn, s)
                events = self.log.append(txn, records)
                for e in events:
                    apply(txn, e)
                failpoints.hit("commit.in_txn")
                return events

            events = self.kv.write(fn)
            del self._deferred[: len(deferred)]
        failpoints.hit("commit.after")
        return events

    def _index(self, txn: Txn, session: WriteSession) -> None:
        added = 0
        for digest in session.referenced:
            if txn.get("chunks", digest) is not None:
                continue
            rec = session.new.get(digest)
            if rec is None:
                raise _ChunkGoneError(digest)
            txn.put("chunks", digest, rec.pack())
            added += rec.stored_len
        if added:
            raw = txn.get("meta", b"stored_bytes")
            total = (0 if raw is None else int.from_bytes(raw, "big")) + added
            txn.put("meta", b"stored_bytes", total.to_bytes(8, "big"))

    # -- artifacts -------------------------------------------------------------
    def prepare(
        self,
        obj: Any,
        name: str,
        *,
        version: int | str | None = None,
        tags: Iterable[str] = (),
        metadata: Mapping[str, Any] | None = None,
        materializer: type | None = None,
        producer: str | None = None,
        run: str | None = None,
        session: WriteSession | None = None,
    ) -> Prepared:
        """Materialize ``obj`` into chunks (durable after the next commit)."""
        from materializers import registry

        self._check_writable(f"save artifact {name!r}")
        _check_name(name)
        version = normalise_version(version)
        tags = _check_tags(tags)
        if metadata is not None and not isinstance(metadata, Mapping):
            raise InvalidArgumentError("metadata must be a mapping of str to plain values")
        user_meta = plain(dict(metadata or {}), where="metadata")
        cls = materializer or registry.materializer_for(type(obj))
        ident = registry.identity(cls)
        session = session or self.chunks.session()
        files = WriteFiles(session, self._secret, secret_problem=self._secret_problem)
        meta_job: Future[Any] | None = None
        try:
            m = cls(files)
            if getattr(obj, "nbytes", 0) >= _OVERLAP_METADATA:
                # Large arrays: compute statistics while the bytes are hashed and written.
                meta_job = _side_pool().submit(m.extract_metadata, obj)
            m.save(obj)
            files.finish()
        except StoreSecretError as e:
            files.discard()
            raise StoreSecretError(f"artifact {name!r}: {e}") from None
        except ArtledgerError:
            files.discard()
            session.release()
            raise
        except Exception as e:
            files.discard()
            session.release()
            raise MaterializerError(
                f"materializer {ident} failed to save a {type(obj).__qualname__} "
                f"as artifact {name!r}: {e}"
            ) from e
        finally:
            if meta_job is not None:
                concurrent.futures.wait([meta_job])
        entries = list(files.entries.values())
        chash = content_hash(entries)
        size = sum(f.size for f in entries)
        extracted = _safe_call(
            m.extract_metadata if meta_job is None else (lambda _: meta_job.result()),
            obj,
            f"{ident}.extract_metadata",
        )
        meta = plain(extracted or {}, where=f"metadata extracted by {ident}")
        meta.update({"size": size, "content_hash": chash, "materializer": ident})
        vis: list[list[Any]] = []
        vfiles = WriteFiles(session, self._secret, secret_problem=self._secret_problem)
        vm = cls(vfiles)
        vm.metadata = extracted if isinstance(extracted, dict) else None
        kinds = _safe_call(vm.save_visualizations, obj, f"{ident}.save_visualizations")
        vfiles.finish()
        for vname, kind in (kinds or {}).items():
            entry = vfiles.entries.get(vname)
            if entry is not None:
                vis.append([vname, str(kind), entry.to_record()])
        data = {
            "id": secrets.token_hex(8),
            "name": name,
            "version": version,
            "content_hash": chash,
            "data_type": registry.topic_of(type(obj)),
            "materializer": ident,
            "materializer_version": int(getattr(cls, "VERSION", 1)),
            "artifact_type": str(getattr(cls, "ASSOCIATED_ARTIFACT_TYPE", "data")),
            "files": [f.to_record() for f in entries],
            "visualizations": vis,
            "state": plain(files.state, where="materializer state"),
            "metadata": meta,
            "user_metadata": user_meta,
            "tags": tags,
            "producer": producer,
            "run": run,
            "size": size,
        }
        return Prepared(data, session, version)

    def assign_versions(self, txn: Txn, prepared: list[Prepared]) -> list[dict[str, Any]]:
        """Fill in version numbers inside the commit transaction (gapless per name)."""
        nexts: dict[str, int] = {}
        taken: set[tuple[str, int | str]] = set()  # versions given earlier in this batch
        out = []
        for p in prepared:
            d = dict(p.data)
            name = d["name"]
            nxt = nexts.get(name) or next_version(txn, name)
            v = p.requested_version
            if v is None:
                v = nxt
                if v > MAX_VERSION:
                    raise InvalidArgumentError(
                        f"artifact {name!r} has used up its integer versions (the last is "
                        f"{v - 1}); give this one a string version"
                    )
            elif (name, v) in taken or txn.get("versions", version_key(name, v)) is not None:
                raise InvalidArgumentError(
                    f"artifact {name!r} already has version {v!r}; pick another or omit version="
                )
            if isinstance(v, int) and v >= nxt:
                nxt = v + 1
            nexts[name] = nxt
            taken.add((name, v))
            d["version"] = v
            out.append(d)
        return out

    def commit_artifacts(
        self,
        prepared: list[Prepared],
        extra: Callable[[list[dict[str, Any]]], list[tuple[str, dict[str, Any]]]] | None = None,
    ) -> list[ArtifactVersion]:
        """Commit prepared artifacts (plus ``extra`` events built from their
        final records) in one durable transaction."""
        datas: list[dict[str, Any]] = []

        def build(txn: Txn) -> list[tuple[str, dict[str, Any]]]:
            datas[:] = self.assign_versions(txn, prepared)
            records = [("artifact.written", d) for d in datas]
            if extra is not None:
                records += extra(datas)
            return records

        sessions = {id(p.session): p.session for p in prepared}.values()
        try:
            self.commit(build, sessions)
        except _ChunkGoneError as e:
            raise StoreError(
                f"chunk {e.args[0].hex()} was collected by a concurrent gc while this write "
                "was in progress; nothing was committed, retry the write"
            ) from None
        return [self.get_artifact_by_id(d["id"]) for d in datas]

    def save_artifact(
        self,
        obj: Any,
        name: str,
        version: int | str | None = None,
        tags: Iterable[str] = (),
        metadata: Mapping[str, Any] | None = None,
        *,
        materializer: type | None = None,
    ) -> ArtifactVersion:
        """Store ``obj`` as the next version of ``name``; returns after a durable commit."""
        for attempt in range(2):
            p = self.prepare(
                obj, name, version=version, tags=tags, metadata=metadata, materializer=materializer
            )
            try:
                return self.commit_artifacts([p])[0]
            except StoreError as e:
                if attempt or "concurrent gc" not in str(e):
                    raise
        raise AssertionError("unreachable")

    def load_artifact(self, name: str, version: int | str | None = None) -> Any:
        """The object stored as ``name`` (latest version unless one is given)."""
        return self.get_artifact(name, version).load()

    def _resolve(self, art: ArtifactVersion | str) -> ArtifactVersion:
        if isinstance(art, ArtifactVersion):
            art = self.get_artifact_by_id(art.id)
        elif isinstance(art, str):
            art = self.get_artifact_by_id(art)
        else:
            raise InvalidArgumentError(f"expected an ArtifactVersion or an id, not {art!r}")
        if art.deleted:
            raise ArtifactNotFoundError(f"artifact {art.name}:{art.version} was deleted")
        return art

    def _simple(self, records: list[tuple[str, dict[str, Any]]]) -> None:
        self.commit(lambda txn: records)

    def tag(self, art: ArtifactVersion | str, *tags: str) -> ArtifactVersion:
        """Add tags to an artifact version."""
        a = self._resolve(art)
        self._simple([("artifact.tagged", {"id": a.id, "tags": _check_tags(tags)})])
        return self.get_artifact_by_id(a.id)

    def untag(self, art: ArtifactVersion | str, *tags: str) -> ArtifactVersion:
        """Remove tags from an artifact version."""
        a = self._resolve(art)
        self._simple([("artifact.untagged", {"id": a.id, "tags": _check_tags(tags)})])
        return self.get_artifact_by_id(a.id)

    def log_metadata(
        self, art: ArtifactVersion | str, metadata: Mapping[str, Any]
    ) -> ArtifactVersion:
        """Attach user metadata to an artifact version (a ``metadata.logged`` event)."""
        a = self._resolve(art)
        if not isinstance(metadata, Mapping):
            raise InvalidArgumentError("metadata must be a mapping of str to plain values")
        self._simple([("metadata.logged", {"id": a.id, "metadata": plain(dict(metadata))})])
        return self.get_artifact_by_id(a.id)

    def delete_artifact(self, art: ArtifactVersion | str) -> None:
        """Tombstone an artifact version; its bytes stay until :meth:`gc`."""
        a = self._resolve(art)
        self._simple([("artifact.deleted", {"id": a.id})])

    def delete_run(self, run: Run | str) -> None:
        """Tombstone a run (its artifacts stay; delete them separately)."""
        r = self.get_run(run.id if isinstance(run, Run) else run)
        if r.deleted:
            return
        self._simple([("run.deleted", {"id": r.id})])

    # -- maintenance ---------------------------------------------------------------
    def rebuild(self, progress: Callable[[int, int], None] | None = None) -> int:
        """Drop every projection and fold the whole log again; events folded."""
        self._check_writable("rebuild the projections")
        self.flush()

        def fn(txn: Txn) -> int:
            for db in PROJECTION_DBS:
                txn.drop(db)
            txn.delete("meta", b"proj_pos")
            head = self.log.head(txn)

            def events() -> Iterator[Event]:
                for e in self.log.read(txn):
                    yield e
                    if progress is not None and e.seq % 20000 == 0:
                        progress(e.seq, head)

            n = fold(txn, events())
            failpoints.hit("rebuild.before_commit")
            return n

        return self.kv.write(fn)

    def verify(
        self,
        *,
        fix: bool = False,
        progress: Callable[[str, int, int], None] | None = None,
        isolate: bool = False,
    ) -> VerifyReport:
        """Check the hash chain, every chunk, the projections and the packs.

        Damage is reported as problems, stage by stage, never raised. With
        ``fix``: rebuild projections that differ from the log and truncate
        torn pack tails (referenced data is never deleted). With ``isolate``:
        first read every record of the ledger in a child process, and stop
        there if that kills it (a damaged size inside an LMDB page crashes
        the process that reads it; ``artledger verify`` does this)."""
        from engine.ops.maintenance import VerifyReport, verify

        if fix:
            self._check_writable("fix what verify finds")
        if isolate and self.path is not None:
            from engine.ops.salvage import walk_ledger

            problems = walk_ledger(self.path / "ledger" / "data.mdb")
            if problems:
                return VerifyReport(
                    problems=[
                        *problems,
                        "the ledger was not checked further in this process (reading it would "
                        "kill it); `artledger recover` rebuilds the ledger",
                    ]
                )
        return verify(self, progress=progress, fix=fix)

    def gc(self, dry_run: bool = False, *, explain: bool = False) -> GcReport:
        """Reclaim chunks no live artifact version references."""
        from engine.ops.maintenance import gc

        if not dry_run:
            self._check_writable("collect garbage")
        with damage_boundary(f"gc on the ledger at {self.path}"):
            return gc(self, dry_run=dry_run, explain=explain)

    def export(
        self,
        path: str | os.PathLike[str],
        *,
        names: Iterable[str] | None = None,
        progress: Callable[[str, int, int], None] | None = None,
    ) -> ExportReport:
        """Write a portable, checksummed stream of the log and its chunks to
        ``path`` (with ``names``: those artifacts, their upstream lineage and
        the runs that made them). Format: ``engine.ops.transfer``."""
        from engine.ops.transfer import export_stream

        with damage_boundary(f"export of the ledger at {self.path}"):
            return export_stream(
                self, path, names=None if names is None else list(names), progress=progress
            )

    @classmethod
    def import_(
        cls,
        path: str | os.PathLike[str],
        into: Store | str | os.PathLike[str] | None = None,
        trust_pickles: bool = False,
        *,
        progress: Callable[[str, int, int], None] | None = None,
    ) -> ImportReport:
        """Validate the stream at ``path`` completely, then import it into
        ``into`` (a store, or a path opened like :meth:`open`) all-or-nothing.
        Imported pickles stay untrusted unless ``trust_pickles``."""
        from engine.ops.transfer import import_stream

        if isinstance(into, Store):
            into._check_writable("import")
            return import_stream(into, path, trust_pickles=trust_pickles, progress=progress)
        with cls.open(into) as store:
            store._check_writable("import")
            return import_stream(store, path, trust_pickles=trust_pickles, progress=progress)

    def as_of(self, when: Any) -> HistoricalView:
        """A read-only view of the store as it was after event ``when`` (a
        sequence number) or at a ``datetime``."""
        from engine.query.history import HistoricalView

        self.flush()
        with damage_boundary(f"the ledger at {self.path}"):
            return HistoricalView.build(self, when)

    def run(self, pipeline: Any, /, **params: Any) -> Any:
        """Run ``pipeline`` on this store; every event of the run is durable on return.

        ``enable_cache=True|False`` is the run option (it overrides steps and the
        pipeline); every other keyword is a pipeline parameter. Returns the
        :class:`~engine.query.models.Run`; a failing step's exception propagates after
        the run is recorded as failed."""
        from engine.pipelines.runner import run_pipeline

        self._check_writable(f"run pipeline {getattr(pipeline, '__name__', pipeline)!r}")
        enable_cache = params.pop("enable_cache", None)
        return run_pipeline(self, pipeline, params, enable_cache)

    def explain(self, step_run: Any) -> list[str]:
        """Why a step ran: what differs from the nearest earlier run of that step."""
        from engine.pipelines.explain import explain
        from engine.query.models import StepRun

        if not isinstance(step_run, StepRun):
            step_run = self.get_step_run(step_run)
        return explain(step_run)


def record_segment_ends(txn: Txn, ends: Mapping[str, int]) -> None:
    """Record pack segment ends returned by ``BlobStore.flush`` (never lowering one)."""
    for name, end in ends.items():
        old = txn.get("segments", name.encode())
        if old is None or _Q.unpack(old)[0] < end:
            txn.put("segments", name.encode(), _Q.pack(end))


def _check_name(name: Any) -> None:
    if not isinstance(name, str) or not name or "\x00" in name or len(name) > 512:
        raise InvalidArgumentError(
            f"artifact name must be a non-empty string without NUL (at most 512 chars), "
            f"not {name!r}"
        )


def _check_tags(tags: Iterable[str]) -> list[str]:
    if isinstance(tags, str):
        tags = [tags]
    out = []
    for t in tags:
        if not isinstance(t, str) or not t or "\x00" in t:
            raise InvalidArgumentError(f"tags must be non-empty strings, not {t!r}")
        out.append(t)
    return sorted(set(out))


_OVERLAP_METADATA = 8 << 20
_side: ThreadPoolExecutor | None = None
_side_lock = threading.Lock()


def _side_pool() -> ThreadPoolExecutor:
    """One thread for work that overlaps a save (metadata of large arrays)."""
    global _side
    with _side_lock:
        if _side is None:
            _side = ThreadPoolExecutor(1, thread_name_prefix="artledger-meta")
        return _side


def _safe_call(fn: Callable[[Any], Any], obj: Any, what: str) -> Any:
    try:
        return fn(obj)
    except ArtledgerError:
        raise
    except Exception as e:
        warnings.warn(
            f"{what} failed ({type(e).__name__}: {e}); skipped", UserWarning, stacklevel=3
        )
        return None


def _refuse_missing(root: Path, df: DataFile) -> None:
    """Raise :class:`LedgerMissingError` when ``root`` was used but its ledger is gone."""
    used = evidence_of_use(root)
    if used is None:
        return
    what = {
        "missing": "is missing",
        "empty": "is empty (0 bytes)",
        "blank": "holds a ledger that never committed anything",
    }.get(df.state, f"is unusable ({df.state})")
    raise LedgerMissingError(
        f"the store at {root} was used ({used}) but its ledger {df.path} {what}; "
        "refusing to start a new, empty ledger over it (every artifact would disappear and "
        f"the pack files' chunks would be unreachable). {RECOVER_HINT[0].upper()}"
        f"{RECOVER_HINT[1:]}"
    )


def _fingerprint(secret: bytes) -> bytes:
    return hashlib.blake2b(secret, digest_size=16, person=b"artledger-secret").digest()


def _load_secret(root: Path, *, create: bool) -> tuple[bytes, str | None]:
    path = root / "secret"
    if create and not path.exists():
        # Written whole to a private file, then linked into place: a crash or a
        # concurrent first open never sees an empty or partial secret.
        tmp = root / f".secret-{secrets.token_hex(8)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, secrets.token_bytes(32))
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)
        finally:
            tmp.unlink()
        _fsync_dir(root)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return secrets.token_bytes(32), (
            f"the store secret {path} is missing: pickled artifacts will neither load nor "
            "save; restore the file from a backup and reopen the store"
        )
    except OSError as e:
        raise StoreError(f"cannot read the store secret {path}: {e}") from e
    if len(data) < 16:
        return secrets.token_bytes(32), (
            f"the store secret {path} is truncated: pickled artifacts will neither load nor "
            "save; restore the file from a backup and reopen the store"
        )
    return data, None


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
