"""Read a ZenML local deployment: its SQLite database and where its artifact files are.

Only the standard library's ``sqlite3`` is used; ZenML itself is never
imported. The database is opened read-only. What is read (ZenML 0.98's
schema, checked against a real install; see ``tests/fixtures/zenml``):

- ``alembic_version``: the schema version, refused unless in :data:`KNOWN_SCHEMAS`;
- ``pipeline_run`` (+ ``pipeline`` for its name) and ``step_run`` (status,
  ``cache_key``, ``original_step_run_id`` of a cached step run, exception);
- ``artifact_version`` (+ ``artifact`` for its name): version text, uri,
  materializer and data type (JSON ``{"module", "attribute", ...}``);
- ``step_run_input_artifact`` / ``step_run_output_artifact``: lineage. ZenML
  has no producer column: the producer of a version is the oldest completed
  step run with an output row for it (a cached step run has output rows
  pointing at the versions it reused);
- ``tag`` / ``tag_resource`` and ``run_metadata`` / ``run_metadata_resource``
  (metadata values are JSON text).

Ids are 32 hex digits in the database and dashed UUIDs in paths and in
ZenML's client; :func:`dashed` converts. Paths in the database and in
``config.yaml`` are absolute paths of the machine that made them: artifact
uris are rebased onto the artifact store directory found here
(``<config dir>/local_stores/<artifact store id>/``, or the one given).
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import ImportValidationError

KNOWN_SCHEMAS = frozenset({"0.98.0"})
"""ZenML database schema versions (``alembic_version``) this reader knows."""

DB_PATH = Path("local_stores") / "default_zen_store" / "zenml.db"


def dashed(hex_id: str) -> str:
    """``"525d3db2d581..."`` as ZenML's client shows it: ``"525d3db2-d581-..."``."""
    h = hex_id.replace("-", "").lower()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


@dataclass
class ZArtifact:
    """One ZenML artifact version."""

    id: str
    name: str
    version: str
    created: str
    uri: str
    path: Path | None
    materializer: str
    data_type: str
    artifact_type: str
    save_type: str
    content_hash: str | None
    store_id: str | None
    tags: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    producer: str | None = None


@dataclass
class ZStep:
    """One ZenML step run."""

    id: str
    name: str
    status: str
    run: str
    created: str
    start_time: str | None
    end_time: str | None
    cache_key: str | None
    original: str | None
    error: str | None
    inputs: dict[str, str] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class ZRun:
    """One ZenML pipeline run, with its step runs (oldest first)."""

    id: str
    name: str
    pipeline: str
    status: str
    created: str
    start_time: str | None
    end_time: str | None
    error: str | None
    tags: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    steps: list[ZStep] = field(default_factory=list)


@dataclass
class ZenMLSource:
    """Everything read from one ZenML deployment."""

    db: Path
    schema: str
    runs: list[ZRun]
    artifacts: dict[str, ZArtifact]


def locate(source: str | Path) -> tuple[Path, Path | None]:
    """(the database, the config directory or None) for a config directory or a database."""
    p = Path(source)
    if p.is_dir():
        db = p / DB_PATH
        if not db.is_file():
            raise ImportValidationError(
                f"{p} is not a ZenML config directory: no {DB_PATH} in it (ZenML's config "
                "directory is ~/.config/zenml or $ZENML_CONFIG_PATH; `zenml status` prints it)"
            )
        return db, p
    if not p.is_file():
        raise ImportValidationError(f"{p}: no such ZenML config directory or database")
    parts = p.resolve().parts
    if len(parts) > 3 and parts[-3:-1] == ("local_stores", "default_zen_store"):
        return p, Path(*parts[:-3])
    return p, None


def _recorded_root(config_dir: Path | None) -> str | None:
    """The config directory's absolute path on the machine that made it (from
    ``config.yaml``'s ``store.database``), or None."""
    if config_dir is None:
        return None
    try:
        text = (config_dir / "config.yaml").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    m = re.search(r"^\s+database:\s*['\"]?([^'\"\n]+)", text, re.MULTILINE)
    if m is None:
        return None
    db = m.group(1).strip()
    suffix = "/" + DB_PATH.as_posix()
    return db[: -len(suffix)] if db.endswith(suffix) else None


