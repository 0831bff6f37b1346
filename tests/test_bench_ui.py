"""bench/ui.py at tiny size, so the dashboard benchmark cannot rot (timing not asserted)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

pytest.importorskip("starlette")

from bench import ui


def test_ui_bench_runs_every_page(tmp_path: Path) -> None:
    rows, info = ui.run(runs=12, steps=10, repeats=1, workdir=tmp_path)
    assert info["versions"] == 120 and info["events"] > 120 * 3
    assert len(rows) == 9
    for r in rows:
        assert r.status == 200, r
        for v in (r.server_ms, r.past_server_ms, r.api_ms, r.past_api_ms):
            assert v is None or (math.isfinite(v) and v >= 0), r
    text = ui.report(rows, info, "python -m bench.ui --runs 12")
    assert "| runs `/` | 200 |" in text and "as_of / live at most" in text
