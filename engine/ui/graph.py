"""Layered drawing of step DAGs and lineage graphs as SVG.

A Sugiyama-style layout without dependencies: nodes are put in layers by
their longest path from a source (data flows top to bottom), ordered within
each layer by the barycentre of their neighbours (a few sweeps down and up,
which removes most crossings of pipeline-shaped graphs), then placed on a
grid. A 50-step pipeline stays readable: one row per stage, wide stages
scroll sideways.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from html import escape

NODE_W, NODE_H = 184, 36
GAP_X, GAP_Y = 18, 46
PAD = 12


@dataclass
class Node:
    """One box: id, text, css class (its status or kind), link, hover text."""

    id: str
    label: str
    css: str
    href: str | None = None
    title: str = ""
    sub: str = ""


def _layers(ids: list[str], edges: list[tuple[str, str]]) -> dict[str, int]:
    """Longest-path layer of each node (cycles, which a DAG has none of, are cut)."""
    preds: dict[str, list[str]] = defaultdict(list)
    succs: dict[str, list[str]] = defaultdict(list)
    for a, b in edges:
        preds[b].append(a)
        succs[a].append(b)
    indeg = {n: len(preds[n]) for n in ids}
    layer = dict.fromkeys(ids, 0)
    ready = [n for n in ids if indeg[n] == 0]
    done: set[str] = set()
    while len(done) < len(ids):
        if not ready:  # a cycle: break it at the first node not placed
            ready = [next(n for n in ids if n not in done)]
        n = ready.pop()
        if n in done:
            continue
        done.add(n)
        for m in succs[n]:
            if m in done:
                continue
            layer[m] = max(layer[m], layer[n] + 1)
            indeg[m] -= 1
            if indeg[m] <= 0:
                ready.append(m)
    return layer


def layout(
    ids: list[str], edges: list[tuple[str, str]], sweeps: int = 4
) -> dict[str, tuple[float, float]]:
    """Top-left corner of each node."""
    layer = _layers(ids, edges)
    rows: dict[int, list[str]] = defaultdict(list)
    for n in ids:
        rows[layer[n]].append(n)
    preds: dict[str, list[str]] = defaultdict(list)
    succs: dict[str, list[str]] = defaultdict(list)
    for a, b in edges:
        preds[b].append(a)
        succs[a].append(b)
    order = {n: i for r in rows.values() for i, n in enumerate(r)}
    depth = max(rows, default=0)
    for sweep in range(sweeps):
        down = sweep % 2 == 0
        seq = range(1, depth + 1) if down else range(depth - 1, -1, -1)
        for li in seq:
            nbrs = preds if down else succs

            def key(n: str, nbrs: dict[str, list[str]] = nbrs) -> float:
                ns = nbrs[n]
                return sum(order[m] for m in ns) / len(ns) if ns else order[n]

            rows[li].sort(key=key)
            for i, n in enumerate(rows[li]):
                order[n] = i
    width = max((len(r) for r in rows.values()), default=1)
    pos: dict[str, tuple[float, float]] = {}
    for li, r in rows.items():
        offset = (width - len(r)) * (NODE_W + GAP_X) / 2
        for i, n in enumerate(r):
            pos[n] = (PAD + offset + i * (NODE_W + GAP_X), PAD + li * (NODE_H + GAP_Y))
    return pos


def _clip(text: str, n: int = 26) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def to_svg(nodes: list[Node], edges: list[tuple[str, str]], *, highlight: str | None = None) -> str:
    """The graph as an inline SVG element (links are plain ``<a href>``)."""
    ids = [n.id for n in nodes]
    known = set(ids)
    edges = [(a, b) for a, b in edges if a in known and b in known]
    pos = layout(ids, edges)
    w = max((x for x, _ in pos.values()), default=0) + NODE_W + PAD
    h = max((y for _, y in pos.values()), default=0) + NODE_H + PAD
    out = [
        f'<svg class="graph" xmlns="http://www.w3.org/2000/svg" width="{w:.0f}" '
        f'height="{h:.0f}" viewBox="0 0 {w:.0f} {h:.0f}" role="img">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M0,0L10,5L0,10z"/></marker></defs>',
    ]
    for a, b in edges:
        x1, y1 = pos[a][0] + NODE_W / 2, pos[a][1] + NODE_H
        x2, y2 = pos[b][0] + NODE_W / 2, pos[b][1]
        my = (y1 + y2) / 2
        out.append(
            f'<path class="edge" d="M{x1:.0f},{y1:.0f} C{x1:.0f},{my:.0f} {x2:.0f},{my:.0f} '
            f'{x2:.0f},{y2 - 1:.0f}" marker-end="url(#arrow)"/>'
        )
    for n in nodes:
        x, y = pos[n.id]
        css = f"node {n.css}" + (" root" if n.id == highlight else "")
        body = (
            f'<g class="{escape(css)}" data-id="{escape(n.id)}" data-status="{escape(n.css)}">'
            f"<title>{escape(n.title or n.label)}</title>"
            f'<rect x="{x:.0f}" y="{y:.0f}" width="{NODE_W}" height="{NODE_H}" rx="6"/>'
            f'<text x="{x + 8:.0f}" y="{y + 15:.0f}">{escape(_clip(n.label))}</text>'
            f'<text class="sub" x="{x + 8:.0f}" y="{y + 29:.0f}">{escape(_clip(n.sub, 30))}</text>'
            "</g>"
        )
        if n.href:
            body = f'<a href="{escape(n.href)}">{body}</a>'
        out.append(body)
    out.append("</svg>")
    return "".join(out)
