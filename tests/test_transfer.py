"""Export / import and ``replay --into``: round trips, selection, and refusing garbage."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import engine
from engine import ImportValidationError, Store, UntrustedArtifactError
from engine.ops.stream import FORMAT, FRAME, MAGIC, PREAMBLE, Writer
from engine.ops.transfer import copy_history
from engine.projections import PROJECTION_DBS
from materializers.cloudpickle_materializer import CloudpickleMaterializer

# -- helpers ---------------------------------------------------------------------------


def _touch(path: str) -> str:
    Path(path).touch()
    return "ran"


class Boom:
    """Unpickling this runs code: it creates the file at ``path``."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (_touch, (self.path,))


@engine.step
def make(n: int = 1000) -> np.ndarray:
    return np.arange(n, dtype=np.float64)


@engine.step
def scale(x: np.ndarray, k: float = 2.0) -> np.ndarray:
    return x * k


@engine.step
def total(x: np.ndarray) -> float:
    return float(x.sum())


@engine.pipeline
def chain(n: int = 1000, k: float = 2.0) -> None:
    total(scale(make(n=n), k=k))


def snapshot(store: Store) -> dict[str, Any]:
    """Everything an import must leave alone when it refuses a stream."""
    txn = store.ledger.kv.read()
    try:
        dbs = {db: list(txn.scan(db)) for db in (*PROJECTION_DBS, "events", "chunks", "meta")}
    finally:
        store.ledger.kv.end_read(txn)
    packs = {}
    if store.path is not None:
        packs = {p.name: p.read_bytes() for p in (store.path / "packs").glob("*")}
    return {"head": store.head, "stats": store.stats(), "dbs": dbs, "packs": packs}


def fill(store: Store, marker: Path) -> None:
    rng = np.random.default_rng(1)
    store.save_artifact(rng.random(200_000), "features", tags=["raw"])
    store.save_artifact({"lr": 0.1}, "config")
    store.save_artifact({"lr": 0.2}, "config", metadata={"note": "second"})
    gone = store.save_artifact([1, 2, 3], "scratch")
    store.delete_artifact(gone)
    store.save_artifact(Boom(str(marker)), "boom", materializer=CloudpickleMaterializer)
    store.run(chain, n=3000)
    store.run(chain, n=3000, k=3.0)


def read_stream(src: Path) -> tuple[dict[str, Any], list[dict[str, Any]], dict[bytes, bytes]]:
    """A valid stream's header, events and chunks (key -> bytes), decoded whole."""
    import msgpack

    raw = src.read_bytes()
    pos = PREAMBLE.size
    header: dict[str, Any] = {}
    events: list[dict[str, Any]] = []
    chunks: dict[bytes, bytes] = {}
    while pos < len(raw):
        kind, n = FRAME.unpack_from(raw, pos)
        payload = raw[pos + FRAME.size : pos + FRAME.size + n]
        if kind == ord("H"):
            header = msgpack.unpackb(payload, raw=False)
        elif kind == ord("E"):
            events.append(msgpack.unpackb(payload, raw=False, strict_map_key=False))
        elif kind == ord("C"):
            chunks[payload[:16]] = payload[16:]
        pos += FRAME.size + n + 16
    return header, events, chunks


def rewrite(
    src: Path, dst: Path, edit: Callable[[list[dict[str, Any]], dict[bytes, bytes]], None]
) -> None:
    """Decode a valid stream, let ``edit`` change its events and chunks, and write
    it back with valid framing (a forged stream that only content checks can catch)."""
    header, events, chunks = read_stream(src)
    edit(events, chunks)
    from engine.storage.log import pack

    with open(dst, "wb") as f:
        w = Writer(f)
        w.raw(PREAMBLE.pack(MAGIC, FORMAT, 0))
        w.frame(b"H", pack(header))
        for key, data in chunks.items():
            w.frame(b"C", key, data)
        for env in events:
            w.frame(b"E", pack(env))
        trailer = {
            "events": len(events),
            "chunks": len(chunks),
            "absent": 0,
            "chunk_bytes": sum(len(c) for c in chunks.values()),
            "hash": w.running.hexdigest(),
        }
        w.frame(b"T", pack(trailer))


@pytest.fixture
def source(tmp_path: Path) -> tuple[Store, Path, Path]:
    marker = tmp_path / "pwned"
    s = Store.open(tmp_path / "src", chunk_size=128 << 10)
    fill(s, marker)
    stream = tmp_path / "all.alx"
    s.export(stream)
    yield s, stream, marker
    s.close()


# -- round trips -------------------------------------------------------------------------


