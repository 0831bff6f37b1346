"""The shared-store commit protocol, in memory: several replicas (each its own
ledger KV) over one shared-log KV and one blob store. The same protocol runs
over PostgreSQL and S3 in tests/test_shared_store.py."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import numpy as np
import pytest

from engine import Store
from engine.errors import IntegrityError, SharedStoreUnavailableError
from engine.ledger.layout import Identity
from engine.ledger.replica import SharedIdentity, join
from engine.ledger.secret import fingerprint
from engine.ledger.shared import SHARED_DATABASES, SharedLedger
from engine.projections import STORE_DATABASES
from engine.storage.blobs import MemoryBlobStore
from engine.storage.kv import KV, MemoryKV, Txn
from engine.storage.log import EventLog, pack, seq_key, unpack

T = TypeVar("T")


class Cluster:
    """One shared log and one blob store; ``machine()`` opens a new replica."""

    def __init__(self) -> None:
        self.remote = MemoryKV(SHARED_DATABASES)
        self.blobs = MemoryBlobStore()
        self.ident: SharedIdentity = join(self.remote, chunk_size=256 << 10, level=3)
        self.down = False
        self.stores: list[Store] = []

    def connect(self) -> KV:
        if self.down:
            raise SharedStoreUnavailableError("the shared log at memory:// is down")
        return _Unclosed(self.remote, self)

    def machine(self) -> Store:
        i = self.ident
        led = SharedLedger(
            MemoryKV(STORE_DATABASES),
            _Unclosable(self.blobs),
            path=None,
            secret=i.secret,
            chunk_size=i.chunk_size,
            level=i.level,
            workers=2,
            identity=Identity(i.store_id, i.seed, fingerprint(i.secret)),
            connect=self.connect,
            where="the shared log at memory://test",
        )
        led.sync()
        store = Store(led)
        self.stores.append(store)
        return store


class _Unclosed(KV):
    """The cluster's shared KV as one replica sees it: closing it closes nothing,
    and while the cluster is down every call fails as a dead server would."""

    def __init__(self, kv: MemoryKV, cluster: Cluster) -> None:
        self.kv = kv
        self.cluster = cluster

    def _check(self) -> None:
        if self.cluster.down:
            raise SharedStoreUnavailableError("the shared log at memory:// is down")

    def databases(self) -> tuple[str, ...]:
        return self.kv.databases()

    def read(self) -> Txn:
        self._check()
        return self.kv.read()

    def end_read(self, txn: Txn) -> None:
        self.kv.end_read(txn)

    def write(self, fn: Callable[[Txn], T]) -> T:
        self._check()
        return self.kv.write(fn)


class _Unclosable(MemoryBlobStore):
    def __init__(self, inner: MemoryBlobStore) -> None:
        self.__dict__ = inner.__dict__


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    c = Cluster()
    yield c
    c.down = False
    for s in c.stores:
        s.close()


def test_versions_are_gapless_across_replicas(cluster: Cluster) -> None:
    a, b = cluster.machine(), cluster.machine()
    a.save_artifact(1, "x")
    b.save_artifact(2, "x")  # b catches up under the lock: version 2, not 1
    a.save_artifact(3, "x")
    assert [v.version for v in a.list_artifacts("x")] == [1, 2, 3]
    b.sync()
    assert [v.version for v in b.list_artifacts("x")] == [1, 2, 3]
    assert b.load_artifact("x", version=3) == 3
    assert a.verify().ok and b.verify().ok


def test_every_replica_holds_the_same_chain(cluster: Cluster) -> None:
    a, b = cluster.machine(), cluster.machine()
    for i in range(5):
        (a if i % 2 else b).save_artifact(np.arange(i * 1000), f"n{i}")
    a.sync(), b.sync()
    with cluster.remote.snapshot() as rt:
        shared = list(rt.scan("events"))
    for s in (a, b):
        with s.ledger.snapshot() as lt:
            assert list(lt.scan("events")) == shared
    c = cluster.machine()  # a new replica is filled from the shared log
    np.testing.assert_array_equal(c.load_artifact("n4"), np.arange(4000))


def test_concurrent_writers_on_replicas(cluster: Cluster) -> None:
    stores = [cluster.machine() for _ in range(3)]

    def work(s: Store, k: int) -> None:
        for i in range(20):
            s.save_artifact({"writer": k, "i": i}, "shared")

    threads = [threading.Thread(target=work, args=(s, k)) for k, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in stores:
        s.sync()
        assert [v.version for v in s.list_artifacts("shared")] == list(range(1, 61))
        assert s.verify().ok


def test_a_pipeline_is_cached_across_machines(cluster: Cluster) -> None:
    from engine import pipeline, step

    calls: list[int] = []

    @step
    def double(x: int) -> int:
        calls.append(x)
        return 2 * x

    @pipeline
    def p(x: int) -> int:
        return double(x)

    a, b = cluster.machine(), cluster.machine()
    a.run(p, x=4)
    run = b.run(p, x=4)
    assert calls == [4]
    assert [s.status for s in run.steps.values()] == ["cached"]


def test_offline_writes_fail_and_change_nothing(cluster: Cluster) -> None:
    a = cluster.machine()
    a.save_artifact(1, "x")
    cluster.down = True
    with pytest.raises(SharedStoreUnavailableError):
        a.save_artifact(2, "x")
    assert a.load_artifact("x") == 1  # reads still work
    assert "down" in (a.ledger.sync_problem or "")
    cluster.down = False
    a.save_artifact(3, "x")
    assert [v.version for v in a.list_artifacts("x")] == [1, 2]


def test_a_replica_that_diverged_is_refused(cluster: Cluster) -> None:
    a, b = cluster.machine(), cluster.machine()
    a.save_artifact(1, "x")
    b.sync()
    # An event only this replica has (as if it had been written around the protocol).
    b.ledger.kv.write(lambda t: EventLog().append(t, [("test.local", {})]))
    a.save_artifact(2, "x")
    a.save_artifact(3, "x")
    with pytest.raises(IntegrityError, match="does not chain onto event 3"):
        b.sync()
    with pytest.raises(IntegrityError):
        b.save_artifact(4, "x")  # nothing is published from a diverged replica
    assert [v.version for v in a.list_artifacts("x")] == [1, 2, 3]


def test_verify_names_a_tampered_replica_event(cluster: Cluster) -> None:
    a = cluster.machine()
    a.save_artifact(1, "x")
    a.save_artifact(2, "y")

    def forge(txn: Txn) -> None:
        env = unpack(txn.get("events", seq_key(2)) or b"")
        env["data"]["name"] = "forged"
        txn.put("events", seq_key(2), pack(env))

    a.ledger.kv.write(forge)
    assert any(p.startswith("event 3: hash chain broken") for p in a.verify().problems)


def test_gc_tombstones_reach_every_replica(cluster: Cluster) -> None:
    a, b = cluster.machine(), cluster.machine()
    big = np.random.default_rng(1).random(100_000)
    art = a.save_artifact(big, "big")
    b.sync()
    a.delete_artifact(art)
    report = a.gc()
    assert report.chunks_reclaimed > 0 and report.objects_deleted > 0
    # b still lists the chunk until it catches up; its next write does, and a
    # save of the same bytes uploads them again instead of deduplicating.
    again = b.save_artifact(big, "big2")
    a.sync()
    np.testing.assert_array_equal(a.load_artifact(again.name), big)
    assert a.verify().ok and b.verify().ok


def test_verify_names_a_tampered_shared_event(cluster: Cluster) -> None:
    a = cluster.machine()
    for i in range(3):
        a.save_artifact(i, "x")

    def forge(txn: Txn) -> None:
        env = unpack(txn.get("events", seq_key(3)) or b"")
        env["data"]["name"] = "forged"
        txn.put("events", seq_key(3), pack(env))

    cluster.remote.write(forge)
    problems = a.verify().problems
    assert any("memory://test: event 4: hash chain broken" in p for p in problems), problems
    assert any("replica event 3 differs" in p for p in problems), problems


def test_the_dashboard_follows_a_shared_store(cluster: Cluster) -> None:
    import json
    import socket
    import time
    import urllib.request

    pytest.importorskip("uvicorn")
    import uvicorn

    from engine.ui.app import Dashboard, create_app

    a, b = cluster.machine(), cluster.machine()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(b), host="127.0.0.1", port=port, log_level="error")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()

    def names() -> list[str]:
        url = f"http://127.0.0.1:{port}/api/artifacts"
        with urllib.request.urlopen(url, timeout=10) as r:
            return [i["name"] for i in json.loads(r.read())["artifacts"]]

    try:
        while not server.started:
            time.sleep(0.01)
        assert names() == []
        a.save_artifact(1, "from-a")
        Dashboard.SYNC_EVERY = 0.0
        assert names() == ["from-a"]
        cluster.down = True  # the log server is gone: the replica is served as it is
        assert names() == ["from-a"]
    finally:
        Dashboard.SYNC_EVERY = 2.0
        server.should_exit = True
        thread.join(10)


# -- opening: which URLs a replica uses ----------------------------------------------------


def test_resolve_urls_from_arguments_environment_and_the_replica(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from engine.errors import InvalidArgumentError
    from engine.ledger.replica import SHARED_CONFIG, SharedUrls, redact, resolve_urls

    monkeypatch.delenv("ARTLEDGER_LOG", raising=False)
    monkeypatch.delenv("ARTLEDGER_CHUNKS", raising=False)
    embedded = tmp_path / "e"
    Store.open(embedded).close()
    root = tmp_path / "r"
    assert resolve_urls(root, None, None) is None  # embedded
    log, chunks = "postgresql://ml:secret@db:5432/a", "s3://b/p"
    assert resolve_urls(root, log, chunks) == SharedUrls(log, chunks)
    with pytest.raises(InvalidArgumentError, match="chunk store"):
        resolve_urls(root, log, None)
    monkeypatch.setenv("ARTLEDGER_LOG", log)
    monkeypatch.setenv("ARTLEDGER_CHUNKS", chunks)
    assert resolve_urls(root, None, None) == SharedUrls(log, chunks)
    assert redact(log) == "postgresql://ml@db:5432/a"
    root.mkdir()
    (root / SHARED_CONFIG).write_text(json.dumps({"log": redact(log), "chunks": chunks}))
    monkeypatch.delenv("ARTLEDGER_LOG")
    assert resolve_urls(root, None, None) == SharedUrls(redact(log), chunks)
    assert resolve_urls(root, log, None) == SharedUrls(log, chunks)  # the password is given
    with pytest.raises(InvalidArgumentError, match="belongs to the shared log"):
        resolve_urls(root, "postgresql://ml@other/a", None)
    assert resolve_urls(embedded, None, None) is None  # $ARTLEDGER_CHUNKS does not apply
    with pytest.raises(InvalidArgumentError, match="embedded store"):
        resolve_urls(embedded, log, chunks)
