"""Importing a real ZenML store (tests/fixtures/zenml, made by tools/make_zenml_fixture.py).

Expected values come from the fixture's own SQLite database, queried here."""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from engine import (
    ImportValidationError,
    MaterializerError,
    Store,
    UntrustedArtifactError,
    failpoints,
    pipeline,
    step,
)
from engine.cli import main
from engine.ops.zenml_db import DB_PATH, dashed
from engine.ops.zenml_import import artledger_id

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "zenml"
STORE_DIR = FIXTURE / "local_stores" / "525d3db2-d581-4c17-b4b1-b549845ce77a"


@pytest.fixture(scope="module")
def db() -> Iterator[sqlite3.Connection]:
    con = sqlite3.connect(f"file:{FIXTURE / DB_PATH}?mode=ro", uri=True)
    con.row_factory = sqlite3.Row
    yield con
    con.close()


@pytest.fixture
def imported(store: Store) -> Store:
    store.import_zenml(FIXTURE)
    return store


def copy_fixture(tmp_path: Path) -> Path:
    dst = tmp_path / "zenml"
    shutil.copytree(FIXTURE, dst)
    return dst


def state(store: Store) -> tuple[int, dict[str, int]]:
    return store.head, store.stats()


def versions(db: sqlite3.Connection) -> list[sqlite3.Row]:
    return list(
        db.execute(
            "SELECT av.*, a.name AS aname FROM artifact_version av "
            "JOIN artifact a ON a.id = av.artifact_id"
        )
    )


def test_counts_names_versions_tags_and_metadata_match_zenml(
    imported: Store, db: sqlite3.Connection
) -> None:
    rows = versions(db)
    assert imported.stats()["artifacts"] == len(rows) == 17
    assert imported.stats()["runs"] == db.execute("SELECT count(*) FROM pipeline_run").fetchone()[0]
    for r in rows:
        art = imported.get_artifact_by_id(artledger_id("artifact", r["id"]))
        assert art.name == r["aname"]
        assert str(art.version) == r["version"]
        tags = [
            t[0]
            for t in db.execute(
                "SELECT t.name FROM tag_resource tr JOIN tag t ON t.id = tr.tag_id "
                "WHERE tr.resource_id = ?",
                (r["id"],),
            )
        ]
        assert art.tags == sorted(tags)
        meta = art.metadata
        assert meta["zenml"]["id"] == dashed(r["id"])
        assert meta["zenml"]["materializer"].endswith(json.loads(r["materializer"])["attribute"])
        for key, value in db.execute(
            "SELECT m.key, m.value FROM run_metadata m JOIN run_metadata_resource x "
            "ON x.run_metadata_id = m.id WHERE x.resource_id = ?",
            (r["id"],),
        ):
            # ZenML's logged metadata is the user's: art.user_metadata holds it whole
            # (art.metadata shows the engine's own keys, such as dtype, over it).
            assert art.user_metadata[key] == json.loads(value), key
    assert imported.get_artifact("mean", 1).metadata["accuracy"] == 0.93
    assert imported.get_artifact("golden_ref", "golden").tags == ["reference"]


