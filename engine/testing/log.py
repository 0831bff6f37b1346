"""``LogContract``: what the event log (:mod:`engine.storage.log`) must do on
every KV backend.

Subclass it with a ``make_kv(tmp_path)`` returning a new, empty KV declaring
the engine's databases; the tests append and read events in that KV's
transactions and check the stored bytes through the back door (raw
``events``/``meta`` records).
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from engine.storage.kv import KV, Txn
from engine.storage.log import GENESIS, EventLog, chain, key_seq, pack, seq_key, unpack


class LogContract(ABC):
    """The event-log contract as pytest tests; subclass per KV backend."""

    @abstractmethod
    def make_kv(self, tmp_path: Path) -> KV:
        """A new, empty KV."""

    # -- helpers ---------------------------------------------------------------
    def open_log(self, tmp_path: Path, n: int = 0) -> tuple[KV, EventLog]:
        """A KV (closed after the test) holding a log of ``n`` events."""
        kv = self.make_kv(tmp_path)
        self.__dict__.setdefault("_opened", []).append(kv)
        log = EventLog()
        if n:
            records = [("test.event", {"i": i}) for i in range(1, n + 1)]
            kv.write(lambda t: log.append(t, records, ts=1_000))
        return kv, log

    def teardown_method(self, method: Any) -> None:
        for kv in reversed(self.__dict__.pop("_opened", [])):
            kv.close()

    @staticmethod
    def verify(kv: KV, log: EventLog) -> list[str]:
        with kv.snapshot() as txn:
            return log.verify(txn)

    # -- append ------------------------------------------------------------------
    def test_append_numbers_events_from_one(self, tmp_path: Path) -> None:
        kv, log = self.open_log(tmp_path)
        with kv.snapshot() as txn:
            assert log.head(txn) == 0
            assert log.head_hash(txn) == GENESIS
        first = kv.write(lambda t: log.append(t, [("a", {"x": 1}), ("b", {"x": 2})]))
        second = kv.write(lambda t: log.append(t, [("c", {})]))
        assert [(e.seq, e.type, e.data) for e in first + second] == [
            (1, "a", {"x": 1}),
            (2, "b", {"x": 2}),
            (3, "c", {}),
        ]
        assert kv.write(lambda t: log.append(t, [])) == []
        with kv.snapshot() as txn:
            assert log.head(txn) == 3
            assert [key_seq(k) for k, _ in txn.scan("events")] == [1, 2, 3]

    def test_the_head_hash_chains_the_stored_bytes(self, tmp_path: Path) -> None:
        kv, log = self.open_log(tmp_path, 5)
        with kv.snapshot() as txn:
            prev = GENESIS
            for seq, raw in log.read_raw(txn):
                env = unpack(raw)
                assert env["prev"] == prev, seq
                prev = chain(prev, raw)
            assert log.head_hash(txn) == prev
            assert txn.get("meta", b"head_seq") == seq_key(5)
        assert self.verify(kv, log) == []

    def test_timestamps_never_decrease(self, tmp_path: Path) -> None:
        kv, log = self.open_log(tmp_path)
        kv.write(lambda t: log.append(t, [("store.created", {})], ts=5_000))
        kv.write(lambda t: log.append(t, [("a", {})], ts=9_000))
        late = kv.write(lambda t: log.append(t, [("b", {})], ts=2_000))
        assert late[0].ts == 9_000, "an earlier clock is raised to the last event's ts"
        with kv.snapshot() as txn:
            assert [e.ts for e in log.read(txn)] == [5_000, 9_000, 9_000]
            assert log.seq_at(txn, 8_999)[0] == 1
            assert log.seq_at(txn, 9_000)[0] == 3
            assert log.seq_at(txn, 4_999)[0] == 0

    def test_a_failed_write_appends_nothing(self, tmp_path: Path) -> None:
        kv, log = self.open_log(tmp_path, 3)

        def fn(txn: Txn) -> None:
            log.append(txn, [("lost", {})])
            raise RuntimeError("abandon")

        with contextlib.suppress(RuntimeError):
            kv.write(fn)
        with kv.snapshot() as txn:
            assert log.head(txn) == 3
            assert [e.type for e in log.read(txn)] == ["test.event"] * 3
        assert self.verify(kv, log) == []

    def test_append_raw_rechains(self, tmp_path: Path) -> None:
        src, log = self.open_log(tmp_path / "src", 4)
        dst, _ = self.open_log(tmp_path / "dst", 1)
        with src.snapshot() as txn:
            envs = [unpack(raw) for _, raw in log.read_raw(txn)]
        out = dst.write(lambda t: log.append_raw(t, envs))
        assert [e.seq for e in out] == [2, 3, 4, 5]
        assert [e.data for e in out] == [{"i": i} for i in range(1, 5)]
        assert self.verify(dst, log) == []

    # -- read ---------------------------------------------------------------------
    def test_read_a_range(self, tmp_path: Path) -> None:
        kv, log = self.open_log(tmp_path, 10)
        with kv.snapshot() as txn:
            assert [e.seq for e in log.read(txn)] == list(range(1, 11))
            assert [e.seq for e in log.read(txn, 3, 6)] == [3, 4, 5]
            assert [e.seq for e in log.read(txn, 0, 2)] == [1]
            assert [e.seq for e in log.read(txn, 9)] == [9, 10]
            assert [e.seq for e in log.read(txn, 11)] == []
            assert [e.seq for e in log.read(txn, 5, 5)] == []
            assert [s for s, _ in log.read_raw(txn, 2, 4)] == [2, 3]
            assert [e.data["i"] for e in log.read(txn, 4, 5)] == [4]

    # -- tamper detection -----------------------------------------------------------
    def test_an_altered_event_breaks_the_chain(self, tmp_path: Path) -> None:
        kv, log = self.open_log(tmp_path, 5)

        def alter(txn: Txn) -> None:
            env = unpack(txn.get("events", seq_key(3)) or b"")
            env["data"] = {"i": 999}
            txn.put("events", seq_key(3), pack(env))

        kv.write(alter)
        problems = self.verify(kv, log)
        assert any(p.startswith("event 4: hash chain broken") for p in problems), problems

    def test_an_altered_last_event_misses_the_head_hash(self, tmp_path: Path) -> None:
        kv, log = self.open_log(tmp_path, 5)

        def alter(txn: Txn) -> None:
            env = unpack(txn.get("events", seq_key(5)) or b"")
            env["type"] = "forged"
            txn.put("events", seq_key(5), pack(env))

        kv.write(alter)
        problems = self.verify(kv, log)
        assert any("event 5" in p and "head hash" in p for p in problems), problems

    def test_a_removed_event_is_a_gap(self, tmp_path: Path) -> None:
        kv, log = self.open_log(tmp_path, 5)
        kv.write(lambda t: t.delete("events", seq_key(2)))
        problems = self.verify(kv, log)
        assert any("gap" in p and "expected seq 2" in p for p in problems), problems
        assert any(p.startswith("event 3: hash chain broken") for p in problems), problems

    def test_a_truncated_log_misses_its_head(self, tmp_path: Path) -> None:
        kv, log = self.open_log(tmp_path, 5)
        kv.write(lambda t: t.delete("events", seq_key(5)))
        problems = self.verify(kv, log)
        assert any("head says seq 5" in p and "ends at 4" in p for p in problems), problems

    def test_undecodable_bytes_are_reported(self, tmp_path: Path) -> None:
        kv, log = self.open_log(tmp_path, 3)
        kv.write(lambda t: t.put("events", seq_key(2), b"\xc1 not msgpack"))
        problems = self.verify(kv, log)
        assert any(p.startswith("event 2: cannot be decoded") for p in problems), problems
