"""Read-side queries over the projections, shared by ``Store`` and ``as_of`` views.

A :class:`Catalog` answers from one KV (the live ledger, or a private
in-memory fold of the log up to some event) and reads artifact bytes from the
store's chunk store.
"""

from __future__ import annotations

import contextlib
import itertools
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from engine.errors import (
    ArtifactNotFoundError,
    ArtledgerError,
    IntegrityError,
    InvalidArgumentError,
    MaterializerError,
    RunNotFoundError,
    UntrustedArtifactError,
)
from engine.projections.fold import counter
from engine.projections.keys import (
    consumer_key,
    normalise_version,
    version_key,
)
from engine.projections.records import DECODE_ERRORS, HINT, damage_boundary, damaged, record
from engine.projections.runs import run_step_ids
from engine.query.models import ArtifactVersion, Run, StepRun
from engine.storage.chunks import ChunkStore, FileEntry
from engine.storage.files import ReadFiles
from engine.storage.kv import KV, Txn
from engine.storage.kv.base import Snapshot
from engine.storage.log import Event, EventLog

if TYPE_CHECKING:
    from engine.query.lineage import LineageGraph


class Catalog:
    """Queries over projections (runs, artifacts, lineage, cache) and artifact loads.

    Composed by ``Store`` over the live ledger and by ``HistoricalView`` over
    a private fold; it reads, never writes."""

    def __init__(
        self,
        kv: KV,
        chunks: ChunkStore,
        *,
        secret: bytes,
        secret_problem: str | None = None,
        check_open: Callable[[], None] | None = None,
    ) -> None:
        self.kv = kv
        self.chunks = chunks
        self.log = EventLog()
        self._secret = secret
        self._secret_problem = secret_problem
        self._check_open = check_open or _always_open

    def _read(self) -> _CatalogRead:
        """A read snapshot for a ``with`` block; damaged records met inside
        become ``IntegrityError``."""
        self._check_open()
        return _CatalogRead(self.kv)

    # -- log -------------------------------------------------------------------
    @property
    def head(self) -> int:
        """The last sequence number in the log (0 when empty)."""
        with self._read() as txn:
            return self.log.head(txn)

    def events(self, start: int = 1, stop: int | None = None) -> Iterator[Event]:
        """Events with ``start <= seq < stop`` in order (``stop`` exclusive)."""
        self._check_open()
        pos = max(1, start)
        while stop is None or pos < stop:
            batch_stop = pos + 4096 if stop is None else min(stop, pos + 4096)
            with self._read() as txn:
                batch = list(self.log.read(txn, pos, batch_stop))
            if not batch:
                return
            if batch[0].seq < pos or any(b.seq <= a.seq for a, b in itertools.pairwise(batch)):
                raise IntegrityError(
                    f"the event log's keys near event {pos} are out of order: the ledger at "
                    f"{getattr(self.kv, 'path', 'memory')} is damaged; {HINT}"
                )
            yield from batch
            pos = batch[-1].seq + 1

    # -- artifacts -------------------------------------------------------------
    def _artifact_rec(self, txn: Txn, aid: str) -> dict[str, Any] | None:
        raw = txn.get("artifacts", aid.encode())
        return None if raw is None else record(raw, "artifacts")

    def get_artifact_by_id(self, artifact_id: str) -> ArtifactVersion:
        with self._read() as txn:
            rec = self._artifact_rec(txn, artifact_id)
        if rec is None:
            raise ArtifactNotFoundError(f"no artifact version with id {artifact_id!r}")
        return ArtifactVersion(self, rec)

    def get_artifact(
        self, name: str, version: int | str | None = None, *, tag: str | None = None
    ) -> ArtifactVersion:
        """The version asked for, or the newest created (not deleted) when None
        or ``"latest"`` (unless a version is labelled ``"latest"``); with ``tag``,
        the newest live version carrying that tag."""
        if not isinstance(name, str) or not name:
            raise InvalidArgumentError(f"artifact name must be a non-empty string, not {name!r}")
        if tag is not None:
            if version is not None:
                raise InvalidArgumentError("give a version or a tag, not both")
            return self._tagged(name, tag)
        version = normalise_version(version)
        with self._read() as txn:
            if version == "latest" and txn.get("versions", version_key(name, version)) is None:
                version = None
            if version is None:
                for _, aid in txn.scan("names", prefix=name.encode() + b"\x00", reverse=True):
                    rec = self._artifact_rec(txn, aid.decode())
                    if rec is not None and rec["deleted"] is None:
                        return ArtifactVersion(self, rec)
                raise ArtifactNotFoundError(self._missing_name(txn, name))
            aid_raw = txn.get("versions", version_key(name, version))
            if aid_raw is None:
                known = self._versions_of(txn, name)
                if not known:
                    raise ArtifactNotFoundError(self._missing_name(txn, name))
                raise ArtifactNotFoundError(
                    f"artifact {name!r} has no version {version!r}; versions: "
                    + ", ".join(repr(v) for v in known[-10:])
                )
            rec = self._artifact_rec(txn, aid_raw.decode())
        assert rec is not None
        if rec["deleted"] is not None:
            raise ArtifactNotFoundError(
                f"artifact {name}:{version} was deleted (event {rec['deleted']})"
            )
        return ArtifactVersion(self, rec)

    def _tagged(self, name: str, tag: str) -> ArtifactVersion:
        if not isinstance(tag, str) or not tag:
            raise InvalidArgumentError(f"tag must be a non-empty string, not {tag!r}")
        found = self.list_artifacts(name, tag)
        if found:
            return found[-1]
        with self._read() as txn:
            if not self._versions_of(txn, name):
                raise ArtifactNotFoundError(self._missing_name(txn, name))
        tags = sorted({t for a in self.list_artifacts(name) for t in a.tags})
        raise ArtifactNotFoundError(
            f"no live version of artifact {name!r} is tagged {tag!r}; its tags: "
            + (", ".join(repr(t) for t in tags) or "none")
        )

    def _versions_of(self, txn: Txn, name: str) -> list[Any]:
        out = []
        for _, aid in txn.scan("names", prefix=name.encode() + b"\x00"):
            rec = self._artifact_rec(txn, aid.decode())
            if rec is not None and rec["deleted"] is None:
                out.append(rec["version"])
        return out

    def _missing_name(self, txn: Txn, name: str) -> str:
        if txn.get("name_meta", name.encode()) is not None:
            return f"every version of artifact {name!r} was deleted"
        return f"no artifact named {name!r}; `artledger artifacts` lists the names"

    def list_artifacts(
        self, name: str | None = None, tag: str | None = None, *, include_deleted: bool = False
    ) -> list[ArtifactVersion]:
        """Artifact versions, oldest first, optionally of one name and/or one tag."""
        for what, value in (("name", name), ("tag", tag)):
            if value is not None and not isinstance(value, str):
                raise InvalidArgumentError(f"{what} must be a string or None, not {value!r}")
        out: list[ArtifactVersion] = []
        with self._read() as txn:
            if tag is not None:
                ids = [
                    k.split(b"\x00", 1)[1].decode()
                    for k, _ in txn.scan("tags", prefix=tag.encode() + b"\x00")
                ]
                recs = [r for r in (self._artifact_rec(txn, i) for i in ids) if r is not None]
                if name is not None:
                    recs = [r for r in recs if r["name"] == name]
                recs.sort(key=lambda r: r["seq"])
            elif name is not None:
                recs = []
                for _, aid in txn.scan("names", prefix=name.encode() + b"\x00"):
                    rec = self._artifact_rec(txn, aid.decode())
                    if rec is not None:
                        recs.append(rec)
            else:
                recs = [record(v, "artifacts") for _, v in txn.scan("artifacts")]
                recs.sort(key=lambda r: r["seq"])
        for rec in recs:
            if include_deleted or rec["deleted"] is None:
                out.append(ArtifactVersion(self, rec))
        return out

    def find_by_content(self, content_hash: str) -> list[ArtifactVersion]:
        """Live artifact versions whose data has this content hash."""
        try:
            prefix = bytes.fromhex(content_hash)
        except (TypeError, ValueError):
            raise InvalidArgumentError(
                f"a content hash is a hex string, not {content_hash!r}"
            ) from None
        with self._read() as txn:
            ids = [k[16:].decode() for k, _ in txn.scan("content", prefix=prefix)]
            recs = [r for r in (self._artifact_rec(txn, i) for i in ids) if r is not None]
        return [ArtifactVersion(self, r) for r in sorted(recs, key=lambda r: r["seq"])]

    # -- loading ---------------------------------------------------------------
    def _label(self, rec: dict[str, Any]) -> str:
        return f"artifact {rec['name']}:{rec['version']} (id {rec['id']})"

    def _files(self, rec: dict[str, Any], key: str = "files") -> ReadFiles:
        with damage_boundary(self._label(rec)):
            entries = {f[0]: FileEntry.from_record(f) for f in rec[key]}
            return ReadFiles(
                self.chunks,
                self._secret,
                entries,
                dict(rec.get("state") or {}),
                self._label(rec),
                trusted=not rec.get("untrusted", False),
            )

    def _materializer(self, rec: dict[str, Any], label: str, untrusted: bool) -> tuple[Any, Any]:
        """The materializer class and the data type recorded for ``rec``."""
        from materializers import registry

        try:
            cls = registry.resolve(rec["materializer"])
        except MaterializerError:
            raise
        except Exception as e:
            raise MaterializerError(
                f"cannot import materializer {rec['materializer']!r} for {label}: "
                f"{e}. Install the package that defines it, or register an alias."
            ) from e
        if int(rec["materializer_version"]) > int(getattr(cls, "VERSION", 1)):
            warnings.warn(
                f"{label} was written by {rec['materializer']} version "
                f"{rec['materializer_version']}, newer than the installed version {cls.VERSION}",
                UserWarning,
                stacklevel=4,
            )
        try:
            data_type = registry.import_topic(rec["data_type"])
        except Exception:
            if untrusted:
                raise
            data_type = object
        return cls, data_type

    def _load(self, rec: dict[str, Any]) -> Any:
        from materializers import registry

        if rec["deleted"] is not None:
            raise ArtifactNotFoundError(f"{self._label(rec)} was deleted; its bytes may be gone")
        label = self._label(rec)
        untrusted = bool(rec.get("untrusted", False))
        # An imported artifact names classes an attacker may have chosen: resolve
        # only known or allowed ones, never importing a module it names.
        scope = registry.untrusted(label) if untrusted else contextlib.nullcontext()
        with scope:
            with damage_boundary(label):
                cls, data_type = self._materializer(rec, label, untrusted)
            return self._load_with(cls, data_type, rec, label)

    def _load_with(self, cls: Any, data_type: Any, rec: dict[str, Any], label: str) -> Any:
        files = self._files(rec)
        try:
            return cls(files).load(data_type)
        except (UntrustedArtifactError, MaterializerError) as e:
            if label in str(e):
                raise
            hint = f" ({self._secret_problem})" if self._secret_problem else ""
            raise type(e)(f"{label}: {e}{hint}") from e
        except ArtledgerError:  # IntegrityError and the rest already name the artifact
            raise
        except Exception as e:
            raise MaterializerError(
                f"{label}: materializer {rec['materializer']} failed to load it: "
                f"{type(e).__name__}: {e}"
            ) from e
        finally:
            files.cleanup()

    def _visualizations(self, rec: dict[str, Any]) -> list[tuple[str, str, bytes]]:
        vis = rec.get("visualizations") or []
        if not vis:
            return []
        files = self._files({**rec, "files": [v[2] for v in vis]})
        out = []
        for name, kind, frec in vis:
            with files.open_read(frec[0]) as f:
                out.append((name, kind, f.read()))
        return out

    def _export_files(self, rec: dict[str, Any], directory: Path) -> list[Path]:
        directory.mkdir(parents=True, exist_ok=True)
        return self._files(rec).export(directory)

    # -- runs ------------------------------------------------------------------
    def get_run(self, run_id: str) -> Run:
        with self._read() as txn:
            raw = txn.get("runs", str(run_id).encode())
            if raw is None:
                raise RunNotFoundError(f"no run with id {run_id!r}; `artledger runs` lists them")
            return Run(self, _run_record(txn, raw))

    def list_runs(self, pipeline: str | None = None) -> list[Run]:
        """Runs (not deleted), oldest first, optionally of one pipeline."""
        prefix = b"\x01" if pipeline is None else pipeline.encode() + b"\x00"
        with self._read() as txn:
            ids = [v.decode() for _, v in txn.scan("run_index", prefix=prefix)]
            recs = [
                _run_record(txn, raw) for raw in (txn.get("runs", i.encode()) for i in ids) if raw
            ]
        return [Run(self, r) for r in recs]

    def get_step_run(self, step_run_id: str) -> StepRun:
        with self._read() as txn:
            raw = txn.get("steps", str(step_run_id).encode())
            if raw is None:
                raise RunNotFoundError(f"no step run with id {step_run_id!r}")
            return StepRun(self, record(raw, "steps"))

    def step_components(self, step_run_id: str) -> dict[str, Any] | None:
        """The cache-key components a step run recorded (None if it computed no key)."""
        with self._read() as txn:
            raw = txn.get("step_components", str(step_run_id).encode())
            if raw is None:  # a cache hit: the components of the step run it reused
                step = txn.get("steps", str(step_run_id).encode())
                source = None if step is None else record(step, "steps").get("source")
                if source:
                    raw = txn.get("step_components", source.encode())
            return None if raw is None else record(raw, "step_components")

    def consumers(self, art: ArtifactVersion | str) -> list[StepRun]:
        """Step runs that read this artifact version as an input, oldest first."""
        aid = art.id if isinstance(art, ArtifactVersion) else art
        with self._read() as txn:
            sids = [
                k.split(b"\x00", 1)[1].decode()
                for k, _ in txn.scan("consumers", prefix=consumer_key(aid, ""))
            ]
            raws = (txn.get("steps", s.encode()) for s in sids)
            recs = [record(raw, "steps") for raw in raws if raw]
            return [StepRun(self, r) for r in sorted(recs, key=lambda r: r["seq"])]

    def lineage(
        self,
        art: ArtifactVersion | str,
        direction: str = "upstream",
        depth: int | None = None,
    ) -> LineageGraph:
        """Where an artifact came from (``upstream``) or what was derived from it
        (``downstream``), across runs and through cached steps."""
        from engine.query.lineage import build_lineage

        if direction not in ("upstream", "downstream"):
            raise InvalidArgumentError(
                f"direction must be 'upstream' or 'downstream', not {direction!r}"
            )
        if isinstance(art, str):
            art = self.get_artifact_by_id(art)
        return build_lineage(self, art, direction, depth)

    def complete_id(self, kind: str, prefix: str) -> str:
        """The one id of a ``kind`` ("run", "step run", "artifact") starting
        with ``prefix`` (as git takes a commit); an exact id is taken as it is."""
        db = {"run": "runs", "step run": "steps", "artifact": "artifacts"}[kind]
        error = ArtifactNotFoundError if kind == "artifact" else RunNotFoundError
        if not prefix:
            raise error(f"no {kind} id given")
        with self._read() as txn:
            if txn.get(db, prefix.encode()) is not None:
                return prefix
            found = [
                k.decode() for k, _ in itertools.islice(txn.scan(db, prefix=prefix.encode()), 6)
            ]
        if not found:
            raise error(f"no {kind} with id {prefix!r}, nor one whose id starts with it")
        if len(found) > 1:
            more = ", ...)" if len(found) > 5 else ")"
            raise InvalidArgumentError(
                f"{kind} id prefix {prefix!r} is ambiguous ({', '.join(found[:5])}{more}; "
                "give more of it"
            )
        return found[0]

    # -- stats -----------------------------------------------------------------
    def stats(self) -> dict[str, int]:
        """Counts and sizes: events, runs, artifacts, chunks, logical and stored bytes."""
        with self._read() as txn:
            return {
                "events": self.log.head(txn),
                "runs": counter(txn, "runs"),
                "artifacts": txn.count("artifacts") - counter(txn, "deleted_artifacts"),
                "chunks": txn.count("chunks"),
                "logical_bytes": counter(txn, "logical_bytes"),
                "stored_bytes": _stored_bytes(txn),
            }


