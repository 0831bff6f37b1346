"""Rendering for the ``artledger`` command: consoles, tables, trees, progress, JSON.

rich is imported inside the functions, so importing ``engine.cli.main`` stays cheap.
"""

from __future__ import annotations

import datetime as _dt
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.events import (
    ARTIFACT_TAGGED,
    ARTIFACT_UNTAGGED,
    ARTIFACT_WRITTEN,
    GC_COMPLETED,
    RUN_STARTED,
)

if TYPE_CHECKING:
    from rich.console import Console

    from engine.query.models import ArtifactVersion, Run, StepRun
    from engine.storage.log import Event


# -- output helpers --------------------------------------------------------------------


def stdout() -> Console:
    from rich.console import Console

    # Off a terminal rich would wrap tables at 80 columns; give them room instead.
    width = None if sys.stdout.isatty() else 160
    return Console(file=sys.stdout, highlight=False, width=width)


def stderr() -> Console:
    from rich.console import Console

    return Console(file=sys.stderr, highlight=False)


def plain(obj: Any) -> Any:
    """JSON-able: bytes as hex, datetimes as ISO strings."""
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if isinstance(obj, bytes):
        return obj.hex()
    if isinstance(obj, _dt.datetime):
        return obj.isoformat()
    if isinstance(obj, Path):
        return str(obj)
    return obj


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(plain(obj), indent=2, sort_keys=True) + "\n")


def fmt_time(ns: int | None) -> str:
    if not ns:
        return ""
    return _dt.datetime.fromtimestamp(ns / 1e9).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def fmt_size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def new_table(title: str | None, *columns: str) -> Any:
    from rich.table import Table

    table = Table(title=title, title_justify="left", header_style="bold")
    for c in columns:
        table.add_column(c, overflow="fold")
    return table