def _connect(db: Path) -> sqlite3.Connection:
    try:
        con = sqlite3.connect(f"file:{db.resolve()}?mode=ro", uri=True)
        con.row_factory = sqlite3.Row
        row = con.execute("PRAGMA quick_check").fetchone()
        if row is None or row[0] != "ok":
            raise sqlite3.DatabaseError(str(row[0] if row else "no answer from quick_check"))
        return con
    except sqlite3.Error as e:
        raise ImportValidationError(
            f"{db}: not a readable ZenML database (SQLite: {e}); nothing was imported"
        ) from None


def _json(text: Any) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return text


def _source_name(text: Any) -> str:
    """A ZenML ``Source`` JSON as ``"module:attribute"``."""
    v = _json(text)
    if isinstance(v, dict) and v.get("module") and v.get("attribute"):
        return f"{v['module']}:{v['attribute']}"
    return str(v)


def _error(text: Any) -> str | None:
    """The last line of a step's or run's recorded traceback."""
    v = _json(text)
    if v is None:
        return None
    if isinstance(v, dict):
        v = v.get("traceback") or v.get("message") or json.dumps(v)
    lines = [ln.strip() for ln in str(v).splitlines() if ln.strip()]
    return lines[-1] if lines else None


def read(source: str | Path, artifact_store: str | os.PathLike[str] | None = None) -> ZenMLSource:
    """Read the ZenML deployment at ``source`` (a config directory or its
    ``zenml.db``). ``artifact_store``: the local artifact store's directory,
    when it is not ``<config dir>/local_stores/<its id>/``."""
    db, config_dir = locate(source)
    con = _connect(db)
    try:
        try:
            return _read(con, db, config_dir, artifact_store)
        except sqlite3.Error as e:
            raise ImportValidationError(
                f"{db}: cannot read it as a ZenML database (SQLite: {e}); nothing was imported"
            ) from None
        except (IndexError, KeyError) as e:  # a column the known schema has is missing
            raise ImportValidationError(
                f"{db}: not the ZenML schema it says it is (no column {e}); nothing was imported"
            ) from None
    finally:
        con.close()


def _read(
    con: sqlite3.Connection,
    db: Path,
    config_dir: Path | None,
    artifact_store: str | os.PathLike[str] | None,
) -> ZenMLSource:
    try:
        rows = con.execute("SELECT version_num FROM alembic_version").fetchall()
    except sqlite3.Error:
        rows = []
    schema = str(rows[0][0]) if rows else "(none)"
    if schema not in KNOWN_SCHEMAS:
        raise ImportValidationError(
            f"{db}: ZenML schema version {schema} is not one this artledger can read "
            f"(known: {', '.join(sorted(KNOWN_SCHEMAS))}); nothing was imported. Upgrade "
            "artledger, or migrate the ZenML deployment to a known version first"
        )
    tags: dict[str, list[str]] = {}
    for r in con.execute(
        "SELECT tr.resource_id, t.name FROM tag_resource tr JOIN tag t ON t.id = tr.tag_id "
        "ORDER BY t.name"
    ):
        tags.setdefault(r[0], []).append(r[1])
    meta: dict[str, dict[str, Any]] = {}
    for r in con.execute(
        "SELECT r.resource_id, m.key, m.value FROM run_metadata m "
        "JOIN run_metadata_resource r ON r.run_metadata_id = m.id ORDER BY m.created, m.id"
    ):
        meta.setdefault(r[0], {})[r[1]] = _json(r[2])
    stores = _artifact_stores(con, config_dir, artifact_store)
    artifacts: dict[str, ZArtifact] = {}
    for r in con.execute(
        "SELECT av.*, a.name AS aname FROM artifact_version av "
        "JOIN artifact a ON a.id = av.artifact_id ORDER BY av.created, av.id"
    ):
        aid = r["id"]
        artifacts[aid] = ZArtifact(
            id=aid,
            name=r["aname"],
            version=str(r["version"]),
            created=str(r["created"]),
            uri=r["uri"],
            path=_rebase(r["uri"], r["artifact_store_id"], stores),
            materializer=_source_name(r["materializer"]),
            data_type=_source_name(r["data_type"]),
            artifact_type=str(r["type"]),
            save_type=str(r["save_type"]),
            content_hash=r["content_hash"],
            store_id=r["artifact_store_id"],
            tags=tags.get(aid, []),
            metadata=meta.get(aid, {}),
        )
    steps: dict[str, ZStep] = {}
    for r in con.execute("SELECT * FROM step_run ORDER BY created, id"):
        steps[r["id"]] = ZStep(
            id=r["id"],
            name=r["name"],
            status=str(r["status"]),
            run=r["pipeline_run_id"],
            created=str(r["created"]),
            start_time=r["start_time"],
            end_time=r["end_time"],
            cache_key=r["cache_key"],
            original=r["original_step_run_id"],
            error=_error(r["exception_info"]),
            metadata=meta.get(r["id"], {}),
        )
    for r in con.execute(
        "SELECT step_id, name, artifact_id FROM step_run_input_artifact "
        "ORDER BY step_id, input_index, name"
    ):
        if r[0] in steps:
            steps[r[0]].inputs[r[1]] = r[2]
    for r in con.execute(
        "SELECT step_id, name, artifact_id FROM step_run_output_artifact ORDER BY step_id, name"
    ):
        if r[0] in steps:
            steps[r[0]].outputs[r[1]] = r[2]
    for s in steps.values():  # oldest first: the first completed one is the producer
        if s.status == "completed":
            for aid in s.outputs.values():
                a = artifacts.get(aid)
                if a is not None and a.producer is None:
                    a.producer = s.id
    runs: list[ZRun] = []
    for r in con.execute(
        "SELECT pr.*, p.name AS pname FROM pipeline_run pr "
        "LEFT JOIN pipeline p ON p.id = pr.pipeline_id ORDER BY pr.created, pr.id"
    ):
        runs.append(
            ZRun(
                id=r["id"],
                name=r["name"],
                pipeline=r["pname"] or r["name"],
                status=str(r["status"]),
                created=str(r["created"]),
                start_time=r["start_time"],
                end_time=r["end_time"],
                error=r["status_reason"] or _error(r["exception_info"]),
                tags=tags.get(r["id"], []),
                metadata=meta.get(r["id"], {}),
                steps=[s for s in steps.values() if s.run == r["id"]],
            )
        )
    return ZenMLSource(db, schema, runs, artifacts)