def _run_record(txn: Txn, raw: bytes) -> dict[str, Any]:
    """A run's projection record with its ``steps`` (invocation -> step run id)."""
    rec = record(raw, "runs")
    rec["steps"] = run_step_ids(txn, rec["id"])
    return rec


def _stored_bytes(txn: Txn) -> int:
    raw = txn.get("meta", b"stored_bytes")
    return 0 if raw is None else int.from_bytes(raw, "big")


@runtime_checkable
class HasCatalog(Protocol):
    """Something that answers queries through a :class:`Catalog` (a ``Store``)."""

    @property
    def catalog(self) -> Catalog: ...


def catalog_of(source: Catalog | HasCatalog) -> Catalog:
    """The catalog that answers for ``source`` (a catalog, a view, or a store)."""
    return source if isinstance(source, Catalog) else source.catalog


class _CatalogRead(Snapshot):
    """What :meth:`Catalog._read` returns: a KV snapshot whose block turns a
    decoding error into an ``IntegrityError`` naming the ledger."""

    __slots__ = ()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        super().__exit__(exc_type, exc, tb)
        if isinstance(exc, DECODE_ERRORS) and not isinstance(exc, ArtledgerError):
            where = f"the ledger at {getattr(self._kv, 'path', 'memory')}"
            raise damaged(where, exc) from exc


def _always_open() -> None:
    """A catalog with no owner to close it."""
