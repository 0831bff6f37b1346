"""What queries hand back: artifact versions, runs and step runs.

These are thin, read-only views over projection records; they keep a
reference to the catalog they came from so ``art.load()``, ``art.producer``
and ``run.steps`` answer from the same point in history.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.query.catalog import Catalog


LOAD_HOOKS: list[Callable[[ArtifactVersion], None]] = []
"""Called with every artifact version loaded through :meth:`ArtifactVersion.load`
(after the load succeeded); ``engine.pipelines.context`` records a running
step's loads as its inputs with one."""


def _time(ns: int | None) -> _dt.datetime | None:
    if ns is None:
        return None
    return _dt.datetime.fromtimestamp(ns / 1e9, tz=_dt.timezone.utc)


class ArtifactVersion:
    """One stored version of a named artifact."""

    __slots__ = ("_catalog", "_rec")

    def __init__(self, catalog: Catalog, rec: dict[str, Any]) -> None:
        self._catalog = catalog
        self._rec = rec

    id = property(lambda self: str(self._rec["id"]), doc="Unique id (hex).")
    name = property(lambda self: str(self._rec["name"]), doc="Artifact name.")
    version = property(lambda self: self._rec["version"], doc="Version: int, or a string label.")
    content_hash = property(
        lambda self: str(self._rec["content_hash"]),
        doc="xxh3-128 of the files, unseeded: the same data has the same hash in every store.",
    )
    data_type = property(lambda self: str(self._rec["data_type"]), doc='"module:QualName".')
    materializer = property(
        lambda self: str(self._rec["materializer"]), doc='Materializer "module:QualName".'
    )
    materializer_version = property(lambda self: int(self._rec["materializer_version"]))
    artifact_type = property(lambda self: str(self._rec["artifact_type"]))
    size = property(lambda self: int(self._rec["size"]), doc="Logical bytes of all files.")
    seq = property(lambda self: int(self._rec["seq"]), doc="Sequence number of its event.")
    deleted = property(lambda self: self._rec["deleted"] is not None)
    run_id = property(lambda self: self._rec.get("run"))
    trusted = property(
        lambda self: not self._rec.get("untrusted"),
        doc="False for an imported version nobody vouched for (``store.trust``).",
    )
    created = property(lambda self: _time(self._rec["ts"]))

    @property
    def tags(self) -> list[str]:
        return list(self._rec["tags"])

    @property
    def metadata(self) -> dict[str, Any]:
        """User metadata (``save_artifact(metadata=)``, ``store.log_metadata``),
        then the materializer's extracted metadata and the store's own (size,
        content hash, materializer), which win a clash: a user key never hides
        the engine's (:attr:`user_metadata` keeps what the user gave)."""
        meta = dict(self._rec.get("user_metadata") or {})
        meta.update(self._rec.get("metadata") or {})
        return meta

    @property
    def user_metadata(self) -> dict[str, Any]:
        """Only the metadata users attached, as they attached it."""
        return dict(self._rec.get("user_metadata") or {})

    @property
    def files(self) -> list[str]:
        """Names of the files its materializer wrote."""
        return [f[0] for f in self._rec["files"]]

    @property
    def producer(self) -> StepRun | None:
        """The step run that wrote it (None for ``save_artifact``)."""
        sid = self._rec.get("producer")
        return None if sid is None else self._catalog.get_step_run(sid)

    @property
    def visualizations(self) -> list[tuple[str, str, bytes]]:
        """``[(name, kind, bytes)]`` written by the materializer's save_visualizations."""
        return self._catalog._visualizations(self._rec)

    def load(self) -> Any:
        """The Python object back, through the materializer that saved it."""
        obj = self._catalog._load(self._rec)
        for hook in LOAD_HOOKS:
            hook(self)
        return obj

    def export_files(self, directory: str | Path) -> list[Path]:
        """Write the artifact's files, byte-exact, into ``directory``."""
        return self._catalog._export_files(self._rec, Path(directory))

    def record(self) -> dict[str, Any]:
        """The projection record (a copy), for tools and JSON output."""
        return dict(self._rec)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ArtifactVersion) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def __repr__(self) -> str:
        gone = " deleted" if self.deleted else ""
        return f"<ArtifactVersion {self.name}:{self.version} id={self.id}{gone}>"


