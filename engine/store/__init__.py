"""``Store``: the public face of a store, over its ledger and its catalog.

Writes go through the :class:`~engine.ledger.core.Ledger` (the one commit
path), reads through a :class:`~engine.query.catalog.Catalog` composed over
the same KV; verify, gc, export, import, history and pipeline runs are
delegated to ``engine.ops``, ``engine.query.history`` and
``engine.pipelines``. ``store.ledger`` is the write side for code that needs
it (the runner, the benchmarks, tests); it is not part of the stable API.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from engine.errors import ArtifactNotFoundError, InvalidArgumentError
from engine.events import (
    ARTIFACT_DELETED,
    ARTIFACT_TAGGED,
    ARTIFACT_UNTAGGED,
    METADATA_LOGGED,
    RUN_DELETED,
)
from engine.ledger.artifacts import check_tags, commit_artifacts, plain, prepare
from engine.ledger.core import Ledger, SyncStatus, retry_on_concurrent_gc
from engine.ledger.layout import Identity
from engine.ledger.opening import Options, memory_ledger
from engine.ledger.replica import SharedOptions, open_any_ledger
from engine.projections.records import damage_boundary
from engine.query.catalog import Catalog
from engine.query.models import ArtifactVersion, Run, StepRun
from engine.storage.log import Event
from engine.store.defaults import DEFAULT_DIR, default_path
from engine.store.transfer import Transfers

if TYPE_CHECKING:
    from engine.ops.maintenance import GcReport, VerifyReport
    from engine.ops.recover import RecoverReport
    from engine.query.history import HistoricalView
    from engine.query.lineage import LineageGraph


__all__ = [
    "DEFAULT_DIR",
    "Store",
    "default_path",
    "plain",
]


class Store(Transfers):
    """An artledger store: the event log, the chunk store and the projections.

    Open with :meth:`Store.open` (LMDB and pack files on disk) or
    :meth:`Store.memory` (the in-memory twin). Thread-safe; several processes
    may open and write one on-disk store at once.
    """

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.path = ledger.path
        self._catalog = Catalog(
            ledger.kv,
            ledger.chunks,
            secret=ledger.secret,
            secret_problem=ledger.secret_problem,
            check_open=ledger.check_open,
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
        log: str | None = None,
        chunks: str | None = None,
        timeout: float = 10.0,
        cache_bytes: int = 1 << 30,
    ) -> Store:
        """Open the store at ``path`` (None: ``$ARTLEDGER_STORE`` or ``./.artledger``),
        creating it when missing.

        With ``log`` (``postgresql://user@host:port/db``) and ``chunks``
        (``s3://bucket/prefix``, ``file:///dir``, ``gs://``, ``az://``), or
        ``$ARTLEDGER_LOG``/``$ARTLEDGER_CHUNKS``, ``path`` is this machine's
        replica of a shared store, created or joined (docs/shared.md); the URLs
        are recorded there, so ``Store.open(path)`` reconnects. ``timeout``
        bounds each network wait (seconds); ``cache_bytes`` the local chunk cache.

        ``readonly`` opens it for reading only (every write raises
        :class:`ReadOnlyStoreError`); a store on a read-only filesystem, or one
        this user cannot write, is opened read-only without asking. A store
        whose ledger is missing or damaged is refused
        (:class:`LedgerMissingError`, :class:`LedgerDamagedError`), never
        replaced by an empty one: :meth:`recover` rebuilds it."""
        root = (Path(path) if path is not None else default_path()).expanduser()
        options = Options(chunk_size, level, workers, map_size)
        shared = SharedOptions(log, chunks, timeout, cache_bytes)
        return cls(open_any_ledger(root, options, shared, readonly=readonly))

    @classmethod
    def memory(cls, *, chunk_size: int = 4 << 20, level: int = 3, workers: int = 2) -> Store:
        """A store held in memory (the in-memory twin of the LMDB/packs store)."""
        return cls(memory_ledger(Options(chunk_size, level, workers)))

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

    def identity(self) -> Identity:
        """The store id, chunk-address seed and secret fingerprint, from the ledger."""
        return self.ledger.identity()

    @property
    def store_id(self) -> str:
        return self.ledger.store_id

    def close(self) -> None:
        """Flush deferred events and release files; the store object is unusable after."""
        self.ledger.close()

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

    def sync(self) -> SyncStatus | None:
        """Pull the events other machines committed to a shared store's log into
        this replica (also done by every write and every ``run``); where the
        replica stands. ``SharedStoreUnavailableError`` when the log server
        cannot be reached: reads still work, from the replica as it was. None
        for an embedded store."""
        return self.ledger.sync()

    def replica_status(self) -> SyncStatus | None:
        """A shared store's replica: its head, when it last synced, and why the
        shared log is unreachable if it is (``.staleness()`` says it in words).
        None for an embedded store."""
        return self.ledger.status()

    def flush(self) -> None:
        """Commit deferred events (step timings and the like) now, durably."""
        self.ledger.flush()

    # -- reading (the catalog) -------------------------------------------------------
    @property
    def catalog(self) -> Catalog:
        """The read side: every query below is answered by it."""
        return self._catalog

    @property
    def head(self) -> int:
        """The last sequence number in the log (0 when empty)."""
        return self.catalog.head

    def events(self, start: int = 1, stop: int | None = None) -> Iterator[Event]:
        """Events with ``start <= seq < stop`` in order (``stop`` exclusive)."""
        return self.catalog.events(start, stop)

    def get_artifact(
        self, name: str, version: int | str | None = None, *, tag: str | None = None
    ) -> ArtifactVersion:
        """A version of ``name``: the latest, ``version`` (an int, a label, or
        ``"latest"``), or the newest live version tagged ``tag``."""
        try:
            return self.catalog.get_artifact(name, version, tag=tag)
        except ArtifactNotFoundError as e:
            raise ArtifactNotFoundError(f"{e} (searched {self._where()})") from None

    def _where(self) -> str:
        return "an in-memory store" if self.path is None else f"the store at {self.path}"

    def get_artifact_by_id(self, artifact_id: str) -> ArtifactVersion:
        """The artifact version with this id (deleted ones too)."""
        return self.catalog.get_artifact_by_id(artifact_id)

    def list_artifacts(
        self, name: str | None = None, tag: str | None = None, *, include_deleted: bool = False
    ) -> list[ArtifactVersion]:
        """Artifact versions, oldest first, optionally of one name and/or one tag."""
        return self.catalog.list_artifacts(name, tag, include_deleted=include_deleted)

    def find_by_content(self, content_hash: str) -> list[ArtifactVersion]:
        """Every artifact version whose files hash to ``content_hash``."""
        return self.catalog.find_by_content(content_hash)

    def get_run(self, run_id: str) -> Run:
        """The run with this id."""
        return self.catalog.get_run(run_id)

    def list_runs(self, pipeline: str | None = None) -> list[Run]:
        """Runs, oldest first, optionally of one pipeline."""
        return self.catalog.list_runs(pipeline)

    def get_step_run(self, step_run_id: str) -> StepRun:
        """The step run with this id."""
        return self.catalog.get_step_run(step_run_id)

    def step_components(self, step_run_id: str) -> dict[str, Any] | None:
        """The cache-key components a step run recorded (None if it computed no key)."""
        return self.catalog.step_components(step_run_id)

    def consumers(self, art: ArtifactVersion | str) -> list[StepRun]:
        """Step runs that read this artifact version as an input, oldest first."""
        return self.catalog.consumers(art)

    def lineage(
        self, art: ArtifactVersion | str, direction: str = "upstream", depth: int | None = None
    ) -> LineageGraph:
        """Where an artifact came from (``upstream``) or what was derived from it
        (``downstream``), across runs and through cached steps."""
        return self.catalog.lineage(art, direction, depth)

    def stats(self) -> dict[str, int]:
        """Counts and sizes: events, runs, artifacts, chunks, logical and stored bytes."""
        return self.catalog.stats()

    # -- writing ---------------------------------------------------------------------
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

        def write() -> list[dict[str, Any]]:
            p = prepare(
                self.ledger,
                obj,
                name,
                version=version,
                tags=tags,
                metadata=metadata,
                materializer=materializer,
            )
            return commit_artifacts(self.ledger, [p])

        return self.get_artifact_by_id(retry_on_concurrent_gc(write)[0]["id"])

    def load_artifact(
        self, name: str, version: int | str | None = None, *, tag: str | None = None
    ) -> Any:
        """The object stored as ``name``: the latest version, ``version``, or the
        newest version tagged ``tag``."""
        return self.get_artifact(name, version, tag=tag).load()

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

    def _events(self, records: list[tuple[str, dict[str, Any]]]) -> None:
        self.ledger.commit(lambda txn: records)

    def tag(self, art: ArtifactVersion | str, *tags: str) -> ArtifactVersion:
        """Add tags to an artifact version."""
        a = self._resolve(art)
        self._events([(ARTIFACT_TAGGED, {"id": a.id, "tags": check_tags(tags)})])
        return self.get_artifact_by_id(a.id)

    def untag(self, art: ArtifactVersion | str, *tags: str) -> ArtifactVersion:
        """Remove tags from an artifact version."""
        a = self._resolve(art)
        self._events([(ARTIFACT_UNTAGGED, {"id": a.id, "tags": check_tags(tags)})])
        return self.get_artifact_by_id(a.id)

    def log_metadata(
        self, art: ArtifactVersion | str, metadata: Mapping[str, Any]
    ) -> ArtifactVersion:
        """Attach user metadata to an artifact version (a ``metadata.logged``
        event); it is kept apart from the engine's (``art.user_metadata``)."""
        a = self._resolve(art)
        if not isinstance(metadata, Mapping):
            raise InvalidArgumentError("metadata must be a mapping of str to plain values")
        clash = sorted(set(map(str, metadata)) & set(a.record()["metadata"]))
        if clash:
            warnings.warn(
                f"metadata keys {clash} of {a.name}:{a.version} are the engine's; "
                "art.metadata keeps the engine's values, art.user_metadata yours",
                UserWarning,
                stacklevel=2,
            )
        self._events([(METADATA_LOGGED, {"id": a.id, "metadata": plain(dict(metadata))})])
        return self.get_artifact_by_id(a.id)

    def trust(self, art: ArtifactVersion | str) -> ArtifactVersion:
        """Vouch for an imported (untrusted) artifact version: sign its pickles
        again with this store's secret, recorded as an ``artifact.trusted``
        event, so they load (and the classes it names may be imported). Use it
        only for versions whose source you trust; a trusted version is returned
        as it is."""
        from engine.ops.trust import trust

        return trust(self, self._resolve(art))[0]

    def delete_artifact(self, art: ArtifactVersion | str) -> None:
        """Tombstone an artifact version; its bytes stay until :meth:`gc`."""
        a = self._resolve(art)
        self._events([(ARTIFACT_DELETED, {"id": a.id})])

    def delete_run(self, run: Run | str) -> None:
        """Tombstone a run (its artifacts stay; delete them separately)."""
        r = self.get_run(run.id if isinstance(run, Run) else run)
        if r.deleted:
            return
        self._events([(RUN_DELETED, {"id": r.id})])

    # -- maintenance ---------------------------------------------------------------
    def rebuild(self, progress: Callable[[int, int], None] | None = None) -> int:
        """Drop every projection and fold the whole log again; events folded."""
        return self.ledger.rebuild(progress)

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
        from engine.ops.maintenance import verify_isolated

        if fix:
            self.ledger.check_writable("fix what verify finds")
        return verify_isolated(self, progress=progress, fix=fix, isolate=isolate)

    def gc(
        self, dry_run: bool = False, *, explain: bool = False, grace: float = 3600.0
    ) -> GcReport:
        """Reclaim chunks no live artifact version references. On a shared store
        it also deletes objects no commit references that are older than
        ``grace`` seconds (uploads whose write never committed); it is safe
        with writers running on other machines (docs/shared.md)."""
        from engine.ops.maintenance import gc

        if not dry_run:
            self.ledger.check_writable("collect garbage")
        with damage_boundary(f"gc on the ledger at {self.path}"):
            return gc(self, dry_run=dry_run, explain=explain, grace=grace)

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

        self.ledger.check_writable(f"run pipeline {getattr(pipeline, '__name__', pipeline)!r}")
        self.ledger.sync()  # a shared store: steps run elsewhere are cache hits here
        enable_cache = params.pop("enable_cache", None)
        return run_pipeline(self, pipeline, params, enable_cache)

    def explain(self, step_run: Any) -> list[str]:
        """Why a step ran: what differs from the nearest earlier run of that step."""
        from engine.pipelines.explain import explain
        from engine.query.models import StepRun

        if not isinstance(step_run, StepRun):
            step_run = self.get_step_run(step_run)
        return explain(step_run)
