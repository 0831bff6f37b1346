"""The event schemas (engine.events) against the code that folds events."""

from __future__ import annotations

import ast
from pathlib import Path

import engine.events as ev
from engine.projections import HANDLERS
from engine.storage.log import SCHEMA_VERSIONS

ENGINE = Path(ev.__file__).parent


def test_every_folded_event_type_has_a_schema_and_every_schema_is_folded() -> None:
    assert set(HANDLERS) == set(ev.SCHEMAS)


def test_the_constants_name_every_type_once() -> None:
    constants = {v for k, v in vars(ev).items() if k.isupper() and isinstance(v, str) and "." in v}
    assert constants == ev.EVENT_TYPES
    assert set(ev.SCHEMAS) | {ev.STORE_CREATED} == ev.EVENT_TYPES
    assert set(SCHEMA_VERSIONS) <= ev.EVENT_TYPES
    assert set(ev.ID_MAPS) <= set(ev.SCHEMAS)


def test_events_is_at_the_bottom_layer() -> None:
    tree = ast.parse((ENGINE / "events.py").read_text())
    imported = {
        n.module if isinstance(n, ast.ImportFrom) else a.name
        for n in ast.walk(tree)
        if isinstance(n, ast.Import | ast.ImportFrom)
        for a in n.names
    }
    assert all(m == "__future__" or m == "typing" or m == "engine.errors" for m in imported)


def test_no_event_type_literals_in_ops_projections_and_query() -> None:
    found = []
    for folder in ("ops", "projections", "query"):
        for path in sorted((ENGINE / folder).glob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Constant) and node.value in ev.EVENT_TYPES:
                    found.append(f"{path.name}:{node.lineno}: {node.value!r}")
    assert not found, found
