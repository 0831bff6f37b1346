"""``Store.recover`` / ``artledger recover``: a lost or damaged ledger rebuilt
from what still reads, the pack files and an export.

Every test damages a store through a back door (deleting, truncating or
overwriting bytes of ``ledger/data.mdb``), recovers it, and checks what loads
afterwards -- byte-exact, against values regenerated here -- and that every
live artifact version that does not load is listed in the report as missing.
"""

from __future__ import annotations

import fractions
import hashlib
import os
import subprocess
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import engine
from engine import ArtledgerError, LedgerMissingError, Store, StoreError
from engine.cli.main import main
from engine.ops.recover import RecoverReport
from engine.storage.lmdb_pages import leaf_records

CHUNK = 64 << 10


def array(i: int) -> np.ndarray:
    return np.random.default_rng(100 + i).random(20_000 + 1000 * i)  # 3-4 raw chunks


@engine.step
def make(n: int = 3000) -> np.ndarray:
    return np.arange(n, dtype=np.float64)


@engine.step
def scale(x: np.ndarray, k: float = 2.0) -> np.ndarray:
    return x * k


@engine.pipeline
def flow(n: int = 3000, k: float = 2.0) -> None:
    scale(make(n=n), k=k)


@dataclass
class Built:
    root: Path
    export: Path
    values: dict[str, Any] = field(default_factory=dict)  # "name:version" -> value
    in_export: set[str] = field(default_factory=set)
    head: int = 0


def _save(s: Store, built: Built, value: Any, name: str, **kw: Any) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the cloudpickle fallback warns
        art = s.save_artifact(value, name, **kw)
    built.values[f"{art.name}:{art.version}"] = value


def build(tmp_path: Path) -> Built:
    """A store: arrays in two pack segments, small inline values, a pickle, an
    artifact whose event spills onto an LMDB overflow page, tags, a pipeline
    run; an export of the first part; more saves after the export."""
    root = tmp_path / "s"
    built = Built(root, tmp_path / "store.export")
    with Store.open(root, chunk_size=CHUNK) as s:
        for i in range(4):
            _save(s, built, array(i), "arr")
            _save(s, built, {"i": i, "lr": 0.1 * i}, "cfg", tags=["t"] if i % 2 else ())
        _save(s, built, fractions.Fraction(22, 7), "pick")
        _save(s, built, "big metadata", "note", metadata={"text": "m" * 9000})
        run = s.run(flow, k=3.0)
        for step in run.steps.values():
            out = step.output
            built.values[f"{out.name}:{out.version}"] = out.load()
    with Store.open(root, chunk_size=CHUNK) as s:  # a second writer: a second segment
        for i in range(4, 8):
            _save(s, built, array(i), "arr")
            _save(s, built, {"i": i}, "cfg")
        s.export(built.export)
        built.in_export = set(built.values)
        for i in range(8, 10):
            _save(s, built, array(i), "late")
            _save(s, built, {"late": i}, "late_cfg")
        built.head = s.head
    return built


@pytest.fixture
def built(tmp_path: Path) -> Built:
    return build(tmp_path)


def data_file(root: Path) -> Path:
    return root / "ledger" / "data.mdb"


def packs_digest(root: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted((root / "packs").glob("*.pack"))
    }


