"""What each dashboard page shows, as plain JSON-able data.

Every function takes a catalog (the live store or an ``as_of`` view) and
returns a dict: the ``/api/...`` routes send it as JSON, the HTML routes hand
it to a template. Keys starting with ``_`` (rendered SVG and HTML) are for
templates only and are left out of the JSON.
"""

from __future__ import annotations

import datetime as _dt
from typing import Any
from urllib.parse import quote

from engine.errors import InvalidArgumentError
from engine.pipelines.explain import run_graph
from engine.query import pages as q
from engine.query.catalog import Catalog
from engine.query.models import ArtifactVersion, Run, StepRun
from engine.storage.log import Event
from engine.ui import graph, visuals

PAGE = 50


def _iso(t: _dt.datetime | None) -> str | None:
    return None if t is None else t.isoformat(timespec="milliseconds")


def _dur(a: _dt.datetime | None, b: _dt.datetime | None) -> float | None:
    return None if a is None or b is None else round((b - a).total_seconds(), 6)


def art_path(name: str, version: Any) -> str:
    """The URL path of an artifact version's page (after ``/artifacts/``)."""
    return f"{quote(name, safe='')}/{quote(str(version), safe='')}"


def art_ref(art: ArtifactVersion) -> dict[str, Any]:
    return {
        "id": art.id,
        "name": art.name,
        "version": art.version,
        "path": art_path(art.name, art.version),
        "deleted": art.deleted,
    }


def _safe_ref(catalog: Catalog, aid: str) -> dict[str, Any]:
    try:
        return art_ref(catalog.get_artifact_by_id(aid))
    except KeyError:
        return {"id": aid, "name": aid, "version": None, "path": None, "deleted": True}


def run_summary(catalog: Catalog, run: Run) -> dict[str, Any]:
    return {
        "id": run.id,
        "pipeline": run.pipeline,
        "status": run.status,
        "seq": run.seq,
        "started": _iso(run.started),
        "duration_s": _dur(run.started, run.ended),
        "steps": q.step_status_counts(catalog, run),
    }


def runs_page(catalog: Catalog, before: int | None = None, limit: int = PAGE) -> dict[str, Any]:
    runs = q.newest_runs(catalog, limit + 1, before)
    more = len(runs) > limit
    runs = runs[:limit]
    return {
        "total": q.run_count(catalog),
        "runs": [run_summary(catalog, r) for r in runs],
        "next_before": runs[-1].seq if more else None,
    }


def event_row(e: Event) -> dict[str, Any]:
    d = e.data
    ts = _dt.datetime.fromtimestamp(e.ts / 1e9, tz=_dt.timezone.utc)
    what = d.get("name") or d.get("invocation") or d.get("pipeline") or ""
    if "version" in d and d.get("name"):
        what = f"{d['name']}:{d['version']}"
    return {
        "seq": e.seq,
        "type": e.type,
        "time": _iso(ts),
        "id": d.get("id"),
        "run": d.get("run") or (d.get("id") if e.type.startswith("run.") else None),
        "what": str(what),
        "tags": d.get("tags") if e.type.startswith("artifact.") else None,
    }


def _step_row(catalog: Catalog, s: StepRun) -> dict[str, Any]:
    rec = s.record()
    reasons = catalog_explain(s)
    return {
        "id": s.id,
        "invocation": s.invocation,
        "step": s.step,
        "status": s.status,
        "duration_s": _dur(s.started, s.ended),
        "cache_key": s.cache_key,
        "reasons": reasons,
        "error": s.error,
        "source": s.source,
        "inputs": {k: _safe_ref(catalog, v) for k, v in rec["inputs"].items()},
        "outputs": {k: _safe_ref(catalog, v) for k, v in rec["outputs"].items()},
    }


def catalog_explain(s: StepRun) -> list[str]:
    """``store.explain`` for any catalog (it reads only the step run's record)."""
    from engine.pipelines.explain import explain

    return explain(s)


def run_page(catalog: Catalog, run_id: str, link: Any) -> dict[str, Any]:
    run = catalog.get_run(run_id)
    steps = [_step_row(catalog, s) for s in run.steps.values()]
    g = run_graph(catalog, run)
    by_step = {s["id"]: s for s in steps}
    nodes = []
    for nid, n in g.nodes.items():
        if n["kind"] == "step":
            s = by_step.get(nid)
            why = "; ".join(s["reasons"]) if s else ""
            dur = s["duration_s"] if s else None
            sub = n["status"] + (f" · {dur:.3f}s" if dur is not None else "")
            nodes.append(
                graph.Node(nid, n["name"], n["status"], f"#step-{nid}", f"{n['name']}: {why}", sub)
            )
        else:
            label = f"{n['name']}:{n['version']}"
            href = link("/artifacts/" + art_path(n["name"], n["version"]))
            short = n["name"].removeprefix(run.pipeline + ".")  # the box is narrow
            nodes.append(graph.Node(nid, short, "artifact", href, label, f"v{n['version']}"))
    summary = run_summary(catalog, run)
    summary.update(params=_jsonable(run.params), error=run.error)
    return {
        "run": summary,
        "steps": steps,
        "graph": {"nodes": g.nodes, "edges": [list(e) for e in g.edges]},
        "events": [event_row(e) for e in q.run_events(catalog, run)],
        "_svg": graph.to_svg(nodes, g.edges),
    }