def _artifact_stores(
    con: sqlite3.Connection, config_dir: Path | None, given: str | os.PathLike[str] | None
) -> dict[str, tuple[str | None, Path | None]]:
    """Local artifact store id -> (its recorded path, its directory here)."""
    root = _recorded_root(config_dir)
    out: dict[str, tuple[str | None, Path | None]] = {}
    for r in con.execute(
        "SELECT id, configuration FROM stack_component WHERE type = 'artifact_store'"
    ):
        cid = dashed(r[0])
        recorded = _component_path(r[1])
        if recorded is None and root is not None:
            recorded = f"{root}/local_stores/{cid}"
        here: Path | None
        if given is not None:
            here = Path(given)
        elif config_dir is not None:
            here = config_dir / "local_stores" / cid
        else:
            here = Path(recorded) if recorded is not None else None
        out[r[0]] = (recorded, here)
    return out


def _component_path(config: Any) -> str | None:
    """The ``path`` in a stack component's configuration (base64 JSON), if any."""
    import base64

    try:
        raw = base64.b64decode(config) if isinstance(config, (bytes, str)) else b"{}"
        v = json.loads(raw or b"{}")
    except ValueError:
        return None
    path = v.get("path") if isinstance(v, dict) else None
    return path.rstrip("/") if isinstance(path, str) and path else None


def _rebase(
    uri: str, store_id: str | None, stores: dict[str, tuple[str | None, Path | None]]
) -> Path | None:
    """``uri`` (absolute on the machine that wrote it) under the artifact
    store's directory here; None when it is not a local path."""
    if not isinstance(uri, str) or "://" in uri:
        return None
    candidates = [stores[store_id]] if store_id in stores else list(stores.values())
    for recorded, here in candidates:
        if here is None:
            continue
        if recorded and (uri == recorded or uri.startswith(recorded + "/")):
            return here / uri[len(recorded) :].lstrip("/")
    for sid, (_, here) in stores.items():
        marker = f"/local_stores/{dashed(sid)}/"
        if here is not None and marker in uri:
            return here / uri.split(marker, 1)[1]
    return Path(uri)