def equal(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (
            isinstance(a, np.ndarray)
            and isinstance(b, np.ndarray)
            and a.dtype == b.dtype
            and a.tobytes() == b.tobytes()
        )
    return bool(a == b)


def check_recovered(built: Built, report: RecoverReport) -> set[str]:
    """Every live version in the recovered store loads byte-exact or is
    listed as missing (never wrong data); the labels that load."""
    loaded: set[str] = set()
    with Store.open(built.root) as s:
        for art in s.list_artifacts():
            label = f"{art.name}:{art.version}"
            assert label in built.values, label
            if label in report.missing:
                with pytest.raises(ArtledgerError):
                    art.load()
                continue
            assert equal(art.load(), built.values[label]), label
            loaded.add(label)
        assert set(report.missing) <= {f"{a.name}:{a.version}" for a in s.list_artifacts()}
        assert s.verify().ok, s.verify().problems
    assert report.problems == []
    assert report.moved_to is None or report.moved_to.exists()
    return loaded


# -- a deleted ledger ----------------------------------------------------------------------


def test_recover_a_deleted_ledger_from_an_export(built: Built) -> None:
    data_file(built.root).unlink()
    with pytest.raises(LedgerMissingError):
        Store.open(built.root)
    segments = packs_digest(built.root)
    report = Store.recover(built.root, from_export=built.export)
    assert report.events_imported > 0 and report.missing == []
    loaded = check_recovered(built, report)
    assert loaded == built.in_export  # what the export held, byte-exact; later saves are gone
    # The export's chunks were found in the packs (re-indexed): no byte written twice.
    assert packs_digest(built.root) == segments
    # The later saves' chunks are still indexed, unreferenced: gc would reclaim them.
    assert report.unreferenced_chunks > 0
    assert any("gc" in n for n in report.notes)
    assert report.moved_to is not None and report.moved_to.name.startswith("ledger.damaged-")
    with Store.open(built.root) as s:
        run = s.list_runs()[0]
        out = run.steps["scale"].output
        graph = s.lineage(out)
        assert {n["name"] for n in graph.nodes.values()} >= {"make", "scale"}
        assert s.load_artifact("pick") == fractions.Fraction(22, 7)  # trust survives


def test_recover_a_deleted_ledger_without_an_export(built: Built) -> None:
    data_file(built.root).unlink()
    segments = packs_digest(built.root)
    report = Store.recover(built.root)
    assert report.events_salvaged == 0 and report.chunks_reindexed > 0
    assert any("--from" in n for n in report.notes)
    with Store.open(built.root, chunk_size=CHUNK) as s:
        assert s.list_artifacts() == []
        # An export found later imports without writing the packed bytes again.
        Store.import_(built.export, into=s, trust_pickles=True)
        for art in s.list_artifacts():
            assert equal(art.load(), built.values[f"{art.name}:{art.version}"])
    assert packs_digest(built.root) == segments


def test_recover_without_the_identity_keeps_every_pack(built: Built) -> None:
    """No identity file and no readable ledger: the seed is unknown, so no chunk
    can be re-indexed, but no pack loses a byte, now or on the next open."""
    data_file(built.root).unlink()
    (built.root / "identity").unlink()
    segments = packs_digest(built.root)
    report = Store.recover(built.root)
    assert report.chunks_reindexed == 0
    assert any("seed is unknown" in n for n in report.notes)
    with Store.open(built.root) as s:
        assert s.verify().ok
    assert packs_digest(built.root) == segments


# -- a truncated ledger --------------------------------------------------------------------


@pytest.mark.parametrize("keep", [0.35, 0.6, 0.9, -4096])
def test_recover_a_truncated_ledger(built: Built, keep: float) -> None:
    data = data_file(built.root)
    size = data.stat().st_size
    cut = size + int(keep) if keep < 0 else int(size * keep)
    os.truncate(data, cut)
    report = Store.recover(built.root)
    assert report.stopped_at is None or report.stop_reason
    loaded = check_recovered(built, report)
    # The events salvaged are a prefix of the log, so what loads is a prefix too.
    assert report.events_salvaged <= built.head
    if keep == -4096 or keep == 0.9:
        assert report.events_salvaged > built.head // 2, report
        assert loaded, report


# -- garbage and flipped bytes ---------------------------------------------------------------


def _event_locations(data: Path, store_root: Path, seq: int) -> list[int]:
    """Offsets in the data file of every copy of event ``seq``'s stored bytes."""
    with Store.open(store_root) as s:
        txn = s.ledger.kv.read()
        try:
            raw = txn.get("events", seq.to_bytes(8, "big"))
        finally:
            s.ledger.kv.end_read(txn)
    assert raw is not None
    blob = data.read_bytes()
    out, i = [], blob.find(raw)
    while i >= 0:
        out.append(i)
        i = blob.find(raw, i + 1)
    assert out
    return out


def test_recover_after_flipped_bytes_in_an_event(built: Built) -> None:
    with Store.open(built.root) as s:
        victim = s.get_artifact("arr", 6)
    data = data_file(built.root)
    locations = _event_locations(data, built.root, victim.seq)
    with open(data, "r+b") as f:
        for at in locations:  # every copy: stale pages hold the same event
            f.seek(at + 40)
            b = f.read(1)
            f.seek(at + 40)
            f.write(bytes([b[0] ^ 0x01]))
    report = Store.recover(built.root)
    assert report.stopped_at == victim.seq, report
    assert report.events_salvaged == victim.seq - 1
    assert str(victim.seq) in (report.stop_reason or "")
    loaded = check_recovered(built, report)
    assert "arr:5" in loaded and "arr:6" not in loaded and "late:1" not in loaded


def test_recover_after_a_garbage_page(built: Built) -> None:
    """Every page holding a copy of an event overwritten with random bytes: the
    salvage stops at (or before) that event, never before the first event such
    a page held, and every version folded from what is kept loads."""
    with Store.open(built.root) as s:
        victim = s.get_artifact("arr", 8)
        early = [a for a in s.list_artifacts() if a.seq < victim.seq]
    data = data_file(built.root)
    pages = sorted({at // 4096 for at in _event_locations(data, built.root, victim.seq)})
    blob = data.read_bytes()
    on_pages = sorted(
        int.from_bytes(k, "big")
        for k, v in leaf_records(data, 4096)
        if len(k) == 8
        and v[:1] == b"\x85"
        and any(v in blob[p * 4096 : p * 4096 + 4096] for p in pages)
    )
    assert victim.seq in on_pages
    rng = np.random.default_rng(1)
    with open(data, "r+b") as f:
        for page in pages:
            f.seek(page * 4096)
            f.write(rng.bytes(4096))
    report = Store.recover(built.root)
    loaded = check_recovered(built, report)
    assert report.stopped_at is not None and on_pages[0] <= report.stopped_at <= victim.seq
    assert report.events_salvaged == report.stopped_at - 1
    assert {f"{a.name}:{a.version}" for a in early if a.seq < on_pages[0]} <= loaded


def test_recover_a_sound_ledger_changes_nothing(built: Built) -> None:
    with Store.open(built.root) as s:
        before = [(a.id, a.name, a.version, a.content_hash) for a in s.list_artifacts()]
        head = s.head
    report = Store.recover(built.root)
    assert report.ok, report
    assert report.events_salvaged == head and report.stopped_at is None
    with Store.open(built.root) as s:
        assert [(a.id, a.name, a.version, a.content_hash) for a in s.list_artifacts()] == before
    check_recovered(built, report)


# -- refusals --------------------------------------------------------------------------------


HOLD = """
import sys, time
from engine import Store
s = Store.open(sys.argv[1])
s.list_artifacts()
print("ready", flush=True)
time.sleep(60)
"""


def test_recover_refuses_a_store_in_use(built: Built) -> None:
    with Store.open(built.root), pytest.raises(StoreError, match="open in this process"):
        Store.recover(built.root)
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(built.root)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    try:
        assert proc.stdout.readline().strip() == "ready"
        with pytest.raises(StoreError, match="open in another process"):
            Store.recover(built.root)
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
    assert Store.recover(built.root).ok


# -- the command -----------------------------------------------------------------------------


def test_cli_recover(built: Built, capsys: pytest.CaptureFixture[str]) -> None:
    data_file(built.root).unlink()
    assert main(["--store", str(built.root), "verify"]) == 1
    assert "artledger recover" in capsys.readouterr().err
    code = main(["--store", str(built.root), "recover", "--from", str(built.export)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "imported" in out and "moved to" in out and "ok" in out
    os.truncate(data_file(built.root), 3 * 4096)
    code = main(["--store", str(built.root), "recover", "--json"])
    out = capsys.readouterr().out
    assert code == 1, out
    assert '"stopped_at": 1' in out and "truncated" in out
    assert main(["--store", str(built.root), "verify"]) == 0