def test_round_trip_into_an_empty_store(source: tuple[Store, Path, Path], tmp_path: Path) -> None:
    src, stream, marker = source
    with Store.open(tmp_path / "dst", chunk_size=64 << 10) as dst:
        report = Store.import_(stream, into=dst)
        assert report.events == src.head - 1 and report.first_seq == 2
        assert dst.head == src.head
        assert dst.verify().ok
        for a in src.list_artifacts():
            b = dst.get_artifact(a.name, a.version)
            assert (b.id, b.content_hash, b.size, b.tags) == (a.id, a.content_hash, a.size, a.tags)
            if a.name != "boom":
                loaded, orig = b.load(), a.load()
                if isinstance(orig, np.ndarray):
                    np.testing.assert_array_equal(loaded, orig)
                else:
                    assert loaded == orig
        # Re-addressed under the destination's seed (and re-chunked to its chunk size).
        a, b = src.get_artifact("features"), dst.get_artifact("features")
        assert a.record()["files"][0][3] != b.record()["files"][0][3]
        st_src, st_dst = src.stats(), dst.stats()
        assert st_dst["logical_bytes"] == st_src["logical_bytes"]
        assert st_dst["runs"] == st_src["runs"] == 2
        assert [r.pipeline for r in dst.list_runs()] == ["chain", "chain"]
        # Same timestamps (the destination was empty), same lineage.
        assert [e.ts for e in dst.events(2)] == [e.ts for e in src.events(2)]
        up_src = src.lineage(src.get_artifact("chain.total.output", 2))
        up_dst = dst.lineage(dst.get_artifact("chain.total.output", 2))
        assert up_src.nodes == up_dst.nodes and up_src.edges == up_dst.edges
        # A pickle that would run code stays refused.
        with pytest.raises(UntrustedArtifactError):
            dst.load_artifact("boom")
        assert not marker.exists()
        # Again: a no-op.
        again = Store.import_(stream, into=dst)
        assert again.already_imported and dst.head == src.head


def test_trust_pickles_resigns(source: tuple[Store, Path, Path], tmp_path: Path) -> None:
    _, stream, marker = source
    with Store.open(tmp_path / "dst") as dst:
        report = Store.import_(stream, into=dst, trust_pickles=True)
        assert report.resigned == 1 and report.untrusted == 0
        assert not marker.exists()
        assert dst.load_artifact("boom") == "ran"
        assert marker.exists()


def test_memory_store_exports_and_dedups_on_import(tmp_path: Path) -> None:
    with Store.memory() as mem:
        data = np.random.default_rng(2).random(100_000)
        mem.save_artifact(data, "a")
        mem.save_artifact([1, 2], "b", version="gold")
        mem.export(tmp_path / "m.alx")
    with Store.open(tmp_path / "dst") as dst:
        dst.save_artifact(data, "a")  # same bytes, and a name with a version 1 already
        before = dst.stats()["stored_bytes"]
        report = Store.import_(tmp_path / "m.alx", into=dst)
        assert report.renumbered == {"a": 1}
        assert [a.version for a in dst.list_artifacts("a")] == [1, 2]
        np.testing.assert_array_equal(dst.load_artifact("a", 2), data)
        assert dst.stats()["stored_bytes"] - before < 200  # the array's chunks were deduplicated
        assert dst.load_artifact("b", "gold") == [1, 2]


def test_label_clash_and_partial_overlap_are_refused(tmp_path: Path) -> None:
    with Store.open(tmp_path / "src") as src:
        src.save_artifact(1, "x", version="gold")
        src.export(tmp_path / "one.alx")
        src.save_artifact(2, "y")
        src.export(tmp_path / "two.alx")
    with Store.open(tmp_path / "dst") as dst:
        dst.save_artifact(0, "x", version="gold")
        before = snapshot(dst)
        with pytest.raises(ImportValidationError, match="x:gold"):
            Store.import_(tmp_path / "one.alx", into=dst)
        assert snapshot(dst) == before
    with Store.open(tmp_path / "dst2") as dst:
        Store.import_(tmp_path / "one.alx", into=dst)
        with pytest.raises(ImportValidationError, match="partial overlap"):
            Store.import_(tmp_path / "two.alx", into=dst)


def test_export_selected_names_with_upstream_lineage(
    source: tuple[Store, Path, Path], tmp_path: Path
) -> None:
    src, _, _ = source
    report = src.export(tmp_path / "sel.alx", names=["chain.scale.output"])
    assert report.events < src.head - 1
    with Store.open(tmp_path / "dst") as dst:
        Store.import_(tmp_path / "sel.alx", into=dst)
        names = {a.name for a in dst.list_artifacts()}
        assert names == {"chain.make.output", "chain.scale.output"}
        assert dst.verify().ok
        art = dst.get_artifact("chain.scale.output", 2)
        assert art.producer is not None and art.producer.step == "scale"
        graph = dst.lineage(art)
        assert {n["name"] for n in graph.nodes.values()} == {
            "chain.make.output",
            "chain.scale.output",
            "make",
            "scale",
        }
        np.testing.assert_array_equal(art.load(), src.load_artifact("chain.scale.output", 2))
    with pytest.raises(engine.ArtifactNotFoundError):
        src.export(tmp_path / "none.alx", names=["nope"])