def test_runs_steps_and_lineage_match_zenml(imported: Store, db: sqlite3.Connection) -> None:
    for r in db.execute(
        "SELECT pr.*, p.name AS pname FROM pipeline_run pr JOIN pipeline p ON p.id = pr.pipeline_id"
    ):
        run = imported.get_run(artledger_id("run", r["id"]))
        assert run.pipeline == r["pname"]
        assert run.status == r["status"]
        assert run.metadata["zenml"]["id"] == dashed(r["id"])
        steps = {
            s["id"]: s
            for s in db.execute("SELECT * FROM step_run WHERE pipeline_run_id = ?", (r["id"],))
        }
        assert {s.id for s in run.steps.values()} == {artledger_id("step", i) for i in steps}
    statuses = {"completed": 0, "cached": 0, "failed": 0}
    for s in db.execute("SELECT * FROM step_run"):
        sr = imported.get_step_run(artledger_id("step", s["id"]))
        assert sr.status == s["status"]
        statuses[sr.status] += 1
        assert sr.metadata["zenml"]["cache_key"] == s["cache_key"]
        assert sr.cache_key is None  # ZenML's keys are not artledger's
        ins = {
            n: artledger_id("artifact", a)
            for n, a in db.execute(
                "SELECT name, artifact_id FROM step_run_input_artifact WHERE step_id = ?",
                (s["id"],),
            )
        }
        outs = {
            n: artledger_id("artifact", a)
            for n, a in db.execute(
                "SELECT name, artifact_id FROM step_run_output_artifact WHERE step_id = ?",
                (s["id"],),
            )
        }
        assert {n: a.id for n, a in sr.inputs.items()} == ins
        if sr.status != "failed":
            assert {n: a.id for n, a in sr.outputs.items()} == outs
        if s["original_step_run_id"]:
            assert sr.source == artledger_id("step", s["original_step_run_id"])
        if sr.status == "failed":
            assert "fails on purpose" in sr.error
    assert statuses == {"completed": 10, "cached": 3, "failed": 1}
    for r in versions(db):
        art = imported.get_artifact_by_id(artledger_id("artifact", r["id"]))
        producer = db.execute(
            "SELECT s.id FROM step_run_output_artifact o JOIN step_run s ON s.id = o.step_id "
            "WHERE o.artifact_id = ? AND s.status = 'completed' ORDER BY s.created LIMIT 1",
            (r["id"],),
        ).fetchone()
        if producer is None:
            assert art.producer is None
        else:
            assert art.producer is not None
            assert art.producer.id == artledger_id("step", producer[0])
        # artledger counts a step run as a consumer once it completed (or was cached)
        consumers = {
            artledger_id("step", c[0])
            for c in db.execute(
                "SELECT i.step_id FROM step_run_input_artifact i "
                "JOIN step_run s ON s.id = i.step_id "
                "WHERE i.artifact_id = ? AND s.status != 'failed'",
                (r["id"],),
            )
        }
        assert {c.id for c in imported.consumers(art)} == consumers
    up = imported.lineage(imported.get_artifact("summary", 2))
    names = {n["name"] for n in up.nodes.values() if n["kind"] == "artifact"}
    assert names == {"summary", "features", "config"}


def test_bytes_load_equal(imported: Store) -> None:
    features = np.arange(400, dtype=np.float64).reshape(-1, 4) * 1.5
    for v in (1, 2):
        got = imported.load_artifact("features", v)
        np.testing.assert_array_equal(got, features)
        assert got.dtype == features.dtype
    f3 = imported.get_artifact("features", 3)
    np.testing.assert_array_equal(
        f3.load(),
        np.load(
            STORE_DIR
            / Path(f3.metadata["zenml"]["uri"].split(STORE_DIR.name + "/", 1)[1])
            / "data.npy"
        ),
    )
    golden = imported.load_artifact("golden_ref", "golden")
    np.testing.assert_array_equal(golden, np.array([1, 2, 3], dtype=np.int32))
    assert golden.dtype == np.int32
    assert imported.load_artifact("config", 1) == {
        "lr": 0.1,
        "layers": [64, 32],
        "name": "demo",
        "dropout": None,
    }
    assert imported.load_artifact("mean", 1) == 299.25
    assert imported.load_artifact("count", 2) == 400
    assert imported.load_artifact("summary", 1) == "demo: mean 299.250"
    assert imported.load_artifact("shape", 1) == [100, 4]
    assert imported.load_artifact("frame_stats", 1) == {"rows": 100, "max_temp": 30.0, "x": 1.5}
    frame = imported.load_artifact("frame", 1)
    pd.testing.assert_frame_equal(frame, pd.read_parquet(next(STORE_DIR.rglob("df.parquet.gzip"))))
    assert list(frame.columns) == ["city", "temp", "rank"] and len(frame) == 100


def test_pickles_untrusted_unless_trusted(imported: Store, tmp_path: Path) -> None:
    point = imported.get_artifact("point", 1)
    assert point.record().get("untrusted") is True
    assert point.materializer == "materializers.cloudpickle_materializer:CloudpickleMaterializer"
    assert point.metadata["zenml"]["materializer"].endswith(":CloudpickleMaterializer")
    assert sorted(point.files) == ["artifact.pkl", "python_version.txt"]
    with pytest.raises((UntrustedArtifactError, MaterializerError)):
        point.load()
    with Store.open(tmp_path / "trusted") as trusted:
        report = trusted.import_zenml(FIXTURE, trust_pickles=True)
        assert report.signed == 1 and report.untrusted == 0
        assert trusted.get_artifact("point", 1).record().get("untrusted") is None
        # ZenML's cloudpickle pickled the class by value: no module to import
        loaded = trusted.load_artifact("point", 1)
        assert type(loaded).__name__ == "Point" and (loaded.x, loaded.y) == (1.5, -2.0)


