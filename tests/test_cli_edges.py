"""The ``artledger`` commands a new user reached for: visualizations, files,
tag/untag/delete, id prefixes, cache reasons, deleted versions, collapsed
lineage, and one-line errors."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import engine
from engine import Store
from engine.cli.main import main


@engine.step
def load(n: int = 50) -> np.ndarray:
    return np.arange(n, dtype=np.float64)


@engine.step
def scale(x: np.ndarray, k: float = 2.0) -> np.ndarray:
    return x * k


@engine.pipeline
def flow(n: int = 50, k: float = 2.0) -> None:
    scale(load(n=n), k=k)


class Cli:
    def __init__(self, store: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.store, self.capsys = store, capsys

    def __call__(self, *args: str, rc: int = 0) -> str:
        self.capsys.readouterr()
        code = main(["--store", str(self.store), *args])
        out, self.err = self.capsys.readouterr()
        assert code == rc, (args, out, self.err)
        return out

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "--json"))


@pytest.fixture
def cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Cli:
    path = tmp_path / "store"
    with Store.open(path) as s:
        s.run(flow)
        s.run(flow)  # every step cached
        s.run(flow)  # and again
        s.run(flow, k=3.0)  # scale runs
    return Cli(path, capsys)


def test_visualizations_are_listed_and_saved(cli: Cli, tmp_path: Path) -> None:
    out = cli("artifact", "flow.load.output")
    assert "visualizations" in out and "preview.html" in out and "html" in out
    row = cli.json("artifact", "flow.load.output")
    assert {v["name"]: v["kind"] for v in row["visualizations"]} == {
        "preview.csv": "csv",
        "preview.html": "html",
    }
    out = cli("artifact", "flow.load.output", "--save-visualizations", str(tmp_path / "vis"))
    assert (tmp_path / "vis" / "preview.csv").read_text().splitlines()[:2] == ["0.0", "1.0"]
    assert f"wrote {tmp_path / 'vis' / 'preview.html'}" in out


def test_files_extracts_an_artifact(cli: Cli, tmp_path: Path) -> None:
    out = cli("files", "flow.scale.output:1", str(tmp_path / "out" / "deep"))
    written = [Path(line) for line in out.splitlines()]
    assert written and all(p.is_file() for p in written)
    assert np.array_equal(np.load(written[0]), np.arange(50) * 2.0)


def test_tag_untag_delete(cli: Cli) -> None:
    assert "tags: prod, v1" in cli("tag", "flow.scale.output:1", "prod", "v1")
    assert cli.json("artifact", "flow.scale.output@prod")["version"] == 1
    assert "tags: v1" in cli("untag", "flow.scale.output@prod", "prod")
    out = cli("delete", "flow.scale.output:2")
    assert "deleted flow.scale.output:2" in out and "gc" in out
    assert cli.json("artifact", "flow.scale.output")["version"] == 1
    listing = cli("artifacts", "--all", "--name", "flow.scale.output")
    assert "(deleted)" in listing
    assert "(deleted)" not in cli("artifacts", "--name", "flow.scale.output")
    assert [a["deleted"] for a in cli.json("artifacts", "--all")].count(True) == 1


def test_ids_by_unique_prefix(cli: Cli) -> None:
    runs = cli.json("runs")
    rid = runs[0]["id"]
    assert cli.json("run", rid[:6])["id"] == rid
    art = cli.json("artifact", "flow.load.output")
    assert cli.json("artifact", art["id"][:8])["id"] == art["id"]
    sid = runs[-1]["steps"]["scale"]
    assert cli.json("explain", sid[:7])["step_run"] == sid
    cli("run", "zzzz", rc=1)
    assert "no run with id 'zzzz', nor one whose id starts with it" in cli.err
    # With 17 runs, two share a first hex digit: that prefix is refused.
    with Store.open(cli.store) as s:
        for _ in range(13):
            s.run(flow)
        ids = sorted(r.id for r in s.list_runs())
    shared = next(a[0] for a, b in itertools.pairwise(ids) if a[0] == b[0])
    cli("run", shared, rc=1)
    assert "ambiguous" in cli.err and "give more of it" in cli.err


def test_run_shows_each_steps_cache_reason(cli: Cli) -> None:
    runs = cli.json("runs")
    first, cached, changed = runs[0]["id"], runs[1]["id"], runs[-1]["id"]
    assert "hit: reused step run" in cli("run", cached)
    out = cli("run", changed)
    assert "parameter k: 2.0 -> 3.0" in out and "hit: reused step run" in out
    assert "cache" in cli("run", first)


def test_lineage_down_collapses_repeated_cached_consumers(cli: Cli) -> None:
    out = cli("lineage", "flow.load.output", "--down")
    assert "scale cached" not in out and out.count("scale completed") == 2
    assert "(+2 cached: step runs" in out
    assert "shown above" not in out


def test_errors_are_one_line(cli: Cli, tmp_path: Path) -> None:
    cli("export", str(tmp_path / "nowhere" / "x.alx"), rc=1)
    assert cli.err.startswith("artledger: error: cannot export to")
    assert "does not exist" in cli.err and len(cli.err.splitlines()) == 1
    bad = tmp_path / "bad.alx"
    bad.write_bytes(b"junk")
    fresh = Cli(tmp_path / "fresh", cli.capsys)
    fresh("import", str(bad), rc=1)
    assert "nothing was imported" in fresh.err and not (tmp_path / "fresh").exists()
    cli("replay", "--as-of", "0", rc=1)
    assert "events are numbered from 1" in cli.err and "Traceback" not in cli.err