def artifacts_page(
    catalog: Catalog,
    name: str | None = None,
    tag: str | None = None,
    after: str | None = None,
    limit: int = PAGE,
) -> dict[str, Any]:
    rows, nxt = q.artifact_names(
        catalog, contains=name or None, tag=tag or None, limit=limit, after=after or None
    )
    out = []
    for art, count in rows:
        out.append(
            {
                **art_ref(art),
                "versions": min(count, q.COUNT_CAP),
                "more_versions": count > q.COUNT_CAP,
                "type": art.artifact_type,
                "data_type": art.data_type,
                "tags": art.tags,
                "size": art.size,
                "stored": q.stored_size(catalog, art),
                "created": _iso(art.created),
            }
        )
    return {"artifacts": out, "next_after": nxt, "name": name, "tag": tag}


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if v is None or isinstance(v, (str, int, float, bool)):
        return v
    if isinstance(v, bytes):
        return f"<{len(v)} bytes>"
    return repr(v)


def artifact_page(catalog: Catalog, name: str, version: str) -> dict[str, Any]:
    art = catalog.get_artifact(name, version)
    prod = art.producer
    consumers = catalog.consumers(art)
    vis = []
    for i, (vname, kind, data) in enumerate(art.visualizations):
        vis.append({"index": i, **visuals.describe(vname, kind, data)})
    return {
        "artifact": {
            **art_ref(art),
            "type": art.artifact_type,
            "data_type": art.data_type,
            "materializer": f"{art.materializer} v{art.materializer_version}",
            "content_hash": art.content_hash,
            "size": art.size,
            "stored": q.stored_size(catalog, art),
            "tags": art.tags,
            "seq": art.seq,
            "created": _iso(art.created),
            "run": art.run_id,
            "metadata": _jsonable(art.metadata),
        },
        "files": [{"name": n, "size": s} for n, s in q.file_sizes(art)],
        "producer": None if prod is None else _step_ref(prod),
        "consumers": [_step_ref(s) for s in consumers],
        "visualizations": vis,
    }


def _step_ref(s: StepRun) -> dict[str, Any]:
    return {"id": s.id, "invocation": s.invocation, "run": s.run_id, "status": s.status}


def lineage_page(
    catalog: Catalog, name: str, version: str, direction: str, depth: int, link: Any
) -> dict[str, Any]:
    if direction not in ("upstream", "downstream"):
        raise InvalidArgumentError(
            f"direction must be 'upstream' or 'downstream', not {direction!r}"
        )
    art = catalog.get_artifact(name, version)
    g = catalog.lineage(art, direction=direction, depth=depth)
    nodes = []
    for nid, n in g.nodes.items():
        if n["kind"] == "artifact":
            href = link("/lineage/" + art_path(n["name"], n["version"]), direction=direction)
            label = f"{n['name']}:{n['version']}"
            nodes.append(graph.Node(nid, n["name"], "artifact", href, label, f"v{n['version']}"))
        else:
            href = link(f"/runs/{quote(n['run'], safe='')}") + f"#step-{nid}"
            nodes.append(graph.Node(nid, n["name"], n["status"], href, n["name"], n["status"]))
    return {
        "artifact": art_ref(art),
        "direction": direction,
        "depth": depth,
        "graph": {"root": g.root, "nodes": g.nodes, "edges": [list(e) for e in g.edges]},
        "_svg": graph.to_svg(nodes, g.edges, highlight=art.id),
    }


def log_page(
    catalog: Catalog, before: int | None = None, after: int | None = None, limit: int = 100
) -> dict[str, Any]:
    head = catalog.head
    if after is not None:  # polling for new events: oldest first, at most ``limit``
        evs = list(catalog.events(after + 1, min(head + 1, after + 1 + limit)))
        evs.reverse()
    else:
        evs = q.newest_events(catalog, limit, before)
    low = evs[-1].seq if evs else None
    return {
        "log_head": head,
        "events": [event_row(e) for e in evs],
        "next_before": low if low is not None and low > 1 and after is None else None,
    }