def test_zenml_copies_deduplicate(imported: Store) -> None:
    f1, f2 = imported.get_artifact("features", 1), imported.get_artifact("features", 2)
    assert f1.id != f2.id and f1.content_hash == f2.content_hash
    stats = imported.stats()
    arts = imported.list_artifacts()
    assert stats["logical_bytes"] == sum(a.size for a in arts)
    entries = [f for a in arts for f in a.record()["files"]]
    entries += [v[2] for a in arts for v in a.record()["visualizations"]]
    refs = [c for f in entries for c in f[3]]
    assert stats["chunks"] == len(set(refs)) < len(refs)  # ZenML's copies stored once
    assert stats["stored_bytes"] < stats["logical_bytes"]


def test_reimport_is_a_no_op(imported: Store) -> None:
    before = state(imported)
    report = imported.import_zenml(FIXTURE)
    assert (report.runs, report.artifacts, report.runs_already, report.artifacts_already) == (
        0,
        0,
        5,
        17,
    )
    assert state(imported) == before


def test_dry_run_writes_nothing(store: Store) -> None:
    before = state(store)
    report = store.import_zenml(FIXTURE, dry_run=True)
    assert (report.runs, report.steps, report.artifacts) == (5, 14, 17)
    assert (report.converted, report.kept_as_files, report.untrusted) == (16, 1, 1)
    assert state(store) == before


