"""Memory: large binary values save without copies; imports hold ids, not events.

Peak memory is measured where it cannot be confused by other tests: the RSS
of a fresh subprocess (``ru_maxrss``) for saves, and the Python heap
(``tracemalloc``) for imports, whose one LMDB transaction legitimately holds
the pages it writes until it commits.
"""

from __future__ import annotations

import array
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from engine import Store
from engine.ledger.artifacts import commit_artifacts, prepare
from engine.projections.fold import next_version
from engine.storage.kv import Txn
from materializers import BaseMaterializer
from materializers.builtins import DATA_FILE, RAW_FILE, RAW_MIN, encode

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "value",
    [
        os.urandom(RAW_MIN),
        bytearray(os.urandom(RAW_MIN + 3)),
        memoryview(array.array("d", range(12))).cast("B").cast("d", [3, 4]),
        memoryview(os.urandom(100))[::3],
        memoryview(b""),
    ],
    ids=["bytes", "bytearray", "2-d view", "strided view", "empty view"],
)
def test_large_binary_values_are_stored_raw(store: Store, value: Any) -> None:
    art = store.save_artifact(value, "blob")
    assert art.files == [RAW_FILE]
    back = store.load_artifact("blob")
    assert type(back) is type(value)
    if isinstance(value, memoryview):
        assert (back.tobytes(), back.format, back.shape) == (
            value.tobytes(),
            value.format,
            value.shape if value.nbytes else (0,),
        )
    else:
        assert back == value
    assert art.size == memoryview(value).nbytes


def test_small_binary_values_keep_their_format(store: Store) -> None:
    art = store.save_artifact(b"x" * (RAW_MIN - 1), "small")
    assert art.files == [DATA_FILE]
    assert store.load_artifact("small") == b"x" * (RAW_MIN - 1)
    assert store.save_artifact([memoryview(b"ab"), 1], "mixed").load() == [b"ab", 1]


class _OldBytes(BaseMaterializer):
    """How the built-in materializer stored every bytes value before ``data.bin``."""

    SKIP_REGISTRATION = True

    def save(self, data: Any) -> None:
        with self.open(DATA_FILE, "wb") as f:
            f.write(encode(data))


@pytest.mark.parametrize("kind", [bytes, bytearray])
def test_large_binary_values_stored_the_old_way_still_load(store: Store, kind: type) -> None:
    value = kind(os.urandom(RAW_MIN * 2))
    p = prepare(store.ledger, value, "old", materializer=_OldBytes)
    p.data["materializer"] = "materializers.builtins:BuiltinsMaterializer"
    commit_artifacts(store.ledger, [p])
    art = store.get_artifact("old")
    assert art.files == [DATA_FILE]
    back = art.load()
    assert type(back) is kind and back == value


SAVE_PEAK = """
import os, resource, sys
from engine import Store
size = int(sys.argv[2])
value = os.urandom(size)
with Store.open(sys.argv[1]) as s:
    s.save_artifact(b"warm up", "warm")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    s.save_artifact(value, "big")
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert s.load_artifact("big") == value
print((after - before) * 1024)
"""


def test_saving_a_large_bytes_value_does_not_copy_it(tmp_path: Path) -> None:
    size = 256 << 20
    done = subprocess.run(
        [sys.executable, "-c", SAVE_PEAK, str(tmp_path / "s"), str(size)],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        check=True,
        timeout=240,
    )
    growth = int(done.stdout.strip())
    assert growth < 0.25 * size, f"saving {size} bytes grew the peak RSS by {growth} bytes"


# -- importing in bounded memory -----------------------------------------------------------


def _history(store: Store, steps: int) -> None:
    """``steps`` pipeline-shaped step runs (three events each), appended in large batches."""
    seed = store.save_artifact({"seed": True}, "seed").record()
    base = {k: v for k, v in seed.items() if k not in ("seq", "ts", "deleted", "id", "version")}
    run = "f" * 16
    records: list[tuple[str, dict[str, Any]]] = [
        ("run.started", {"id": run, "pipeline": "p", "params": {}, "enable_cache": None})
    ]
    for i in range(steps):
        sid, aid = f"{i:015x}a", f"{i:015x}b"
        step = {"id": sid, "run": run, "invocation": f"s{i}", "step": "s"}
        records.append(("step.started", {**step, "cache_key": f"{i:032x}", "components": None}))
        records.append(
            ("artifact.written", {**base, "id": aid, "name": f"p.s{i % 100}", "version": None})
        )
        records.append(("step.completed", {"id": sid, "run": run, "outputs": {"output": aid}}))
        if len(records) >= 6000 or i == steps - 1:
            batch = list(records)
            store.ledger.commit(lambda txn, batch=batch: _numbered(txn, batch))  # type: ignore[misc]
            records.clear()
    store.ledger.commit(lambda txn: [("run.completed", {"id": run})])


def _numbered(
    txn: Txn, records: list[tuple[str, dict[str, Any]]]
) -> list[tuple[str, dict[str, Any]]]:
    """``records`` with the next integer version of each artifact's name."""
    taken: dict[str, int] = {}
    out = []
    for etype, data in records:
        if etype == "artifact.written":
            name = data["name"]
            v = taken.get(name) or next_version(txn, name)
            taken[name] = v + 1
            data = {**data, "version": v}
        out.append((etype, data))
    return out


@pytest.mark.slow
def test_an_import_holds_ids_not_events(tmp_path: Path) -> None:
    steps = 10_000
    with Store.open(tmp_path / "src") as src:
        _history(src, steps)
        events = src.head - 1
        src.export(tmp_path / "h.alx")
    with Store.open(tmp_path / "dst") as dst:
        tracemalloc.start()
        try:
            report = Store.import_(tmp_path / "h.alx", into=dst)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert report.events == events
        assert len(dst.list_artifacts()) == steps + 1
    # Ids, names and offsets: a few hundred bytes per event at most, where holding
    # the events themselves costs several kilobytes each.
    assert peak < (8 << 20) + 300 * events, f"{peak} bytes of Python heap for {events} events"


def test_history_helper_makes_what_it_says(tmp_path: Path) -> None:
    with Store.open(tmp_path / "s") as s:
        _history(s, 50)
        assert s.head == 1 + 1 + 3 * 50 + 2
        assert len(s.list_artifacts()) == 51 and s.verify().ok
        assert s.get_run("f" * 16).status == "completed"
