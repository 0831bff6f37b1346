"""Import a ZenML local deployment: its runs, step runs, artifact versions and lineage.

The deployment is read with :mod:`engine.ops.zenml_db` (SQLite, read-only,
no ZenML import) and its artifacts with :mod:`engine.ops.zenml_convert`.
Everything is written with the store's existing events:

- each ZenML pipeline run becomes ``run.started`` then, per step run in
  ZenML's order, ``step.started`` + ``artifact.written`` (the versions it
  produced) + ``step.completed``; a cached step run becomes ``step.cached``
  whose ``source`` is the step run it reused; a failed one ``step.failed``;
  then ``run.completed`` or ``run.failed``;
- artifact versions no completed step run produced (``save_artifact``)
  come first, with no producer.

Ids are derived from ZenML's (:func:`artledger_id`), so an object imported
once is recognised again: every run is one commit, and a re-run skips the
runs and artifact versions already present. That makes a second import a
no-op and an interrupted one resumable. Each imported object records its
ZenML id in its metadata (``metadata["zenml"]["id"]``; on runs and step
runs, ``record()["metadata"]``).

Before anything is written, every artifact version still to import is read
and converted once (and thrown away): a missing, truncated or damaged file,
a damaged database or an unknown schema version is an
:class:`ImportValidationError` naming it, and the store is unchanged. The
write pass reads them again.

ZenML's cache keys are kept for the record (``metadata["zenml"]["cache_key"]``)
but are not artledger cache keys: imported step runs have none, so the first
run of a ported pipeline computes every step, and ``explain`` has no earlier
run with key components to compare it with.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.errors import ImportValidationError
from engine.events import (
    ARTIFACT_WRITTEN,
    RUN_COMPLETED,
    RUN_FAILED,
    RUN_STARTED,
    STEP_CACHED,
    STEP_COMPLETED,
    STEP_FAILED,
    STEP_SKIPPED,
    STEP_STARTED,
)
from engine.ledger.artifacts import Prepared, assign_versions, plain, prepare
from engine.ops.zenml_convert import (
    ARTLEDGER_PICKLE,
    Converted,
    label,
    read_artifact,
)
from engine.ops.zenml_db import ZArtifact, ZenMLSource, ZRun, ZStep, dashed, read
from engine.projections.keys import version_key
from engine.storage.chunks import WriteSession, content_hash
from engine.storage.files import WriteFiles
from engine.storage.kv import Txn

if TYPE_CHECKING:
    from engine.ops.stream import Progress
    from engine.store import Store

MISS_REASON = "imported from ZenML: ZenML's cache keys do not carry over"
FINISHED = frozenset(
    {"completed", "cached", "failed", "skipped", "retried", "stopped", "cancelled"}
)
"""ZenML's finished run statuses (``ExecutionStatus.is_finished``): a run in
another state is left for a later import, which finds it finished."""
SUCCEEDED = frozenset({"completed", "cached"})


def artledger_id(kind: str, zenml_id: str) -> str:
    """The artledger id of an imported ZenML object (``kind``: "run", "step"
    or "artifact"; ``zenml_id`` dashed or not): 16 hex digits derived from it."""
    h = zenml_id.replace("-", "").lower()
    return hashlib.blake2b(f"zenml {kind} {h}".encode(), digest_size=8).hexdigest()


@dataclass
class ZenMLImportReport:
    """What ``Store.import_zenml()`` did (or, with ``dry_run``, would do)."""

    source: Path
    schema: str
    dry_run: bool = False
    runs: int = 0
    runs_already: int = 0
    runs_unfinished: int = 0
    steps: int = 0
    cached_steps: int = 0
    failed_steps: int = 0
    artifacts: int = 0
    artifacts_already: int = 0
    converted: int = 0
    kept_as_files: int = 0
    untrusted: int = 0
    signed: int = 0
    chunks_written: int = 0
    bytes_written: int = 0
    logical_bytes: int = 0
    materializers: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass
class _Plan:
    src: ZenMLSource
    loose: list[ZArtifact]
    runs: list[tuple[ZRun, list[ZArtifact]]]
    versions: dict[str, int | str | None]  # zenml artifact id -> version to ask for
    run_of_step: dict[str, str]  # zenml step run id -> its run's artledger id


def import_zenml(
    store: Store,
    source: str | Path,
    *,
    artifact_store: str | os.PathLike[str] | None = None,
    dry_run: bool = False,
    trust_pickles: bool = False,
    progress: Progress | None = None,
) -> ZenMLImportReport:
    """Import the ZenML deployment at ``source`` (its config directory or its
    ``zenml.db``) into ``store``; see the module docstring."""
    t0 = time.perf_counter()
    src = read(source, artifact_store)
    report = ZenMLImportReport(Path(source), src.schema, dry_run)
    plan = _plan(store, src, report)
    todo = plan.loose + [a for _, arts in plan.runs for a in arts]
    for n, a in enumerate(todo, 1):  # validate everything before writing anything
        conv = read_artifact(a)
        report.artifacts += 1
        report.materializers[a.materializer] = report.materializers.get(a.materializer, 0) + 1
        if conv.converted:
            report.converted += 1
        else:
            report.kept_as_files += 1
            report.untrusted += not trust_pickles
        if progress is not None:
            progress("check", n, len(todo))
    for run, _ in plan.runs:
        report.runs += 1
        report.steps += len(run.steps)
        report.cached_steps += sum(s.status == "cached" for s in run.steps)
        report.failed_steps += sum(s.status == "failed" for s in run.steps)
    if dry_run:
        report.seconds = time.perf_counter() - t0
        return report
    store.ledger.check_writable("import from ZenML")
    if plan.loose:
        _commit(store, plan, None, plan.loose, trust_pickles, report)
    for n, (run, arts) in enumerate(plan.runs, 1):
        _commit(store, plan, run, arts, trust_pickles, report)
        if progress is not None:
            progress("write", n, len(plan.runs))
    report.seconds = time.perf_counter() - t0
    return report


def _plan(store: Store, src: ZenMLSource, report: ZenMLImportReport) -> _Plan:
    """What is still to import, in commit order; refuses label clashes."""
    store.flush()
    run_of_step = {s.id: r.id for r in src.runs for s in r.steps}
    by_run: dict[str, list[ZArtifact]] = {r.id: [] for r in src.runs}
    loose: list[ZArtifact] = []
    versions: dict[str, int | str | None] = {}
    with store.ledger.snapshot() as txn:
        fresh = [
            a
            for a in src.artifacts.values()
            if txn.get("artifacts", artledger_id("artifact", a.id).encode()) is None
        ]
        report.artifacts_already = len(src.artifacts) - len(fresh)
        # A name whose integer versions clash with the store's is numbered after them, whole.
        renumber = {a.name for a in fresh if _version(txn, a) is None}
        for a in fresh:
            v = _version(txn, a)
            versions[a.id] = None if a.name in renumber and isinstance(v, int) else v
            run = run_of_step.get(a.producer or "")
            if run is None:
                a.producer = None
                loose.append(a)
            else:
                by_run[run].append(a)
        runs = []
        for r in src.runs:
            if txn.get("runs", artledger_id("run", r.id).encode()) is not None:
                report.runs_already += 1
            elif r.status not in FINISHED:
                report.runs_unfinished += 1
            else:
                runs.append((r, by_run[r.id]))
    for r in src.runs:
        for s in r.steps:
            for aid in (*s.inputs.values(), *s.outputs.values()):
                if aid not in src.artifacts:
                    raise ImportValidationError(
                        f"{src.db}: step run {s.name} ({dashed(s.id)}) names artifact version "
                        f"{dashed(aid)}, which the database does not have; nothing was imported"
                    )
    steps = {s.id: artledger_id("run", r.id) for r in src.runs for s in r.steps}
    return _Plan(src, loose, runs, versions, steps)


def _version(txn: Txn, a: ZArtifact) -> int | str | None:
    """ZenML's version as artledger's, or None when the store has that integer
    version already (a clashing label is refused)."""
    v: int | str = int(a.version) if a.version.isdigit() and len(a.version) < 18 else a.version
    if txn.get("versions", version_key(a.name, v)) is None:
        return v
    if isinstance(v, int):
        return None
    raise ImportValidationError(
        f"the store already has {a.name}:{v}, a version label {label(a)} also uses; nothing "
        "was imported. Rename the label in one of them"
    )


def _provenance(a: ZArtifact) -> dict[str, Any]:
    return {
        "id": dashed(a.id),
        "version": a.version,
        "materializer": a.materializer,
        "data_type": a.data_type,
        "type": a.artifact_type,
        "save_type": a.save_type,
        "uri": a.uri,
        "content_hash": a.content_hash,
        "created": a.created,
    }


def _prepare(
    store: Store,
    plan: _Plan,
    a: ZArtifact,
    session: WriteSession,
    trust: bool,
    report: ZenMLImportReport,
) -> Prepared:
    ledger = store.ledger
    conv = read_artifact(a)
    meta = plain(dict(a.metadata), where=f"metadata of {label(a)}")
    meta["zenml"] = _provenance(a)
    producer = artledger_id("step", a.producer) if a.producer else None
    run = plan.run_of_step.get(a.producer) if a.producer else None
    version = plan.versions[a.id]
    if conv.converted:
        p = prepare(
            ledger,
            conv.obj,
            a.name,
            version=version,
            tags=a.tags,
            metadata=meta,
            producer=producer,
            run=run,
            session=session,
        )
    else:
        p = _prepare_files(store, a, conv, meta, session, trust, report)
        p.data.update(producer=producer, run=run)
        p.requested_version = version
    p.data["id"] = artledger_id("artifact", a.id)
    return p


def _prepare_files(
    store: Store,
    a: ZArtifact,
    conv: Converted,
    meta: dict[str, Any],
    session: WriteSession,
    trust: bool,
    report: ZenMLImportReport,
) -> Prepared:
    """The artifact's files, byte for byte, as a prepared version."""
    ledger = store.ledger
    files = WriteFiles(session, ledger.secret, secret_problem=ledger.secret_problem)
    try:
        for name, path in conv.files:
            with files.open_write(name) as out, open(path, "rb") as f:
                shutil.copyfileobj(f, out, 1 << 22)
        files.finish()
    except OSError as e:
        files.discard()
        raise ImportValidationError(
            f"{e.filename or a.path}: cannot read {label(a)}: {e.strerror or e}; "
            "the runs committed before it stay imported (run the import again to resume)"
        ) from None
    state: dict[str, Any] = {}
    materializer = a.materializer
    if conv.pickle is not None:
        materializer = ARTLEDGER_PICKLE
        state = {"python": conv.python or "unknown", "cloudpickle": "unknown (written by ZenML)"}
        if trust:
            state["signature"] = files.sign(conv.pickle.read_bytes())
            report.signed += 1
    entries = list(files.entries.values())
    size = sum(f.size for f in entries)
    chash = content_hash(entries)
    data: dict[str, Any] = {
        "id": "",
        "name": a.name,
        "version": None,
        "content_hash": chash,
        "data_type": a.data_type,
        "materializer": materializer,
        "materializer_version": 1,
        "artifact_type": "model" if a.artifact_type == "ModelArtifact" else "data",
        "files": [f.to_record() for f in entries],
        "visualizations": [],
        "state": state,
        "metadata": {"size": size, "content_hash": chash, "materializer": materializer},
        "user_metadata": meta,
        "tags": sorted(set(a.tags)),
        "producer": None,
        "run": None,
        "size": size,
    }
    if not trust:
        data["untrusted"] = True
    return Prepared(data, session)