def test_copy_history_keeps_sequence_numbers_and_trust(
    source: tuple[Store, Path, Path], tmp_path: Path
) -> None:
    src, _, marker = source
    upto = next(e.seq for e in src.events() if e.type == "run.started") - 1
    new, report = copy_history(src, tmp_path / "past", upto=upto)
    with new:
        assert new.head == upto
        assert [(e.seq, e.type, e.ts) for e in new.events(2)] == [
            (e.seq, e.type, e.ts) for e in src.events(2, upto + 1)
        ]
        assert new.verify().ok
        assert new.list_runs() == []
        assert new.load_artifact("boom") == "ran"  # same secret: the signature holds
        assert marker.exists()
    assert report.chunks_written > 0


# -- garbage in ----------------------------------------------------------------------------


def _flip(data: bytearray, at: int) -> None:
    data[at] ^= 0x40


def _mutations(raw: bytes) -> dict[str, bytes]:
    n = len(raw)
    out = {
        "empty": b"",
        "garbage": os.urandom(4096),
        "magic only": MAGIC,
        "newer format": PREAMBLE.pack(MAGIC, FORMAT + 1, 0) + raw[PREAMBLE.size :],
        "trailing bytes": raw + b"\x00",
    }
    for frac in (0.1, 0.5, 0.99):
        out[f"truncated at {frac}"] = raw[: int(n * frac)]
    out["truncated trailer"] = raw[:-3]
    for frac in (0.02, 0.3, 0.6, 0.97):
        b = bytearray(raw)
        _flip(b, int(n * frac))
        out[f"flipped byte at {frac}"] = bytes(b)
    return out


def test_garbage_truncated_and_tampered_streams_are_refused(
    source: tuple[Store, Path, Path], tmp_path: Path
) -> None:
    _, stream, _ = source
    raw = stream.read_bytes()
    with Store.open(tmp_path / "dst") as dst:
        dst.save_artifact({"keep": True}, "mine")
        before = snapshot(dst)
        for label, data in _mutations(raw).items():
            bad = tmp_path / "bad.alx"
            bad.write_bytes(data)
            with pytest.raises(ImportValidationError, match="nothing was imported") as info:
                Store.import_(bad, into=dst)
            assert str(bad) in str(info.value), label
            assert snapshot(dst) == before, label
        assert dst.load_artifact("mine") == {"keep": True}


def _written(events: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(
        e["data"] for e in events if e["type"] == "artifact.written" and e["data"]["name"] == name
    )


FORGERIES: dict[str, tuple[Callable[[list[dict[str, Any]], dict[bytes, bytes]], None], str]] = {
    "dotdot file name": (
        lambda ev, ch: _written(ev, "config")["files"][0].__setitem__(0, "../../etc/x"),
        "unsafe file name",
    ),
    "absolute file name": (
        lambda ev, ch: _written(ev, "config")["files"][0].__setitem__(0, "/etc/passwd"),
        "unsafe file name",
    ),
    "declared size": (
        lambda ev, ch: _written(ev, "features")["files"][0].__setitem__(1, 10),
        "declares 10 bytes",
    ),
    "absurd size": (
        lambda ev, ch: _written(ev, "features").__setitem__("size", 1 << 60),
        "declares size",
    ),
    "unknown type": (lambda ev, ch: ev[0].__setitem__("type", "evil.happened"), "unknown type"),
    "missing field": (lambda ev, ch: _written(ev, "config").pop("content_hash"), "content_hash"),
    "wrong field type": (
        lambda ev, ch: _written(ev, "config").__setitem__("tags", "notalist"),
        "tags",
    ),
    "missing chunk": (lambda ev, ch: ch.pop(next(iter(ch))), "not in the stream"),
    "replaced chunk": (
        lambda ev, ch: ch.__setitem__(
            _written(ev, "config")["files"][0][3][0], b"\x81\xa2lr\xcb?\xd9\x99\x99\x99\x99\x99\x9a"
        ),
        "do not match its key",
    ),
    "content hash": (
        lambda ev, ch: _written(ev, "config").__setitem__("content_hash", "0" * 32),
        "content hash does not match",
    ),
    "dangling reference": (
        lambda ev, ch: ev.append(
            {"type": "artifact.deleted", "v": 1, "ts": ev[-1]["ts"], "data": {"id": "ab" * 8}}
        ),
        "does not write",
    ),
}


@pytest.mark.parametrize("case", sorted(FORGERIES))
def test_forged_streams_are_refused(
    case: str, source: tuple[Store, Path, Path], tmp_path: Path
) -> None:
    _, stream, _ = source
    edit, message = FORGERIES[case]
    forged = tmp_path / "forged.alx"
    rewrite(stream, forged, edit)
    with Store.open(tmp_path / "dst") as dst:
        before = snapshot(dst)
        with pytest.raises(ImportValidationError, match=message):
            Store.import_(forged, into=dst)
        assert snapshot(dst) == before


def test_rewrite_without_edits_imports(source: tuple[Store, Path, Path], tmp_path: Path) -> None:
    """The forgery helper itself writes valid streams (so the refusals above are real)."""
    _, stream, _ = source
    copy = tmp_path / "copy.alx"
    rewrite(stream, copy, lambda ev, ch: None)
    with Store.open(tmp_path / "dst") as dst:
        assert Store.import_(copy, into=dst).artifacts > 0
