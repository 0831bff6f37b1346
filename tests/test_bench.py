"""Every benchmark scenario runs at ``tiny`` size, so the harness cannot rot.

Speed is never asserted here: only that each scenario finishes without an
error and reports rows whose values are finite, and that the report writer
produces its Markdown, JSON and plots.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import SCENARIOS
from bench.common import Result
from bench.runner import markdown, run_scenario, write_plots


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Result]]:
    tmp = tmp_path_factory.mktemp("bench")
    yield {name: run_scenario(name, "tiny", tmp, quiet=True) for name in SCENARIOS}


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_scenario_reports_finite_rows(results: dict[str, Result], name: str) -> None:
    res = results[name]
    assert res.error is None, "\n".join([res.error or "", *res.notes])
    assert res.name == name and res.title and res.about
    if res.skipped:
        assert not res.rows
        return
    assert res.rows, f"{name} reported no rows"
    for row in res.rows:
        assert row.metric and row.unit is not None
        assert row.ours is not None and math.isfinite(row.ours), row
        if row.baseline is not None:
            assert math.isfinite(row.baseline), row
            assert row.ratio is None or math.isfinite(row.ratio), row
        if row.goal is not None:
            assert row.goal_text and row.met in (True, False), row
    for s in res.series:
        assert s.x and all(len(ys) == len(s.x) for ys in s.ys.values()), s.title


def test_concurrency_loses_nothing(results: dict[str, Result]) -> None:
    rows = [r for r in results["concurrency"].rows if "problems" in r.metric]
    assert rows and all(r.ours == 0 for r in rows), [r.note for r in rows]


def test_report_is_written(results: dict[str, Result], tmp_path: Path) -> None:
    doc = {
        "size": "tiny",
        "command": "python -m bench --size tiny",
        "started": "now",
        "seconds": 1.0,
        "machine": dict.fromkeys(
            [
                "cpu",
                "cores",
                "ram_gib",
                "disk_free_gib",
                "platform",
                "python",
                "numpy",
                "lmdb",
                "zstandard",
                "xxhash",
                "msgpack",
                "joblib",
                "artledger",
                "git_commit",
            ],
            "x",
        ),
        "scenarios": [r.to_json() for r in results.values()],
    }
    plots = write_plots(list(results.values()), tmp_path, "tiny")
    assert plots and all((tmp_path / f).stat().st_size > 0 for fs in plots.values() for f in fs)
    text = markdown(doc, list(results.values()), plots)
    assert "| metric | ours | baseline | ratio | goal | met? |" in text
    for r in results.values():
        assert r.title in text
    json.loads(json.dumps(doc, default=str))