def _step_meta(s: ZStep) -> dict[str, Any]:
    z = {
        "id": dashed(s.id),
        "status": s.status,
        "cache_key": s.cache_key,
        "original_step_run_id": dashed(s.original) if s.original else None,
        "start_time": s.start_time,
        "end_time": s.end_time,
    }
    return {**plain(dict(s.metadata)), "zenml": z}


def _commit(
    store: Store,
    plan: _Plan,
    run: ZRun | None,
    arts: list[ZArtifact],
    trust: bool,
    report: ZenMLImportReport,
) -> None:
    """One run (or the artifacts of no run) in one commit."""
    ledger = store.ledger
    session = ledger.chunks.session()
    prepared: list[Prepared] = []
    try:
        for a in arts:
            prepared.append(_prepare(store, plan, a, session, trust, report))
    except BaseException:
        session.release()
        raise
    zid = {a.id: p for a, p in zip(arts, prepared, strict=True)}

    def build(txn: Txn) -> list[tuple[str, dict[str, Any]]]:
        if run is not None and txn.get("runs", artledger_id("run", run.id).encode()):
            raise ImportValidationError(
                f"ZenML run {run.name} was imported by another process meanwhile; run the "
                "import again to resume"
            )
        datas = {d["id"]: d for d in assign_versions(txn, prepared)}
        written = {z: datas[p.data["id"]] for z, p in zid.items()}
        if run is None:
            return [(ARTIFACT_WRITTEN, d) for d in written.values()]
        return _run_events(run, written)

    ledger.commit(build, [session])
    report.chunks_written += len(session.new)
    report.bytes_written += sum(r.stored_len for r in session.new.values())
    report.logical_bytes += sum(int(p.data["size"]) for p in prepared)