class StepRun:
    """One execution (or cache hit, or skip) of a step within a run."""

    __slots__ = ("_catalog", "_rec")

    def __init__(self, catalog: Catalog, rec: dict[str, Any]) -> None:
        self._catalog = catalog
        self._rec = rec

    id = property(lambda self: str(self._rec["id"]))
    run_id = property(lambda self: str(self._rec["run"]))
    invocation = property(lambda self: str(self._rec["invocation"]), doc="e.g. train_2")
    step = property(lambda self: str(self._rec["step"]), doc="The step's name.")
    status = property(
        lambda self: str(self._rec["status"]),
        doc='"running" | "completed" | "cached" | "failed" | "skipped"',
    )
    cache_key = property(lambda self: self._rec.get("cache_key"))
    cache_miss_reason = property(lambda self: self._rec.get("cache_miss_reason"))
    error = property(lambda self: self._rec.get("error"))
    source = property(
        lambda self: self._rec.get("source"), doc="For a cached step: the step run reused."
    )
    seq = property(lambda self: int(self._rec["seq"]))
    started = property(lambda self: _time(self._rec["ts"]))
    ended = property(lambda self: _time(self._rec.get("ended_ts")))

    @property
    def metadata(self) -> dict[str, Any]:
        """What the step logged on itself (``get_step_context().log_metadata``), or
        what an import recorded with it (``["zenml"]["id"]``, ...)."""
        return dict(self._rec.get("metadata") or {})

    @property
    def components(self) -> dict[str, Any] | None:
        if "components" in self._rec:
            return self._rec["components"]  # type: ignore[no-any-return]
        return self._catalog.step_components(self.id)

    @property
    def outputs(self) -> dict[str, ArtifactVersion]:
        return {k: self._catalog.get_artifact_by_id(v) for k, v in self._rec["outputs"].items()}

    @property
    def inputs(self) -> dict[str, ArtifactVersion]:
        return {k: self._catalog.get_artifact_by_id(v) for k, v in self._rec["inputs"].items()}

    @property
    def output(self) -> ArtifactVersion:
        """The only output (``ValueError`` when there are several or none)."""
        outs = self.outputs
        if len(outs) != 1:
            raise ValueError(
                f"step run {self.invocation} has {len(outs)} outputs; use .outputs[name]"
            )
        return next(iter(outs.values()))

    @property
    def run(self) -> Run:
        return self._catalog.get_run(self.run_id)

    def record(self) -> dict[str, Any]:
        return dict(self._rec)

    def __repr__(self) -> str:
        return f"<StepRun {self.invocation} {self.status} id={self.id}>"


class Run:
    """One run of a pipeline."""

    __slots__ = ("_catalog", "_rec")

    def __init__(self, catalog: Catalog, rec: dict[str, Any]) -> None:
        self._catalog = catalog
        self._rec = rec

    id = property(lambda self: str(self._rec["id"]))
    pipeline = property(lambda self: str(self._rec["pipeline"]))
    status = property(
        lambda self: str(self._rec["status"]), doc='"running" | "completed" | "failed"'
    )
    error = property(lambda self: self._rec.get("error"))
    params = property(lambda self: dict(self._rec.get("params") or {}))
    seq = property(lambda self: int(self._rec["seq"]))
    started = property(lambda self: _time(self._rec["ts"]))
    ended = property(lambda self: _time(self._rec.get("ended_ts")))
    deleted = property(lambda self: self._rec.get("deleted") is not None)
    metadata = property(
        lambda self: dict(self._rec.get("metadata") or {}),
        doc='Recorded with the run (an imported one: ``["zenml"]["id"]``, ...).',
    )

    @property
    def steps(self) -> Mapping[str, StepRun]:
        """Step runs by invocation id, in execution order."""
        return {inv: self._catalog.get_step_run(sid) for inv, sid in self._rec["steps"].items()}

    def record(self) -> dict[str, Any]:
        return dict(self._rec)

    def __repr__(self) -> str:
        return f"<Run {self.pipeline} {self.status} id={self.id}>"
