"""Read-only stores: ``Store.open(path, readonly=True)``, and a store on a
read-only filesystem (a real read-only bind mount), opened read-only without
asking. Every read works; every write is a ``ReadOnlyStoreError`` naming the
store and why; nothing in the store changes."""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import engine
from engine import ReadOnlyStoreError, Store, StoreError
from engine.cli.main import main

ARRAY = np.random.default_rng(8).random(30_000)


@engine.step
def source(n: int = 100) -> np.ndarray:
    return np.arange(n, dtype=np.float64)


@engine.step
def double(x: np.ndarray) -> np.ndarray:
    return x * 2


@engine.pipeline
def ro_flow(n: int = 100) -> None:
    double(source(n=n))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "s"
    with Store.open(path, chunk_size=64 << 10) as s:
        s.save_artifact(ARRAY, "array", tags=["best"])
        s.save_artifact({"lr": 0.1}, "cfg")
        s.run(ro_flow)
    return path


def snapshot(path: Path) -> dict[str, str]:
    """Every file (but LMDB's lock file, which readers use) and its bytes' hash."""
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file() and p.name != "lock.mdb"
    }


def reads(s: Store, out: Path) -> None:
    np.testing.assert_array_equal(s.load_artifact("array"), ARRAY)
    assert s.load_artifact("cfg") == {"lr": 0.1}
    assert [a.name for a in s.list_artifacts(tag="best")] == ["array"]
    run = s.list_runs()[0]
    art = run.steps["double"].output
    np.testing.assert_array_equal(art.load(), np.arange(100, dtype=np.float64) * 2)
    assert len(s.lineage(art).nodes) == 4
    assert s.as_of(2).list_artifacts()[0].name == "array"
    assert len(list(s.events())) == s.head
    assert s.stats()["artifacts"] == 4
    assert s.verify().ok
    assert s.export(out).events == s.head - 1
    assert s.explain(run.steps["double"]) is not None


def writes(s: Store, export: Path) -> list[Callable[[], Any]]:
    art = s.get_artifact("cfg")
    run = s.list_runs()[0]
    return [
        lambda: s.save_artifact(1, "new"),
        lambda: engine.save_artifact(1, "new", store=s),
        lambda: s.tag(art, "x"),
        lambda: s.untag(art, "best"),
        lambda: s.log_metadata(art, {"a": 1}),
        lambda: s.delete_artifact(art),
        lambda: s.delete_run(run),
        lambda: s.gc(),
        lambda: s.rebuild(),
        lambda: s.verify(fix=True),
        lambda: s.run(ro_flow, n=5),
        lambda: Store.import_(export, into=s),
    ]


def test_readonly_open(root: Path, tmp_path: Path) -> None:
    before = snapshot(root)
    export = tmp_path / "out.export"
    with Store.open(root, readonly=True) as s:
        reads(s, export)
        for write in writes(s, export):
            with pytest.raises(ReadOnlyStoreError) as e:
                write()
            assert str(root) in str(e.value) and "readonly=True" in str(e.value)
        assert s.gc(dry_run=True).chunks_kept > 0
    assert snapshot(root) == before
    with pytest.raises(StoreError, match="no store"):
        Store.open(tmp_path / "nothing", readonly=True)
    assert not (tmp_path / "nothing").exists()


def test_a_writer_and_a_readonly_reader_at_once(root: Path) -> None:
    with Store.open(root) as w, Store.open(root, readonly=True) as r:
        w.save_artifact(2, "later")
        assert r.load_artifact("later") == 2


@contextlib.contextmanager
def readonly_bind(src: Path, dst: Path) -> Iterator[Path]:
    dst.mkdir()
    for cmd in (
        ["mount", "--bind", str(src), str(dst)],
        ["mount", "-o", "remount,ro,bind", str(dst)],
    ):
        try:
            proc = subprocess.run(cmd, capture_output=True, timeout=30)
        except (OSError, subprocess.SubprocessError) as e:
            subprocess.run(["umount", str(dst)], capture_output=True, timeout=30)
            pytest.skip(f"cannot make a read-only bind mount here: {e}")
        if proc.returncode != 0:
            subprocess.run(["umount", str(dst)], capture_output=True, timeout=30)
            pytest.skip(f"cannot make a read-only bind mount here: {proc.stderr!r}")
    try:
        yield dst
    finally:
        subprocess.run(["umount", "-l", str(dst)], capture_output=True, timeout=30)


def test_store_on_a_readonly_filesystem(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = snapshot(root)
    with readonly_bind(root, tmp_path / "ro") as ro:
        assert os.statvfs(ro).f_flag & os.ST_RDONLY
        with pytest.raises(OSError):
            (ro / "probe").write_bytes(b"")
        export = tmp_path / "out.export"
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            s = Store.open(ro)
        with s:
            reads(s, export)
            for write in writes(s, export):
                with pytest.raises(ReadOnlyStoreError, match="mounted read-only"):
                    write()
        for args in (["artifacts"], ["verify"], ["log"], ["stats"], ["lineage", "cfg"]):
            assert main(["--store", str(ro), *args]) == 0, (args, capsys.readouterr())
        capsys.readouterr()
        assert main(["--store", str(ro), "gc"]) == 1
        assert "read-only" in capsys.readouterr().err
        assert main(["--store", str(ro), "export", str(tmp_path / "cli.export")]) == 0
    assert snapshot(root) == before