def _run_events(run: ZRun, written: dict[str, dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """A ZenML run's events, with the artifact versions its steps produced."""
    rid = artledger_id("run", run.id)
    ids = {
        z: artledger_id("artifact", z)
        for s in run.steps
        for z in (*s.inputs.values(), *s.outputs.values())
    }
    run_meta = {
        **plain(dict(run.metadata)),
        "zenml": {
            "id": dashed(run.id),
            "name": run.name,
            "status": run.status,
            "tags": run.tags,
            "start_time": run.start_time,
            "end_time": run.end_time,
        },
    }
    out: list[tuple[str, dict[str, Any]]] = [
        (
            RUN_STARTED,
            {
                "id": rid,
                "pipeline": run.pipeline,
                "params": {},
                "enable_cache": None,
                "invocations": [s.name for s in run.steps],
                "metadata": run_meta,
            },
        )
    ]
    for s in run.steps:
        sid = artledger_id("step", s.id)
        common = {
            "id": sid,
            "run": rid,
            "pipeline": run.pipeline,
            "invocation": s.name,
            "step": s.name,
            "cache_key": None,
            "metadata": _step_meta(s),
        }
        inputs = {n: ids[z] for n, z in s.inputs.items()}
        outputs = {n: ids[z] for n, z in s.outputs.items()}
        if s.status == "cached":
            source = artledger_id("step", s.original) if s.original else None
            out.append(
                (
                    STEP_CACHED,
                    {
                        **common,
                        "cache_miss_reason": None,
                        "source": source,
                        "inputs": inputs,
                        "outputs": outputs,
                    },
                )
            )
            continue
        if s.status == "skipped":
            out.append((STEP_SKIPPED, {**common, "reason": "skipped in ZenML"}))
            continue
        out.append(
            (
                STEP_STARTED,
                {
                    **common,
                    "components": None,
                    "inputs": inputs,
                    "cache_miss_reason": MISS_REASON,
                    "cache_miss_reasons": [MISS_REASON],
                },
            )
        )
        out += [(ARTIFACT_WRITTEN, written[z]) for z in s.outputs.values() if z in written]
        if s.status == "completed":
            out.append(
                (STEP_COMPLETED, {"id": sid, "run": rid, "inputs": inputs, "outputs": outputs})
            )
        else:  # failed, stopped, or left unfinished in a run that finished
            error = s.error or f"ZenML step run status: {s.status}"
            out.append((STEP_FAILED, {"id": sid, "run": rid, "error": error}))
    if run.status in SUCCEEDED:
        out.append((RUN_COMPLETED, {"id": rid}))
    else:
        out.append((RUN_FAILED, {"id": rid, "error": run.error or f"ZenML run {run.status}"}))
    return out
