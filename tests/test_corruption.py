"""Damage, caused on purpose: every kind is named by the read that meets it and by verify.

Each test builds a store holding a victim array (several chunks in a pack), a
bystander array, a builtins value and a pickled value, damages one thing
through a back door (pack bytes, raw LMDB, the secret file), and checks that
the read that meets the damage raises a clear error naming what is damaged,
that ``verify`` lists it, and that everything else still loads.
"""

from __future__ import annotations

import fractions
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest

from engine import IntegrityError, Store, UntrustedArtifactError
from engine.storage.blobs import HEADER
from engine.storage.chunks import ChunkRecord
from engine.storage.kv import Txn
from engine.storage.log import seq_key

VICTIM = np.random.default_rng(5).random(40_000)  # 320 KB: five 64 KiB raw chunks
BYSTANDER = np.random.default_rng(6).random(30_000)
CFG = {"lr": 0.1, "layers": (3, 4)}
PICKLED = fractions.Fraction(22, 7)


def _save_pickle(store: Store, value: Any, name: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the cloudpickle fallback warns
        store.save_artifact(value, name)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A store: bystanders first, then the victim in its own pack segment."""
    path = tmp_path / "s"
    with Store.open(path, chunk_size=64 << 10) as s:
        s.save_artifact(BYSTANDER, "bystander")
        s.save_artifact(CFG, "cfg")
        _save_pickle(s, PICKLED, "pick")
    with Store.open(path, chunk_size=64 << 10) as s:  # a new writer: a new segment
        s.save_artifact(VICTIM, "victim")
    return path


@pytest.fixture
def store(root: Path) -> Iterator[Store]:
    s = Store.open(root, chunk_size=64 << 10)
    try:
        yield s
    finally:
        s.close()


def chunk_records(store: Store, name: str) -> list[tuple[bytes, ChunkRecord]]:
    art = store.get_artifact(name)
    txn = store.ledger.kv.read()
    try:
        out = []
        for digest in art.record()["files"][0][3]:
            raw = txn.get("chunks", digest)
            assert raw is not None
            out.append((digest, ChunkRecord.unpack(raw)))
        return out
    finally:
        store.ledger.kv.end_read(txn)


def pack_path(root: Path, rec: ChunkRecord) -> Path:
    assert rec.loc is not None
    return root / "packs" / f"{rec.loc[0]}.pack"


def flip(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x5A]))


def others_load(store: Store) -> None:
    np.testing.assert_array_equal(store.load_artifact("bystander"), BYSTANDER)
    assert store.load_artifact("cfg") == CFG
    assert store.load_artifact("pick") == PICKLED


def test_flipped_byte_in_a_chunk_payload(root: Path, store: Store) -> None:
    digest, rec = chunk_records(store, "victim")[2]
    assert rec.loc is not None
    flip(pack_path(root, rec), rec.loc[1] + 1000)
    with pytest.raises(IntegrityError) as e:
        store.load_artifact("victim")
    msg = str(e.value)
    assert "victim:1" in msg and digest.hex() in msg and "damaged" in msg
    with pytest.raises(IntegrityError, match="victim:1"):
        store.get_artifact("victim").export_files(root.parent / "out")
    others_load(store)
    report = store.verify()
    assert [p for p in report.problems if digest.hex() in p and "victim:1" in p]
    assert len(report.problems) == 1, report.problems


def test_flipped_byte_in_a_pack_record_header(root: Path, store: Store) -> None:
    digest, rec = chunk_records(store, "victim")[1]
    assert rec.loc is not None
    flip(pack_path(root, rec), rec.loc[1] - HEADER.size + 8)  # inside the digest field
    # Loads read payloads, verified by digest: the data is still right.
    np.testing.assert_array_equal(store.load_artifact("victim"), VICTIM)
    others_load(store)
    report = store.verify()
    (problem,) = report.problems
    assert f"pack segment {rec.loc[0]}.pack" in problem
    assert digest.hex() in problem and "header" in problem and "victim:1" in problem


def _rewrite_event(store: Store, seq: int, change: Any) -> None:
    def fn(txn: Txn) -> None:
        raw = txn.get("events", seq_key(seq))
        assert raw is not None
        txn.put("events", seq_key(seq), change(raw))

    store.ledger.kv.write(fn)


def _victim_seq(store: Store) -> int:
    return store.get_artifact("victim").seq


def test_altered_event_value_breaks_the_chain(store: Store) -> None:
    seq = _victim_seq(store)
    # Still decodable, but not what was written: the stored name is changed.
    _rewrite_event(store, seq, lambda raw: raw.replace(b"victim", b"victin", 1))
    report = store.verify()
    assert any(f"event {seq}" in p and "head hash" in p for p in report.problems), report.problems
    # The projections were folded from the original event: reads still answer.
    others_load(store)


def test_altered_event_in_the_middle_names_the_next_event(store: Store) -> None:
    seq = store.get_artifact("cfg").seq
    _rewrite_event(store, seq, lambda raw: raw.replace(b"cfg", b"cfh", 1))
    report = store.verify()
    assert any(f"event {seq + 1}" in p and "chain broken" in p for p in report.problems)


def test_undecodable_event_is_an_integrity_error(store: Store) -> None:
    seq = _victim_seq(store)
    _rewrite_event(store, seq, lambda raw: b"\xc1" + raw[1:])  # 0xc1: never valid msgpack
    with pytest.raises(IntegrityError, match=f"event {seq} cannot be decoded"):
        list(store.events())
    # A view reads the temporal index, not the log: it still answers, as the
    # projections do; verify names the event.
    assert store.as_of(store.head).get_artifact("victim").id == store.get_artifact("victim").id
    report = store.verify()
    assert any(f"event {seq}" in p and "decoded" in p for p in report.problems)
    others_load(store)  # the projections still answer
    np.testing.assert_array_equal(store.load_artifact("victim"), VICTIM)


def test_event_with_wrong_types_is_an_integrity_error(store: Store) -> None:
    seq = _victim_seq(store)

    def wrong(raw: bytes) -> bytes:
        env = msgpack.unpackb(raw, raw=False)
        env["data"] = ["not", "a", "map"]
        return bytes(msgpack.packb(env, use_bin_type=True))

    _rewrite_event(store, seq, wrong)
    with pytest.raises(IntegrityError, match=f"event {seq} has a malformed envelope"):
        list(store.events(seq, seq + 1))
    report = store.verify()
    assert any(f"event {seq}" in p for p in report.problems), report.problems


def test_truncated_pack(root: Path, store: Store) -> None:
    recs = chunk_records(store, "victim")
    digest, rec = recs[-1]
    assert rec.loc is not None
    path = pack_path(root, rec)
    os.truncate(path, rec.loc[1] + rec.loc[2] // 2)
    with pytest.raises(IntegrityError) as e:
        store.load_artifact("victim")
    msg = str(e.value)
    assert "victim:1" in msg and f"{rec.loc[0]}.pack is truncated" in msg
    others_load(store)
    report = store.verify()
    assert any(f"{rec.loc[0]}.pack is truncated" in p for p in report.problems)
    assert any(digest.hex() in p and "victim:1" in p for p in report.problems)
    # Reopening does not "repair" it by losing more: the committed end is kept.
    store.close()
    with Store.open(root) as again:
        assert not again.verify().ok
        others_load(again)


def test_missing_pack(root: Path, store: Store) -> None:
    (_, rec), *_ = chunk_records(store, "victim")
    assert rec.loc is not None
    segment = rec.loc[0]
    store.close()
    pack_path(root, rec).unlink()
    with Store.open(root) as s:
        with pytest.raises(IntegrityError) as e:
            s.load_artifact("victim")
        msg = str(e.value)
        assert "victim:1" in msg and f"pack segment {segment}.pack is missing" in msg
        others_load(s)
        report = s.verify()
        assert f"pack segment {segment}.pack is missing" in report.problems
        assert any("victim:1" in p for p in report.problems)


def test_deleted_secret(root: Path, store: Store) -> None:
    store.close()
    (root / "secret").unlink()
    with Store.open(root) as s:
        with pytest.raises(UntrustedArtifactError) as e:
            s.load_artifact("pick")
        msg = str(e.value)
        assert "pick:1" in msg and "secret" in msg and "missing" in msg
        np.testing.assert_array_equal(s.load_artifact("victim"), VICTIM)
        assert s.load_artifact("cfg") == CFG
        report = s.verify()
        assert any("secret" in p and "missing" in p for p in report.problems)


def test_altered_secret(root: Path, store: Store) -> None:
    store.close()
    secret = root / "secret"
    secret.write_bytes(bytes(b ^ 1 for b in secret.read_bytes()))
    with Store.open(root) as s:
        with pytest.raises(UntrustedArtifactError) as e:
            s.load_artifact("pick")
        msg = str(e.value)
        assert "pick:1" in msg and "signature does not match" in msg and "secret" in msg
        np.testing.assert_array_equal(s.load_artifact("victim"), VICTIM)
        report = s.verify()
        assert any("does not match" in p and "secret" in p for p in report.problems)


def test_truncated_secret(root: Path, store: Store) -> None:
    store.close()
    (root / "secret").write_bytes(b"short")
    with Store.open(root) as s:
        with pytest.raises(UntrustedArtifactError, match=r"pick:1.*truncated"):
            s.load_artifact("pick")
        assert any("truncated" in p for p in s.verify().problems)


def test_damaged_chunk_index_record(store: Store) -> None:
    digest, _ = chunk_records(store, "victim")[0]

    def fn(txn: Txn) -> None:
        txn.put("chunks", digest, b"\xc1garbage")

    store.ledger.kv.write(fn)
    report = store.verify()
    assert any(digest.hex() in p and "index record is damaged" in p for p in report.problems)
    others_load(store)
