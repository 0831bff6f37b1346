"""The ``artledger`` command: a few runs of the installed command as a subprocess,
and every command in-process through ``engine.cli.main.main`` (same code, no start-up cost)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import engine
from engine import Store
from engine.cli.main import main

EXE = (
    [shutil.which("artledger") or ""]
    if shutil.which("artledger")
    else [
        sys.executable,
        "-m",
        "engine.cli",
    ]
)


def artledger(store: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*EXE, "--store", str(store), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@engine.step
def source(n: int = 2000) -> np.ndarray:
    return np.arange(n, dtype=np.float64)


@engine.step
def double(x: np.ndarray, k: float = 2.0) -> np.ndarray:
    return x * k


@engine.step
def summed(x: np.ndarray) -> float:
    return float(x.sum())


@engine.pipeline
def flow(n: int = 2000, k: float = 2.0) -> None:
    summed(double(source(n=n), k=k))


@pytest.fixture
def piped(tmp_path: Path) -> Path:
    """A store with two runs of a three-step pipeline (the second partly cached)."""
    path = tmp_path / "store"
    with Store.open(path) as s:
        s.run(flow)
        s.run(flow, k=3.0)
        s.save_artifact({"lr": 0.1}, "config", tags=["best"])
    return path


class Cli:
    def __init__(self, store: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.store = store
        self.capsys = capsys

    def __call__(self, *args: str, rc: int = 0) -> str:
        self.capsys.readouterr()
        code = main(["--store", str(self.store), *args])
        out, err = self.capsys.readouterr()
        assert code == rc, (args, out, err)
        self.err = err
        return out

    def json(self, *args: str) -> Any:
        return json.loads(self(*args))


# -- the installed command ---------------------------------------------------------------


def test_installed_command_demo_listing_and_errors(tmp_path: Path) -> None:
    store = tmp_path / "store"
    demo = artledger(store, "demo")
    assert demo.returncode == 0, demo.stderr
    listed = artledger(store, "artifacts", "--json")
    assert listed.returncode == 0
    arts = json.loads(listed.stdout)
    assert arts and all({"name", "version", "content_hash"} <= set(a) for a in arts)
    missing = artledger(store, "artifact", "no.such.name")
    assert missing.returncode == 1
    assert missing.stderr.startswith("artledger: error: no artifact named 'no.such.name'")
    assert "Traceback" not in missing.stderr and len(missing.stderr.splitlines()) == 1
    usage = artledger(store, "lineage")
    assert usage.returncode == 2 and "usage:" in usage.stderr
    nothing = artledger(tmp_path / "nowhere", "stats")
    assert nothing.returncode == 1 and "no store at" in nothing.stderr
    assert not (tmp_path / "nowhere").exists()


def test_verify_exits_1_on_a_flipped_pack_byte(tmp_path: Path) -> None:
    path = tmp_path / "store"
    with Store.open(path) as s:
        art = s.save_artifact(np.random.default_rng(0).random(50_000), "noise")
        label = f"{art.name}:{art.version}"
    pack = next((path / "packs").glob("*.pack"))
    data = bytearray(pack.read_bytes())
    data[len(data) // 2] ^= 0x01
    pack.write_bytes(bytes(data))
    result = artledger(path, "verify")
    assert result.returncode == 1
    assert "problem" in result.stdout and label in result.stdout


def test_log_follow_prints_events_other_processes_append(tmp_path: Path) -> None:
    path = tmp_path / "store"
    with Store.open(path) as s:
        head = s.head
    follower = subprocess.Popen(
        [
            *EXE,
            "--store",
            str(path),
            "log",
            "--follow",
            "--json",
            "--start",
            str(head + 1),
            "--limit",
            "2",
            "--timeout",
            "30",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(0.5)
        with Store.open(path) as s:
            s.save_artifact(1, "late")
            s.save_artifact(2, "late")
        out, err = follower.communicate(timeout=30)
    finally:
        follower.kill()
    assert follower.returncode == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    assert [(e["seq"], e["type"], e["data"]["name"]) for e in events] == [
        (head + 1, "artifact.written", "late"),
        (head + 2, "artifact.written", "late"),
    ]


# -- every command, in-process ---------------------------------------------------------------


def test_inspection_commands(piped: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cli = Cli(piped, capsys)
    runs = cli.json("runs", "--json")
    assert [r["status"] for r in runs] == ["completed", "completed"]
    assert "flow" in cli("runs")
    run = cli.json("run", runs[1]["id"], "--json")
    assert {s["status"] for s in run["steps"].values()} == {"cached", "completed"}
    assert "double" in cli("run", runs[1]["id"])
    cli("run", "feedface", rc=1)
    assert "no run with id" in cli.err
    arts = cli.json("artifacts", "--json")
    assert {a["name"] for a in arts} == {
        "flow.source.output",
        "flow.double.output",
        "flow.summed.output",
        "config",
    }
    assert [a["name"] for a in cli.json("artifacts", "--json", "--tag", "best")] == ["config"]
    assert len(cli.json("artifacts", "--json", "--name", "flow.double.output")) == 2
    one = cli.json("artifact", "flow.double.output:1", "--json")
    assert one["version"] == 1 and one["producer"]["invocation"] == "double"
    assert one["files"][0]["name"] == "data.npy"
    assert "data.npy" in cli("artifact", "flow.double.output")
    up = cli.json("lineage", "flow.summed.output:2", "--format", "json")
    kinds = sorted(n["kind"] for n in up["nodes"].values())
    assert kinds == ["artifact"] * 3 + ["step"] * 3
    assert cli("lineage", "flow.source.output", "--down", "--format", "dot").startswith("digraph")
    assert cli("lineage", "flow.source.output", "--down", "--format", "mermaid").startswith(
        "flowchart"
    )
    tree = cli("lineage", "flow.summed.output:2", "--depth", "1")
    assert "flow.double.output:2" in tree and "flow.source.output" not in tree
    second_double = run["steps"]["double"]["id"]
    why = cli.json("explain", second_double, "--json")
    assert any("k" in r for r in why["reasons"])
    assert "k" in cli("explain", second_double)
    log = [json.loads(line) for line in cli("log", "--json", "--type", "run.*").splitlines()]
    assert [e["type"] for e in log] == ["run.started", "run.completed"] * 2
    assert "store.created" in cli("log", "--limit", "1")
    stats = cli.json("stats", "--json")
    assert stats["runs"] == 2 and stats["artifacts"] == 6
    assert "logical_bytes" in cli("stats")


def test_replay_rebuild_as_of_and_into(
    piped: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cli = Cli(piped, capsys)
    assert "events/s" in cli("replay", "--rebuild")
    with Store.open(piped) as s:
        first_run_end = next(e.seq for e in s.events() if e.type == "run.completed")
        head = s.head
        s.delete_artifact(s.get_artifact("config"))
    past = cli.json("replay", "--as-of", str(first_run_end), "--json")
    assert past["seq"] == first_run_end
    assert [r["status"] for r in past["runs"]] == ["completed"]
    assert {a["name"] for a in past["artifacts"]} == {
        "flow.source.output",
        "flow.double.output",
        "flow.summed.output",
    }
    before_delete = cli.json("replay", "--as-of", str(head), "--json")
    assert "config" in {a["name"] for a in before_delete["artifacts"]}
    iso = cli.json("replay", "--as-of", "2000-01-01T00:00:00", "--json")
    assert iso["seq"] == 0 and iso["artifacts"] == []
    assert "as of event" in cli("replay", "--as-of", str(first_run_end))
    cli("replay", "--as-of", "yesterday", rc=1)
    cli("replay", rc=2)
    into = tmp_path / "past"
    assert "new store" in cli("replay", "--as-of", str(first_run_end), "--into", str(into))
    copy = Cli(into, capsys)
    assert copy.json("stats", "--json")["events"] == first_run_end
    assert copy.json("verify", "--json")["ok"]


def test_export_import_verify_through_the_cli(
    piped: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cli = Cli(piped, capsys)
    stream = tmp_path / "all.alx"
    exported = cli.json("export", str(stream), "--json")
    assert exported["events"] > 0 and stream.exists()
    dest = Cli(tmp_path / "dest", capsys)
    assert "imported" in dest("import", str(stream))
    assert dest.json("verify", "--json")["ok"]
    with Store.open(piped) as a, Store.open(tmp_path / "dest") as b:
        for art in a.list_artifacts():
            assert b.get_artifact(art.name, art.version).content_hash == art.content_hash
        np.testing.assert_array_equal(
            b.load_artifact("flow.double.output", 2), a.load_artifact("flow.double.output", 2)
        )
    assert "already imported" in dest("import", str(stream))
    bad = tmp_path / "bad.alx"
    bad.write_bytes(stream.read_bytes()[:-40])
    before = dest.json("stats", "--json")
    dest("import", str(bad), rc=1)
    assert "truncated" in dest.err and "nothing was imported" in dest.err
    assert dest.json("stats", "--json") == before
    part = tmp_path / "part.alx"
    cli("export", str(part), "--name", "flow.double.output")
    only = Cli(tmp_path / "only", capsys)
    only("import", str(part), "--trust-pickles")
    names = {a["name"] for a in only.json("artifacts", "--json")}
    assert names == {"flow.source.output", "flow.double.output"}


def test_gc_after_delete_frees_bytes_and_keeps_the_rest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "store"
    rng = np.random.default_rng(3)
    with Store.open(path) as s:
        big = s.save_artifact(rng.random(600_000), "big")  # most of its pack segment
        small = s.save_artifact(rng.random(1000), "small")
        s.save_artifact(rng.random(100_000), "other")
        s.delete_artifact(big)
        small_hash = small.content_hash
    cli = Cli(path, capsys)
    dry = cli.json("gc", "--dry-run", "--explain", "--json")
    assert dry["dry_run"] and dry["bytes_reclaimed"] > 4_000_000
    assert {label for labels in dry["why_kept"].values() for label in labels} == {
        "small:1",
        "other:1",
    }
    assert "would reclaim" in cli("gc", "--dry-run", "--explain")
    packs_before = sum(p.stat().st_size for p in (path / "packs").glob("*.pack"))
    done = cli.json("gc", "--json")
    assert done["bytes_reclaimed"] == dry["bytes_reclaimed"]
    packs_after = sum(p.stat().st_size for p in (path / "packs").glob("*.pack"))
    assert packs_before - packs_after > 4_000_000
    assert cli.json("verify", "--json")["ok"]
    assert "ok" in cli("verify")
    with Store.open(path) as s:
        assert s.get_artifact("small").content_hash == small_hash
        assert s.load_artifact("other").shape == (100_000,)
    assert "reclaimed 0 chunks" in cli("gc")


def test_demo_in_process(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cli = Cli(tmp_path / "store", capsys)
    cli("demo")
    assert cli.json("stats", "--json")["artifacts"] > 0
