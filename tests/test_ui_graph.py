"""The dashboard's graph layout: layered, no overlaps, edges pointing down."""

from __future__ import annotations

import itertools

from engine.ui.graph import NODE_H, NODE_W, Node, layout, to_svg


def _check(ids: list[str], edges: list[tuple[str, str]]) -> dict[str, tuple[float, float]]:
    pos = layout(ids, edges)
    assert set(pos) == set(ids)
    boxes = sorted(pos.values())
    for (x1, y1), (x2, y2) in itertools.combinations(boxes, 2):
        assert not (abs(x1 - x2) < NODE_W and abs(y1 - y2) < NODE_H), "overlapping nodes"
    for a, b in edges:
        assert pos[a][1] < pos[b][1], f"edge {a}->{b} does not point down"
    return pos


def test_fifty_step_pipeline_is_layered() -> None:
    # A chain of 25 steps, each writing an artifact the next reads, plus a
    # fan-out of 25 steps reading the first artifact and a join.
    ids: list[str] = []
    edges: list[tuple[str, str]] = []
    for i in range(25):
        ids += [f"s{i}", f"a{i}"]
        edges.append((f"s{i}", f"a{i}"))
        if i:
            edges.append((f"a{i - 1}", f"s{i}"))
    for j in range(25):
        ids += [f"f{j}", f"fa{j}"]
        edges += [("a0", f"f{j}"), (f"f{j}", f"fa{j}"), (f"fa{j}", "join")]
    ids.append("join")
    pos = _check(ids, edges)
    rows = {y for _, y in pos.values()}
    assert len(rows) == 50  # the 25-step chain: one row per step and per artifact
    svg = to_svg([Node(i, i, "completed", f"/x/{i}") for i in ids], edges)
    assert svg.count("<g class=") == len(ids) and svg.count('class="edge"') == len(edges)


def test_crossings_are_reduced_and_cycles_do_not_hang() -> None:
    ids = ["a", "b", "c", "d"]
    edges = [("a", "d"), ("b", "c")]
    pos = _check(ids, edges)
    assert (pos["a"][0] < pos["b"][0]) == (pos["d"][0] < pos["c"][0])
    cyc = layout(["x", "y"], [("x", "y"), ("y", "x")])
    assert set(cyc) == {"x", "y"}


def test_labels_are_escaped() -> None:
    svg = to_svg([Node("n", "<script>x</script>", "failed", '/a?b="c"', "t<i>")], [])
    assert "<script>" not in svg and "&lt;script&gt;" in svg and "&quot;c&quot;" in svg
