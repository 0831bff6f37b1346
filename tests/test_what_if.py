"""What-if replay: the whole history re-chunked and re-compressed in memory,
matching what a real re-save under the policy stores, writing nothing."""

from __future__ import annotations

import json
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from engine import InvalidArgumentError, Store
from engine.cli import main
from materializers.numpy import NumpyMaterializer


def versions(n: int = 5, rows: int = 1 << 17) -> Iterator[np.ndarray]:
    rng = np.random.default_rng(1)
    table = rng.random((rows, 8))
    for _ in range(n):
        mid = len(table) // 3
        table = np.concatenate([table[:mid], rng.random((50, 8)), table[mid:]])
        yield table


def save_history(path: Path, chunking: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with monkeypatch.context() as m, Store.open(path, chunk_size=1 << 20) as s:
        m.setattr(NumpyMaterializer, "CHUNKING", chunking)
        for i, t in enumerate(versions()):
            s.save_artifact(t, "table")
            s.save_artifact({"step": i}, "config")
            s.save_artifact(np.round(t[:20000, 0], 2), "rounded")


@pytest.mark.parametrize(("written", "policy"), [("fixed", "cdc"), ("cdc", "fixed")])
def test_what_if_matches_a_real_resave_and_writes_nothing(
    written: str, policy: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    save_history(tmp_path / "s", written, monkeypatch)
    save_history(tmp_path / "real", policy, monkeypatch)
    with Store.open(tmp_path / "real", chunk_size=1 << 20) as real:
        expected = real.stats()["stored_bytes"]
    with Store.open(tmp_path / "s", chunk_size=1 << 20) as s:
        before = (s.head, s.stats(), sorted(p.stat().st_size for p in (tmp_path / "s").rglob("*")))
        seen: list[tuple[str, int, int]] = []
        report = s.what_if(chunking=policy, progress=lambda *a: seen.append(a))
        after = (s.head, s.stats(), sorted(p.stat().st_size for p in (tmp_path / "s").rglob("*")))
        assert before == after
        total = report.total()
        assert total.stored_what_if == pytest.approx(expected, rel=0.01)
        assert total.stored_now == pytest.approx(before[1]["stored_bytes"], rel=0.01)
        assert [n.name for n in report.names] == ["config", "rounded", "table"]
        assert all(n.versions == 5 for n in report.names)
        table = next(n for n in report.names if n.name == "table")
        if policy == "cdc":
            assert table.stored_what_if < 0.5 * table.stored_now  # inserts dedup
        else:
            assert table.stored_what_if > 2 * table.stored_now
        assert seen and seen[-1][1] == seen[-1][2] == 15


def test_codec_and_level_policies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    save_history(tmp_path / "s", "cdc", monkeypatch)
    with Store.open(tmp_path / "s", chunk_size=1 << 20) as s:
        raw = s.what_if(codec="raw").total()
        auto = s.what_if().total()
        zstd = s.what_if(codec="zstd", level=1).total()
        assert raw.stored_what_if > zstd.stored_what_if >= auto.stored_what_if
        assert auto.stored_what_if == pytest.approx(auto.stored_now, rel=0.01)
        for bad in ({"chunking": "rolling"}, {"codec": "lz4"}, {"level": 0}):
            with pytest.raises(InvalidArgumentError):
                s.what_if(**bad)  # type: ignore[arg-type]


def test_memory_stays_bounded(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    with Store.open(tmp_path / "s") as s:
        for _ in range(3):
            s.save_artifact(rng.random(4 << 20), "big")  # 32 MiB each
        tracemalloc.start()
        try:
            s.what_if(chunking="fixed")
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert peak < 48 << 20, peak  # the history is 96 MiB; a read block is 16


def test_cli_what_if(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    save_history(tmp_path / "s", "fixed", monkeypatch)
    capsys.readouterr()
    args = ["--store", str(tmp_path / "s"), "replay"]
    assert main([*args, "--what-if", "chunking=cdc,chunk-size=1MiB,codec=auto,level=3"]) == 0
    out = capsys.readouterr().out
    assert "what-if: chunking cdc, chunk size 1.0 MiB" in out and "table" in out
    assert main([*args, "--what-if", "chunking=cdc,chunk-size=1MiB", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["policy"]["chunking"] == "cdc" and doc["names"][-1]["name"] == "(all)"
    assert main([*args, "--what-if", "size=3"]) != 0
    assert "give key=value pairs" in capsys.readouterr().err
