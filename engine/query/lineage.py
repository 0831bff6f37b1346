"""Lineage graphs: artifact -> step run that read it -> artifact it wrote.

Upstream walks from an artifact to the step run that produced it, to that
step run's inputs, and on to the sources. Downstream walks from an artifact to
the step runs that consumed it (executed or cached) and their outputs. Edges
always point in the direction data flowed.
"""

from __future__ import annotations

import json
from collections import deque
from typing import TYPE_CHECKING, Any

from engine.projections.keys import consumer_key
from engine.projections.records import record

if TYPE_CHECKING:
    from engine.query.catalog import Catalog
    from engine.query.models import ArtifactVersion


class LineageGraph:
    """Nodes ``{id: {"kind": "artifact"|"step", "name": ...}}`` and data-flow edges."""

    def __init__(self, root: str, direction: str) -> None:
        self.root = root
        self.direction = direction
        self.nodes: dict[str, dict[str, Any]] = {}
        self.edges: list[tuple[str, str]] = []
        self._seen_edges: set[tuple[str, str]] = set()

    def add_edge(self, src: str, dst: str) -> None:
        """Add the data-flow edge ``src -> dst`` once."""
        if (src, dst) not in self._seen_edges:
            self._seen_edges.add((src, dst))
            self.edges.append((src, dst))

    def add_artifact(self, rec: dict[str, Any]) -> None:
        """A node for an artifact version's projection record."""
        self.nodes.setdefault(
            rec["id"],
            {
                "kind": "artifact",
                "name": rec["name"],
                "version": rec["version"],
                "deleted": rec["deleted"] is not None,
            },
        )

    def add_step(self, rec: dict[str, Any], name: str | None = None) -> None:
        """A node for a step run's projection record (``name``: its invocation)."""
        self.nodes.setdefault(
            rec["id"],
            {
                "kind": "step",
                "name": name or rec["invocation"],
                "step": rec["step"],
                "status": rec["status"],
                "run": rec["run"],
            },
        )

    def to_json(self) -> str:
        return json.dumps(
            {
                "root": self.root,
                "direction": self.direction,
                "nodes": self.nodes,
                "edges": [list(e) for e in self.edges],
            },
            indent=2,
            sort_keys=True,
        )

    def _label(self, nid: str) -> str:
        n = self.nodes[nid]
        if n["kind"] == "artifact":
            return f"{n['name']}:{n['version']}"
        return f"{n['name']} ({n.get('status', '')})"

    def to_dot(self) -> str:
        lines = ["digraph lineage {", "  rankdir=LR;"]
        for nid, n in self.nodes.items():
            shape = "box" if n["kind"] == "artifact" else "ellipse"
            label = self._label(nid).replace('"', '\\"')
            lines.append(f'  "{nid}" [shape={shape}, label="{label}"];')
        lines.extend(f'  "{a}" -> "{b}";' for a, b in self.edges)
        lines.append("}")
        return "\n".join(lines) + "\n"

    def to_mermaid(self) -> str:
        lines = ["flowchart LR"]
        for nid, n in self.nodes.items():
            label = self._label(nid).replace('"', "'")
            if n["kind"] == "artifact":
                lines.append(f'  n{nid}["{label}"]')
            else:
                lines.append(f'  n{nid}(["{label}"])')
        lines.extend(f"  n{a} --> n{b}" for a, b in self.edges)
        return "\n".join(lines) + "\n"

    def __repr__(self) -> str:
        return f"<LineageGraph {self.direction} of {self.root}: {len(self.nodes)} nodes>"


def build_lineage(
    catalog: Catalog, art: ArtifactVersion, direction: str, depth: int | None
) -> LineageGraph:
    """Breadth-first walk in one read snapshot; ``depth`` counts step hops."""
    g = LineageGraph(art.id, direction)
    seen: dict[str, dict[str, Any] | None] = {}
    with catalog._read() as txn:

        def artifact(aid: str) -> dict[str, Any] | None:
            if aid in seen:
                return seen[aid]
            raw = txn.get("artifacts", aid.encode())
            rec = seen[aid] = None if raw is None else record(raw, "artifacts")
            if rec is None:
                return None
            g.add_artifact(rec)
            return rec

        def step(sid: str) -> dict[str, Any] | None:
            raw = txn.get("steps", sid.encode())
            if raw is None:
                return None
            rec = record(raw, "steps")
            g.add_step(rec)
            return rec

        artifact(art.id)
        queue: deque[tuple[str, int]] = deque([(art.id, 0)])
        visited = {art.id}
        while queue:
            aid, hops = queue.popleft()
            if depth is not None and hops >= depth:
                continue
            if direction == "upstream":
                rec = artifact(aid)
                sid = rec.get("producer") if rec else None
                if not sid:
                    continue
                srec = step(sid)
                if srec is None:
                    continue
                g.add_edge(sid, aid)
                for in_id in srec["inputs"].values():
                    if artifact(in_id) is None:
                        continue
                    g.add_edge(in_id, sid)
                    if in_id not in visited:
                        visited.add(in_id)
                        queue.append((in_id, hops + 1))
            else:
                for k, _ in txn.scan("consumers", prefix=consumer_key(aid, "")):
                    sid = k.split(b"\x00", 1)[1].decode()
                    srec = step(sid)
                    if srec is None:
                        continue
                    g.add_edge(aid, sid)
                    for out_id in srec["outputs"].values():
                        if artifact(out_id) is None:
                            continue
                        g.add_edge(sid, out_id)
                        if out_id not in visited:
                            visited.add(out_id)
                            queue.append((out_id, hops + 1))
    return g