@pytest.mark.parametrize("point", ["commit.before_txn", "commit.after"])
def test_interrupted_import_resumes(
    disk_store: Store, point: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ARTLEDGER_FAILPOINTS", f"{point}=raise@3")
    failpoints.reload()
    try:
        with pytest.raises(OSError):
            disk_store.import_zenml(FIXTURE)
    finally:
        monkeypatch.delenv("ARTLEDGER_FAILPOINTS")
        failpoints.reload()
    done = disk_store.stats()["runs"]
    assert 0 < done < 5
    report = disk_store.import_zenml(FIXTURE)
    assert report.runs_already == done and report.runs == 5 - done
    clean = Store.memory()
    clean.import_zenml(FIXTURE)

    def ids(s: Store) -> list[tuple[str, Any]]:
        return sorted((a.id, a.version) for a in s.list_artifacts())

    assert ids(disk_store) == ids(clean)
    assert disk_store.stats()["artifacts"] == 17 and disk_store.verify().ok


def test_a_run_still_in_progress_is_left_for_a_later_import(store: Store, tmp_path: Path) -> None:
    src = copy_fixture(tmp_path)
    failing = "099976f4a67041aa9494625bcde7c774"

    def set_status(status: str) -> None:
        con = sqlite3.connect(src / DB_PATH)
        con.execute("UPDATE pipeline_run SET status = ? WHERE id = ?", (status, failing))
        con.commit()
        con.close()

    set_status("running")
    report = store.import_zenml(src)
    assert (report.runs, report.runs_unfinished, report.artifacts) == (4, 1, 16)
    set_status("failed")
    report = store.import_zenml(src)
    assert (report.runs, report.runs_already, report.artifacts) == (1, 4, 1)
    assert store.get_run(artledger_id("run", failing)).status == "failed"


def test_versions_the_store_already_has(store: Store) -> None:
    store.save_artifact(np.zeros(2), "features")
    report = store.import_zenml(FIXTURE)
    assert report.artifacts == 17
    got = {
        a.metadata["zenml"]["version"]: a.version
        for a in store.list_artifacts("features")
        if "zenml" in a.metadata
    }
    assert got == {"1": 2, "2": 3, "3": 4}  # numbered after the store's, in ZenML's order
    assert store.get_artifact("config", 1).metadata["zenml"]["version"] == "1"


def test_a_clashing_version_label_is_refused(store: Store) -> None:
    store.save_artifact(np.zeros(2), "golden_ref", version="golden")
    before = state(store)
    with pytest.raises(ImportValidationError, match="already has golden_ref:golden"):
        store.import_zenml(FIXTURE)
    assert state(store) == before


def test_unknown_schema_version_is_refused(store: Store, tmp_path: Path) -> None:
    src = copy_fixture(tmp_path)
    con = sqlite3.connect(src / DB_PATH)
    con.execute("UPDATE alembic_version SET version_num = '0.12.0'")
    con.commit()
    con.close()
    before = state(store)
    with pytest.raises(ImportValidationError, match=r"schema version 0\.12\.0 .*known: 0\.98\.0"):
        store.import_zenml(src)
    assert state(store) == before


@pytest.mark.parametrize(
    "victim",
    [
        "summarize/count/a2108f39*/*/data.json",
        "make_features/features/07b*/*/data.npy",
        "make_frame/frame/*/*/df.parquet.gzip",
        "make_point/point/*/*/artifact.pkl",
    ],
)
def test_a_truncated_artifact_file_is_named_and_nothing_is_written(
    store: Store, tmp_path: Path, victim: str
) -> None:
    src = copy_fixture(tmp_path)
    [path] = (src / STORE_DIR.relative_to(FIXTURE)).glob(victim)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    before = state(store)
    with pytest.raises(ImportValidationError, match=re.escape(str(path.relative_to(tmp_path)))):
        store.import_zenml(src)
    assert state(store) == before


def test_a_missing_artifact_directory_and_a_damaged_database(store: Store, tmp_path: Path) -> None:
    src = copy_fixture(tmp_path)
    shutil.rmtree(src / STORE_DIR.relative_to(FIXTURE) / "make_frame")
    before = state(store)
    with pytest.raises(ImportValidationError, match=r"files of ZenML artifact frame:1 .* missing"):
        store.import_zenml(src)
    db = src / DB_PATH
    raw = bytearray(db.read_bytes())
    raw[len(raw) // 2 : len(raw) // 2 + 4096] = b"\xff" * 4096
    db.write_bytes(bytes(raw))
    with pytest.raises(ImportValidationError, match=r"zenml\.db: .*not a readable ZenML database"):
        store.import_zenml(src)
    db.write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(ImportValidationError, match=r"zenml\.db"):
        store.import_zenml(src)
    assert state(store) == before


def test_the_database_path_and_an_artifact_store_elsewhere(store: Store, tmp_path: Path) -> None:
    moved = tmp_path / "artifacts"
    shutil.copytree(STORE_DIR, moved)
    db = tmp_path / "zenml.db"
    shutil.copy(FIXTURE / DB_PATH, db)
    report = store.import_zenml(db, artifact_store=moved)
    assert report.artifacts == 17
    np.testing.assert_array_equal(store.load_artifact("golden_ref", "golden"), [1, 2, 3])


def test_an_imported_store_exports_and_imports(imported: Store, tmp_path: Path) -> None:
    imported.export(tmp_path / "s.alx")
    with Store.open(tmp_path / "copy") as copy:
        Store.import_(tmp_path / "s.alx", into=copy)
        assert copy.stats()["artifacts"] == 17
        assert copy.get_run(artledger_id("run", "f116bfd68c50450a8e526f2b549adc37")).metadata[
            "zenml"
        ]["tags"] == ["numbers"]


def test_cli_import_zenml(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = str(tmp_path / "store")
    assert main(["--store", store, "import-zenml", str(FIXTURE), "--dry-run"]) == 0
    assert "would import from ZenML (schema 0.98.0): 5 runs" in capsys.readouterr().out
    assert not (tmp_path / "store").exists()
    assert main(["--store", store, "import-zenml", str(FIXTURE), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["artifacts"] == 17
    assert main(["--store", store, "import-zenml", str(FIXTURE)]) == 0
    assert "already here, skipped: 5 runs, 17 artifact versions" in capsys.readouterr().out
    assert main(["--store", store, "import-zenml", str(tmp_path / "nothing")]) == 1
    assert "no such ZenML config directory or database" in capsys.readouterr().err


@step
def make_features(n: int) -> np.ndarray:
    return np.arange(n, dtype=np.float64).reshape(-1, 4) * 1.5


@pipeline
def numbers(n: int = 400) -> None:
    make_features(n)


def test_a_ported_pipeline_computes_once_then_caches(imported: Store) -> None:
    first = next(iter(imported.run(numbers).steps.values()))
    assert first.status == "completed"  # ZenML's cache keys do not carry over
    assert imported.explain(first) == ["no earlier run"]
    np.testing.assert_array_equal(first.output.load(), imported.load_artifact("features", 1))
    second = next(iter(imported.run(numbers).steps.values()))
    assert second.status == "cached" and second.source == first.id
