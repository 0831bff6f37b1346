"""engine.query.pages: paged reads agree with the full list queries."""

from __future__ import annotations

import datetime as _dt
from typing import Any

import pytest

from engine import ArtifactNotFoundError, InvalidArgumentError, Store, pipeline, step
from engine.query import pages as q


@step
def make(i: int = 0) -> int:
    return i


@step
def double(x: int) -> int:
    return 2 * x


@pipeline
def pipe(i: int = 0):
    double(make(i=i))


@pytest.fixture
def store() -> Store:
    s = Store.memory()
    for i in range(7):
        s.run(pipe, i=i)
    s.save_artifact(b"abc", "blob", tags=["t"])
    s.save_artifact(b"abcd", "blob", tags=["t", "u"])
    s.save_artifact(1, "zeta")
    return s


def test_newest_runs_pages_through_every_run(store: Store) -> None:
    everything = [r.id for r in reversed(store.list_runs())]
    got: list[str] = []
    before = None
    while True:
        page = q.newest_runs(store, 3, before)
        if not page:
            break
        got += [r.id for r in page]
        before = page[-1].seq
    assert got == everything and q.run_count(store) == 7
    run = q.newest_runs(store, 1)[0]
    assert run.record() == store.get_run(run.id).record()
    assert q.step_status_counts(store, run) == {
        "completed": 2,
        "cached": 0,
        "failed": 0,
        "skipped": 0,
        "running": 0,
    }
    store.delete_run(run)
    assert q.newest_runs(store, 1)[0].id == everything[1]
    with pytest.raises(InvalidArgumentError):
        q.newest_runs(store, 0)


def test_artifact_names_filters_and_pages(store: Store) -> None:
    rows, nxt = q.artifact_names(store, limit=100)
    names = [a.name for a, _ in rows]
    assert names == sorted({a.name for a in store.list_artifacts()}) and nxt is None
    latest = {a.name: (a.version, n) for a, n in rows}
    assert latest["blob"] == (2, 2) and latest["pipe.make.output"] == (7, 7)
    first, nxt = q.artifact_names(store, limit=2)
    rest, _ = q.artifact_names(store, limit=100, after=nxt)
    assert [a.name for a, _ in first + rest] == names
    assert [a.name for a, _ in q.artifact_names(store, contains="doub")[0]] == [
        "pipe.double.output"
    ]
    tagged = q.artifact_names(store, tag="t")[0]
    assert [(a.name, a.version, n) for a, n in tagged] == [("blob", 2, 2)]
    store.delete_artifact(store.get_artifact("blob", 2))
    assert [(a.version, n) for a, n in q.artifact_names(store, contains="blob")[0]] == [(1, 2)]
    assert q.artifact_names(store, tag="u")[0] == []


def test_files_and_sizes(store: Store) -> None:
    art = store.get_artifact("blob", 2)
    assert q.file_sizes(art) == [(n, s) for n, s in q.file_sizes(art)]
    name = art.files[0]
    with q.open_file(store, art, name) as f:
        assert f.read()
    assert q.stored_size(store, art) > 0
    for bad in ("../" + name, "/" + name, name + "/..", "", "secret"):
        with pytest.raises(ArtifactNotFoundError):
            q.open_file(store, art, bad)


def test_run_events_and_newest_events(store: Store) -> None:
    run = store.list_runs()[2]
    events = q.run_events(store, run)
    assert events[0].type == "run.started" and events[-1].type == "run.completed"
    assert all(e.data.get("run", run.id) == run.id for e in events)
    newest = q.newest_events(store, 5)
    assert [e.seq for e in newest] == list(range(store.head, store.head - 5, -1))
    assert [e.seq for e in q.newest_events(store, 3, before=4)] == [3, 2, 1]


def test_as_of_views_and_times(store: Store) -> None:
    seq = store.list_runs()[3].seq - 1
    view = store.as_of(seq)
    assert [r.id for r in q.newest_runs(view, 10)] == [r.id for r in reversed(view.list_runs())]
    assert len(q.newest_runs(view, 10)) == 3
    far = _dt.datetime(2000, 1, 1, tzinfo=_dt.timezone.utc)
    assert q.seq_at_time(store, far) == 0
    assert q.seq_at_time(store, _dt.datetime.now(_dt.timezone.utc)) == store.head


def _dump(view: Any) -> dict[str, dict[bytes, bytes]]:
    with view.kv.snapshot() as txn:
        return {name: dict(txn.scan(name)) for name in view.kv.databases}


def test_advance_equals_a_fresh_fold(store: Store) -> None:
    head = store.head
    early = store.as_of(head // 3)
    for seq in (head // 3, head // 2, head):
        moved = q.advance(early, seq)
        assert _dump(moved) == _dump(store.as_of(seq))
        assert [r.id for r in moved.list_runs()] == [r.id for r in store.as_of(seq).list_runs()]
    before = _dump(early)
    q.advance(early, head)
    assert _dump(early) == before  # the base view is left as it was
    with pytest.raises(InvalidArgumentError):
        q.advance(store.as_of(head // 2), head // 3)


def test_version_counts_stop_at_the_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    s = Store.memory()
    for i in range(6):
        s.save_artifact(i, "many")
    monkeypatch.setattr(q, "COUNT_CAP", 4)
    [(art, n)] = q.artifact_names(s)[0]
    assert art.version == 6 and n == 5
