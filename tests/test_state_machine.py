"""A Hypothesis state machine: the store against a plain-dict model.

Rules save (builtins and small numpy arrays, with or without an explicit
version, with tags), run a pipeline, tag, untag, delete, gc, reopen (LMDB),
rebuild, compare ``as_of(head)``, compare a view at a random point (read
from the temporal index) with a fresh fold of the log up to it, and
round-trip through export/import; after every step the store must agree
with the model: latest versions, ``list_artifacts`` order and content
(also by name and by tag), tags, loaded values, runs, ``stats()`` counts.
``verify`` runs at random points. The fast configuration runs by default on
both backends; a long one is marked slow.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    multiple,
    rule,
)

from engine import ArtifactNotFoundError, InvalidArgumentError, Store, pipeline, step
from engine.projections.schema import LIVE_DBS
from engine.query.history import HistoricalView, folded
from engine.storage.log import pack

NAMES = st.sampled_from(["a", "b", "model/weights", "ünï"])
TAGS = st.lists(st.sampled_from(["best", "prod", "x", "y"]), max_size=3)
LABELS = st.one_of(st.none(), st.sampled_from(["gold", "rc-1"]), st.integers(1, 8))

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.binary(max_size=40),
)
builtins_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.tuples(inner, inner),
        st.dictionaries(st.one_of(st.text(max_size=5), st.integers(0, 9)), inner, max_size=4),
    ),
    max_leaves=12,
)
arrays = st.sampled_from([np.float64, np.int32, np.uint8]).flatmap(
    lambda dt: hnp.arrays(
        dt,
        hnp.array_shapes(min_dims=0, max_dims=2, max_side=40),
        elements=hnp.from_dtype(np.dtype(dt), allow_nan=False),
    )
)
VALUES = st.one_of(builtins_values, arrays)


@step
def sm_make(x: int) -> list[int]:
    return [x, x * x]


@pipeline(enable_cache=False)
def sm_pipe(x: int = 0) -> None:
    sm_make(x=x)


def same(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (
            isinstance(a, np.ndarray)
            and isinstance(b, np.ndarray)
            and a.dtype == b.dtype
            and a.shape == b.shape
            and bool(np.array_equal(a, b))
        )
    if type(a) is not type(b):
        return False
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


@dataclass
class Model:
    """What the store must hold: one entry per artifact version ever saved."""

    arts: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> record
    order: list[str] = field(default_factory=list)  # creation order
    next: dict[str, int] = field(default_factory=dict)  # name -> next integer version

    def live(self, name: str | None = None) -> list[str]:
        return [
            i
            for i in self.order
            if not self.arts[i]["deleted"] and (name is None or self.arts[i]["name"] == name)
        ]

    def taken(self, name: str, version: Any) -> bool:
        return any(a["name"] == name and a["version"] == version for a in self.arts.values())


class StoreMachine(RuleBasedStateMachine):
    """Drives one store and the model with the same operations."""

    backend = "lmdb"
    ids = Bundle("ids")

    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="artledger-sm-"))
        self.store = self._open()
        self.model = Model()
        self.runs: list[str] = []

    def _open(self) -> Store:
        if self.backend == "memory":
            return Store.memory(chunk_size=64 << 10)
        return Store.open(self.tmp / "s", chunk_size=64 << 10, map_size=256 << 10)

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    # -- rules -----------------------------------------------------------------
    @initialize(target=ids, name=NAMES, value=VALUES, tags=TAGS)
    def first(self, name: str, value: Any, tags: list[str]) -> Any:
        return self.save(name, value, None, tags)

    @rule(target=ids, name=NAMES, value=arrays, version=LABELS, tags=TAGS)
    def save_array(self, name: str, value: Any, version: Any, tags: list[str]) -> Any:
        return self.save(name, value, version, tags)

    @rule(target=ids, name=NAMES, value=builtins_values, version=LABELS, tags=TAGS)
    def save(self, name: str, value: Any, version: Any, tags: list[str]) -> Any:
        m = self.model
        nxt = m.next.get(name, 1)
        if version is not None and m.taken(name, version):
            with pytest.raises(InvalidArgumentError, match="already has version"):
                self.store.save_artifact(value, name, version=version, tags=tags)
            return multiple()
        art = self.store.save_artifact(value, name, version=version, tags=tags)
        expect = nxt if version is None else version
        assert art.version == expect
        if isinstance(expect, int):
            m.next[name] = max(nxt, expect + 1)
        m.arts[art.id] = {
            "name": name,
            "version": expect,
            "value": value,
            "tags": set(tags),
            "deleted": False,
        }
        m.order.append(art.id)
        return art.id

    @rule(target=ids, x=st.integers(0, 9))
    def run(self, x: int) -> Any:
        run = self.store.run(sm_pipe, x=x)
        assert run.status == "completed"
        self.runs.append(run.id)
        out = run.steps["sm_make"].output
        name = "sm_pipe.sm_make.output"
        m = self.model
        nxt = m.next.get(name, 1)
        assert (out.name, out.version) == (name, nxt)
        m.next[name] = nxt + 1
        m.arts[out.id] = {
            "name": name,
            "version": nxt,
            "value": [x, x * x],
            "tags": set(),
            "deleted": False,
        }
        m.order.append(out.id)
        return out.id

    @rule(aid=ids, tags=TAGS)
    def tag(self, aid: str, tags: list[str]) -> None:
        a = self.model.arts[aid]
        if a["deleted"]:
            with pytest.raises(ArtifactNotFoundError, match="was deleted"):
                self.store.tag(aid, *tags)
            return
        got = self.store.tag(aid, *tags)
        a["tags"] |= set(tags)
        assert got.tags == sorted(a["tags"])

    @rule(aid=ids, tags=TAGS)
    def untag(self, aid: str, tags: list[str]) -> None:
        a = self.model.arts[aid]
        if a["deleted"]:
            with pytest.raises(ArtifactNotFoundError):
                self.store.untag(aid, *tags)
            return
        got = self.store.untag(aid, *tags)
        a["tags"] -= set(tags)
        assert got.tags == sorted(a["tags"])

    @rule(aid=ids)
    def delete(self, aid: str) -> None:
        a = self.model.arts[aid]
        if a["deleted"]:
            with pytest.raises(ArtifactNotFoundError, match="was deleted"):
                self.store.delete_artifact(aid)
            return
        self.store.delete_artifact(aid)
        a["deleted"] = True

    @rule(aid=consumes(ids))
    def delete_for_good(self, aid: str) -> None:
        """Delete and forget the id (the bundle stays small)."""
        if not self.model.arts[aid]["deleted"]:
            self.delete(aid)

    @rule(op=st.sampled_from(["gc", "reopen", "rebuild", "as_of", "verify", "import"]))
    def maintenance(self, op: str) -> None:
        getattr(self, f"_{op}")()

    def _gc(self) -> None:
        before = self.store.stats()
        report = self.store.gc()
        after = self.store.stats()
        assert after["chunks"] == before["chunks"] - report.chunks_reclaimed
        assert self.store.gc(dry_run=True).chunks_reclaimed == 0

    def _reopen(self) -> None:
        if self.backend == "lmdb":
            self.store.close()
            self.store = self._open()

    def _rebuild(self) -> None:
        self.store.rebuild()

    def _as_of(self) -> None:
        view = self.store.as_of(self.store.head)
        # Compared as stored bytes: metadata of arrays with infinities holds NaN.
        assert [pack(a.record()) for a in view.list_artifacts(include_deleted=True)] == [
            pack(a.record()) for a in self.store.list_artifacts(include_deleted=True)
        ]
        assert view.stats() == self.store.stats()

    @rule(where=st.floats(0, 1))
    def as_of_past(self, where: float) -> None:
        """A view at a random point reads the temporal index, and every projection
        it shows equals a fresh fold of the log up to that point."""
        seq = round(self.store.head * where)
        view = self.store.as_of(seq)
        assert view.indexed
        fresh = folded(self.store, seq)
        with view.kv.snapshot() as txn, fresh.snapshot() as ftxn:
            for db in LIVE_DBS:
                assert list(txn.scan(db)) == list(ftxn.scan(db)), db
                assert list(txn.scan(db, reverse=True)) == list(ftxn.scan(db, reverse=True)), db
                for key, value in ftxn.scan(db):
                    assert txn.get(db, key) == value
        assert [pack(a.record()) for a in view.list_artifacts(include_deleted=True)] == [
            pack(a.record())
            for a in HistoricalView(self.store, seq, fresh).list_artifacts(include_deleted=True)
        ]
        assert view.stats() == HistoricalView(self.store, seq, fresh).stats()

    def _import(self) -> None:
        """Export, import into a fresh store: the same live versions, tags and values."""
        path = self.tmp / "round-trip.export"
        self.store.export(path)
        with Store.memory(chunk_size=64 << 10) as dest:
            Store.import_(path, into=dest)
            live = self.model.live()
            assert [a.id for a in dest.list_artifacts()] == live
            for aid in live:
                rec, got = self.model.arts[aid], dest.get_artifact_by_id(aid)
                assert (got.name, got.version, got.tags) == (
                    rec["name"],
                    rec["version"],
                    sorted(rec["tags"]),
                )
                assert same(got.load(), rec["value"])
            assert dest.verify().ok
        path.unlink()

    def _verify(self) -> None:
        report = self.store.verify()
        assert report.ok, report.problems

    # -- invariants ------------------------------------------------------------
    @invariant()
    def listing_matches(self) -> None:
        m = self.model
        live = m.live()
        arts = self.store.list_artifacts()
        assert [a.id for a in arts] == live
        for a in arts:
            rec = m.arts[a.id]
            assert (a.name, a.version, a.tags) == (rec["name"], rec["version"], sorted(rec["tags"]))
        every = self.store.list_artifacts(include_deleted=True)
        assert [a.id for a in every] == m.order
        assert self.store.stats()["artifacts"] == len(live)
        assert [r.id for r in self.store.list_runs()] == self.runs
        assert self.store.stats()["runs"] == len(self.runs)

    @invariant()
    def latest_and_by_name(self) -> None:
        m = self.model
        for name in {a["name"] for a in m.arts.values()}:
            live = m.live(name)
            assert [a.id for a in self.store.list_artifacts(name)] == live
            if live:
                assert self.store.get_artifact(name).id == live[-1]
            else:
                with pytest.raises(ArtifactNotFoundError, match="deleted"):
                    self.store.get_artifact(name)

    @invariant()
    def tags_match(self) -> None:
        m = self.model
        for t in ("best", "prod", "x", "y"):
            want = [i for i in m.live() if t in m.arts[i]["tags"]]
            assert [a.id for a in self.store.list_artifacts(tag=t)] == want

    @invariant()
    def loads_match(self) -> None:
        for aid in self.model.live():
            rec = self.model.arts[aid]
            got = self.store.get_artifact(rec["name"], rec["version"])
            assert got.id == aid
            assert same(got.load(), rec["value"])


FAST = settings(
    max_examples=25,
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
LONG = settings(
    max_examples=300,
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


class LmdbMachine(StoreMachine):
    backend = "lmdb"


class MemoryMachine(StoreMachine):
    backend = "memory"


@pytest.mark.parametrize("machine", [LmdbMachine, MemoryMachine], ids=["lmdb", "memory"])
def test_store_agrees_with_model(machine: type[StoreMachine]) -> None:
    machine.TestCase.settings = FAST
    machine.TestCase().runTest()


@pytest.mark.slow
@pytest.mark.parametrize("machine", [LmdbMachine, MemoryMachine], ids=["lmdb", "memory"])
def test_store_agrees_with_model_long(machine: type[StoreMachine]) -> None:
    machine.TestCase.settings = LONG
    machine.TestCase().runTest()