@contextmanager
def progress(what: str) -> Iterator[Callable[[str, int, int], None]]:
    """A rich progress bar on stderr; yields ``update(stage, done, total)``."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=stderr(),
        transient=True,
    )
    if not progress.console.is_terminal:
        yield lambda stage, done, total: None
        return
    tasks: dict[str, Any] = {}

    def update(stage: str, done: int, total: int) -> None:
        task = tasks.get(stage)
        if task is None:
            task = tasks[stage] = progress.add_task(f"{what}: {stage}", total=max(total, 1))
        progress.update(task, completed=done, total=max(total, 1))

    with progress:
        yield update


# -- rendering ----------------------------------------------------------------------


def artifact_row(a: ArtifactVersion) -> dict[str, Any]:
    return {
        "id": a.id,
        "name": a.name,
        "version": a.version,
        "type": a.data_type,
        "size": a.size,
        "content_hash": a.content_hash,
        "tags": a.tags,
        "created": a.created,
        "deleted": a.deleted,
        "seq": a.seq,
    }


def artifacts_table(arts: list[ArtifactVersion], title: str | None = None) -> Any:
    table = new_table(title, "name", "version", "type", "size", "content hash", "tags", "created")
    for a in arts:
        name = f"[strike]{a.name}[/] [red](deleted)[/]" if a.deleted else a.name
        table.add_row(
            name,
            str(a.version),
            a.data_type,
            fmt_size(a.size),
            a.content_hash[:12],
            ", ".join(a.tags),
            fmt_time(a.record().get("ts")),
        )
    return table


def run_row(r: Run) -> dict[str, Any]:
    rec = r.record()
    return {
        "id": r.id,
        "pipeline": r.pipeline,
        "status": r.status,
        "params": r.params,
        "started": r.started,
        "ended": r.ended,
        "error": r.error,
        "steps": dict(rec.get("steps") or {}),
        "seq": r.seq,
    }


def runs_table(runs: list[Run], title: str | None = None) -> Any:
    table = new_table(title, "id", "pipeline", "status", "steps", "started", "duration")
    for r in runs:
        rec = r.record()
        dur = ""
        if rec.get("ended_ts"):
            dur = f"{(rec['ended_ts'] - rec['ts']) / 1e9:.2f} s"
        table.add_row(
            r.id,
            r.pipeline,
            fmt_status(r.status),
            str(len(rec.get("steps") or {})),
            fmt_time(rec.get("ts")),
            dur,
        )
    return table


_COLORS = {
    "completed": "green",
    "cached": "cyan",
    "failed": "red",
    "skipped": "yellow",
    "running": "blue",
}


def cache_reason(s: StepRun) -> str:
    """Why a step run was served from the cache, or ran."""
    if s.status == "cached":
        return f"hit: reused step run {s.source}" if s.source else "hit"
    return str(s.cache_miss_reason or "")


def fmt_status(status: str) -> str:
    color = _COLORS.get(status)
    return f"[{color}]{status}[/]" if color else status


def summary(e: Event) -> str:
    d = e.data
    if e.type == ARTIFACT_WRITTEN:
        return f"{d.get('name')}:{d.get('version')}  id {d.get('id')}  {fmt_size(d.get('size', 0))}"
    if e.type in (ARTIFACT_TAGGED, ARTIFACT_UNTAGGED):
        return f"id {d.get('id')}  tags {', '.join(d.get('tags', []))}"
    if e.type == RUN_STARTED:
        return f"{d.get('pipeline')}  run {d.get('id')}"
    if e.type.startswith("step."):
        return f"{d.get('invocation', '')}  step run {d.get('id')}  run {d.get('run')}".strip()
    if e.type == GC_COMPLETED:
        return f"{d.get('chunks')} chunks, {fmt_size(int(d.get('bytes', 0)))} reclaimed"
    if "id" in d:
        return f"id {d['id']}"
    return ", ".join(f"{k}={v}" for k, v in sorted(d.items()) if not isinstance(v, (dict, list)))


def lineage_tree(graph: Any, *, down: bool) -> Any:
    from rich.tree import Tree

    children: dict[str, list[str]] = {}
    for src, dst in graph.edges:
        parent, child = (src, dst) if down else (dst, src)
        children.setdefault(parent, []).append(child)

    def label(nid: str) -> str:
        n = graph.nodes[nid]
        if n["kind"] == "artifact":
            gone = " [red](deleted)[/]" if n.get("deleted") else ""
            return f"[bold]{n['name']}:{n['version']}[/]{gone}  [dim]{nid}[/]"
        return f"[italic]{n['name']}[/] {fmt_status(n.get('status', ''))}  [dim]step run {nid}[/]"

    root = Tree(label(graph.root))
    shown: set[str] = {graph.root}

    def grow(node: Any, nid: str) -> None:
        for child, same in _collapse_cached(graph, children, children.get(nid, [])):
            if child in shown:
                node.add(label(child) + "  [dim](shown above)[/]")
                continue
            shown.add(child)
            shown.update(same)
            text = label(child)
            if same:
                ids = ", ".join(same[:3]) + (", ..." if len(same) > 3 else "")
                text += f"  [dim](+{len(same)} cached: step runs {ids})[/]"
            grow(node.add(text), child)

    grow(root, graph.root)
    return root


def _collapse_cached(
    graph: Any, children: dict[str, list[str]], kids: list[str]
) -> list[tuple[str, list[str]]]:
    """``kids``, each with the cache hits it stands for: step runs of the same
    step with the same outputs that were served from the cache (downstream, an
    artifact read by every cached rerun of a pipeline would list each). The
    step run that computed them leads its group when it is among ``kids``."""

    def key(kid: str) -> tuple[str, tuple[str, ...]] | None:
        n = graph.nodes[kid]
        if n["kind"] == "artifact":
            return None
        return (str(n["name"]), tuple(sorted(children.get(kid, []))))

    def cached(kid: str) -> bool:
        return bool(graph.nodes[kid].get("status") == "cached")

    leaders: dict[tuple[str, tuple[str, ...]], str] = {}
    for kid in kids:
        k = key(kid)
        if k is not None and (k not in leaders or (cached(leaders[k]) and not cached(kid))):
            leaders[k] = kid
    out: list[tuple[str, list[str]]] = []
    groups: dict[str, list[str]] = {}
    for kid in kids:
        k = key(kid)
        leader = leaders.get(k) if k is not None else None
        if leader is None or kid == leader or not cached(kid):
            groups[kid] = []
            out.append((kid, groups[kid]))
    for kid in kids:
        k = key(kid)
        leader = leaders.get(k) if k is not None else None
        if leader is not None and kid != leader and cached(kid):
            groups[leader].append(kid)
    return out
