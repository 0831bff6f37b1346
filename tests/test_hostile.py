"""Hostile input: wrong types, malformed events, unencodable parameters, fuzzed imports.

Whatever comes in, the answer is an ``ArtledgerError`` subclass with a clear
message and the store unchanged; never a raw ``TypeError`` from deep inside,
never a half-applied change.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import (
    ArtledgerError,
    IntegrityError,
    InvalidArgumentError,
    Store,
    UnhashableParameterError,
    pipeline,
    step,
)
from engine.ops.stream import FRAME, MAGIC, PREAMBLE, Writer
from engine.storage.kv import Txn

Snapshot = tuple[int, list[tuple[str, Any, list[str]]], dict[str, int]]


def snapshot(store: Store) -> Snapshot:
    arts = [(a.name, a.version, a.tags) for a in store.list_artifacts(include_deleted=True)]
    return store.head, arts, store.stats()


# -- wrong types through the API ------------------------------------------------------


BAD_SAVES: list[tuple[str, dict[str, Any]]] = [
    ("name int", {"name": 123}),
    ("name empty", {"name": ""}),
    ("name NUL", {"name": "a\x00b"}),
    ("name too long", {"name": "x" * 513}),
    ("version float", {"version": 1.5}),
    ("version bool", {"version": True}),
    ("version empty", {"version": ""}),
    ("version list", {"version": [1]}),
    ("tags ints", {"tags": [1]}),
    ("tags empty string", {"tags": [""]}),
    ("tags None inside", {"tags": ["ok", None]}),
    ("metadata object", {"metadata": {"k": object()}}),
    ("metadata nested object", {"metadata": {"k": [1, {"x": object()}]}}),
    ("metadata list", {"metadata": [("k", 1)]}),
    ("metadata string", {"metadata": "k=1"}),
]


@pytest.mark.parametrize("kwargs", [k for _, k in BAD_SAVES], ids=[i for i, _ in BAD_SAVES])
def test_save_with_wrong_types(store: Store, kwargs: dict[str, Any]) -> None:
    store.save_artifact("keep", "keep")
    before = snapshot(store)
    args = {"name": "n", **kwargs}
    with pytest.raises(InvalidArgumentError) as e:
        store.save_artifact([1, 2], **args)
    assert "must" in str(e.value) or "invalid" in str(e.value) or "cannot" in str(e.value)
    assert snapshot(store) == before


def test_other_calls_with_wrong_types(store: Store) -> None:
    art = store.save_artifact(1, "ok")
    before = snapshot(store)
    calls: list[Callable[[], Any]] = [
        lambda: store.tag(art, 5),  # type: ignore[arg-type]
        lambda: store.tag(art, ""),
        lambda: store.untag(art, None),  # type: ignore[arg-type]
        lambda: store.tag(None, "x"),  # type: ignore[arg-type]
        lambda: store.delete_artifact(5),  # type: ignore[arg-type]
        lambda: store.log_metadata(art, [1]),  # type: ignore[arg-type]
        lambda: store.log_metadata(art, {"x": object()}),
        lambda: store.list_artifacts(name=5),  # type: ignore[arg-type]
        lambda: store.list_artifacts(tag=b"x"),  # type: ignore[arg-type]
        lambda: store.get_artifact(5),  # type: ignore[arg-type]
        lambda: store.get_artifact("ok", 1.5),  # type: ignore[arg-type]
        lambda: store.as_of("yesterday"),
        lambda: store.as_of(store.head + 5),
        lambda: store.lineage(art, direction="sideways"),
    ]
    for call in calls:
        with pytest.raises(ArtledgerError):
            call()
    assert snapshot(store) == before
    assert store.load_artifact("ok") == 1


# -- parameters that cannot be encoded ------------------------------------------------------


@step
def takes(x: Any) -> int:
    return 1


@pipeline
def hostile_pipe(x: Any = None) -> None:
    takes(x=x)


@pytest.mark.parametrize(
    "value",
    [object(), lambda: 1, {1: object()}, [1, {"k": object()}], np.dtype("float32").type],
    ids=["object", "lambda", "dict-of-object", "nested", "type"],
)
def test_unencodable_parameter(store: Store, value: Any) -> None:
    store.save_artifact(1, "keep")
    before = snapshot(store)
    with pytest.raises(UnhashableParameterError) as e:
        store.run(hostile_pipe, x=value)
    msg = str(e.value)
    assert "`x" in msg and "takes" in msg and "cannot be encoded" in msg
    assert snapshot(store) == before


# -- malformed events through the back door ----------------------------------------------------


MALFORMED: list[tuple[str, dict[str, Any]]] = [
    ("artifact.deleted", {"id": 123}),
    ("artifact.tagged", {"id": None, "tags": 5}),
    ("artifact.written", {"id": "x"}),
    ("artifact.written", {"id": "y", "name": 5, "version": 1, "content_hash": "zz"}),
    ("metadata.logged", {"id": [], "metadata": 1}),
    ("run.started", {"nope": 1}),
    ("step.completed", {"id": {}}),
]


@pytest.mark.parametrize(
    ("etype", "data"), MALFORMED, ids=[f"{t}-{i}" for i, (t, _) in enumerate(MALFORMED)]
)
def test_event_with_wrong_types(store: Store, etype: str, data: dict[str, Any]) -> None:
    """An event the engine would never write, appended chain-valid behind its back."""
    store.save_artifact({"a": 1}, "ok")

    def inject(txn: Txn) -> None:
        store.ledger.log.append(txn, [(etype, data)])

    store.ledger.kv.write(inject)
    seq = store.head
    report = store.verify()
    assert not report.ok
    assert any(f"event {seq} ({etype}) has malformed data" in p for p in report.problems)
    with pytest.raises(IntegrityError, match=f"event {seq} \\({etype}\\) has malformed data"):
        store.rebuild()
    with pytest.raises(IntegrityError, match=f"event {seq}"):
        store.as_of(seq)
    # The failed rebuild changed nothing: the projections still answer.
    assert store.load_artifact("ok") == {"a": 1}
    assert store.as_of(seq - 1).get_artifact("ok").load() == {"a": 1}
    assert [e.type for e in store.events(seq)] == [etype]


# -- import streams: crafted and fuzzed ---------------------------------------------------------


def read_frames(data: bytes) -> list[tuple[bytes, bytes]]:
    """The frames of a well-formed stream, trailer included."""
    pos = PREAMBLE.size
    out = []
    while pos < len(data):
        kind, n = FRAME.unpack_from(data, pos)
        payload = data[pos + FRAME.size : pos + FRAME.size + n]
        out.append((bytes([kind]), payload))
        pos += FRAME.size + n + 16
    return out


def build_stream(frames: list[tuple[bytes, bytes]]) -> bytes:
    """A stream with valid checksums and trailer around ``frames`` (no trailer given)."""
    import io

    buf = io.BytesIO()
    w = Writer(buf)
    w.raw(PREAMBLE.pack(MAGIC, 1, 0))
    counts = {b"E": 0, b"C": 0, b"A": 0}
    chunk_bytes = 0
    for kind, payload in frames:
        w.frame(kind, payload)
        counts[kind] = counts.get(kind, 0) + 1
        if kind == b"C":
            chunk_bytes += len(payload) - 16
    trailer = {
        "events": counts[b"E"],
        "chunks": counts[b"C"],
        "absent": counts[b"A"],
        "chunk_bytes": chunk_bytes,
        "hash": w.running.hexdigest(),
    }
    w.frame(b"T", msgpack.packb(trailer, use_bin_type=True))
    return buf.getvalue()


@pytest.fixture(scope="module")
def export_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    root = tmp_path_factory.mktemp("src")
    with Store.open(root / "src", chunk_size=64 << 10) as src:
        src.save_artifact(np.arange(20_000, dtype=np.float64), "arr", tags=["t"])
        gone = src.save_artifact({"cfg": [1, 2]}, "cfg")
        src.save_artifact("text" * 100, "cfg")
        src.delete_artifact(gone)
        src.export(root / "x.export")
    data = (root / "x.export").read_bytes()
    assert build_stream(read_frames(data)[:-1])[: len(data) - 64] == data[: len(data) - 64]
    return data


@pytest.fixture
def dest(tmp_path: Path) -> Iterator[Store]:
    s = Store.memory(chunk_size=64 << 10)
    s.save_artifact("mine", "cfg")
    try:
        yield s
    finally:
        s.close()


def import_must_fail(dest: Store, path: Path, data: bytes) -> str:
    path.write_bytes(data)
    before = snapshot(dest)
    with pytest.raises(ArtledgerError) as e:
        Store.import_(path, into=dest)
    assert snapshot(dest) == before
    assert dest.load_artifact("cfg") == "mine"
    return str(e.value)


def test_valid_export_imports(export_bytes: bytes, dest: Store, tmp_path: Path) -> None:
    path = tmp_path / "ok.export"
    path.write_bytes(export_bytes)
    Store.import_(path, into=dest)
    np.testing.assert_array_equal(dest.load_artifact("arr"), np.arange(20_000, dtype=np.float64))
    assert dest.verify().ok


def _artifact_event(frames: list[tuple[bytes, bytes]], name: str) -> int:
    for i, (kind, payload) in enumerate(frames):
        if kind == b"E":
            env = msgpack.unpackb(payload, raw=False)
            if env["type"] == "artifact.written" and env["data"]["name"] == name:
                return i
    raise AssertionError(f"no artifact.written for {name}")


def _craft(export_bytes: bytes, change: Callable[[dict[str, Any]], None]) -> bytes:
    frames = read_frames(export_bytes)[:-1]
    i = _artifact_event(frames, "arr")
    env = msgpack.unpackb(frames[i][1], raw=False)
    change(env["data"])
    frames[i] = (b"E", msgpack.packb(env, use_bin_type=True))
    return build_stream(frames)


def _set_file(field: int, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(d: dict[str, Any]) -> None:
        d["files"][0][field] = value

    return change


CRAFTED: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("dotdot name", _set_file(0, "../../etc/passwd"), "unsafe file name '../../etc/passwd'"),
    ("absolute name", _set_file(0, "/etc/passwd"), "unsafe file name '/etc/passwd'"),
    ("NUL name", _set_file(0, "a\x00b"), "unsafe file name"),
    ("backslash name", _set_file(0, "..\\x"), "unsafe file name"),
    ("huge size", _set_file(1, 1 << 60), "size"),
    ("negative size", _set_file(1, -1), "size"),
    ("size not int", _set_file(1, "12"), ""),
    ("wrong file hash", _set_file(2, "0" * 32), ""),
    ("chunk list not a list", _set_file(3, "abc"), ""),
    ("unknown chunk key", _set_file(3, [b"\x01" * 16]), ""),
    ("name not a string", lambda d: d.update(name=5), ""),
    ("version float", lambda d: d.update(version=1.5), ""),
    ("tags not a list", lambda d: d.update(tags="t"), ""),
    ("missing files", lambda d: d.pop("files"), ""),
    ("materializer not a string", lambda d: d.update(materializer=[1]), ""),
    (
        "visualization escapes",
        lambda d: d.update(visualizations=[["v", "html", ["../v", 0, "", []]]]),
        "unsafe file name",
    ),
]


@pytest.mark.parametrize(
    ("change", "needle"), [(c, n) for _, c, n in CRAFTED], ids=[i for i, _, _ in CRAFTED]
)
def test_crafted_manifest_is_refused(
    export_bytes: bytes,
    dest: Store,
    tmp_path: Path,
    change: Callable[[dict[str, Any]], None],
    needle: str,
) -> None:
    msg = import_must_fail(dest, tmp_path / "crafted.export", _craft(export_bytes, change))
    assert "nothing was imported" in msg
    assert needle in msg


FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@FUZZ
@given(data=st.binary(max_size=300))
def test_random_bytes(dest: Store, tmp_path: Path, data: bytes) -> None:
    import_must_fail(dest, tmp_path / "random.export", data)


@FUZZ
@given(prefix=st.binary(max_size=200))
def test_random_bytes_after_a_valid_preamble(dest: Store, tmp_path: Path, prefix: bytes) -> None:
    import_must_fail(dest, tmp_path / "p.export", PREAMBLE.pack(MAGIC, 1, 0) + prefix)


@FUZZ
@given(data=st.data())
def test_bit_flips(export_bytes: bytes, dest: Store, tmp_path: Path, data: st.DataObject) -> None:
    buf = bytearray(export_bytes)
    for _ in range(data.draw(st.integers(1, 3))):
        pos = data.draw(st.integers(0, len(buf) - 1))
        buf[pos] ^= 1 << data.draw(st.integers(0, 7))
    if bytes(buf) == export_bytes:
        return
    msg = import_must_fail(dest, tmp_path / "flip.export", bytes(buf))
    assert "nothing was imported" in msg


@FUZZ
@given(data=st.data())
def test_truncations(export_bytes: bytes, dest: Store, tmp_path: Path, data: st.DataObject) -> None:
    cut = data.draw(st.integers(0, len(export_bytes) - 1))
    msg = import_must_fail(dest, tmp_path / "cut.export", export_bytes[:cut])
    assert "nothing was imported" in msg


@FUZZ
@given(data=st.data())
def test_byte_splices(
    export_bytes: bytes, dest: Store, tmp_path: Path, data: st.DataObject
) -> None:
    n = len(export_bytes)
    a = data.draw(st.integers(0, n - 1))
    b = data.draw(st.integers(a, min(n, a + 400)))
    at = data.draw(st.integers(0, n))
    spliced = export_bytes[:at] + export_bytes[a:b] + export_bytes[at:]
    if spliced == export_bytes:
        return
    import_must_fail(dest, tmp_path / "splice.export", spliced)


@FUZZ
@given(data=st.data())
def test_spliced_frames(
    export_bytes: bytes, dest: Store, tmp_path: Path, data: st.DataObject
) -> None:
    """Frames dropped, duplicated or reordered, re-checksummed: the framing is
    valid, so the content checks must hold. Either refused with the store
    unchanged, or (a consistent subset of history) imported and verified."""
    frames = read_frames(export_bytes)[:-1]
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(frames) - 1))
        op = data.draw(st.sampled_from(["drop", "dup", "swap"]))
        if op == "drop":
            del frames[i]
        elif op == "dup":
            frames.insert(data.draw(st.integers(0, len(frames))), frames[i])
        else:
            j = data.draw(st.integers(0, len(frames) - 1))
            frames[i], frames[j] = frames[j], frames[i]
    path = tmp_path / "frames.export"
    path.write_bytes(build_stream(frames))
    before = snapshot(dest)
    try:
        Store.import_(path, into=dest)
    except ArtledgerError:
        assert snapshot(dest) == before
        return
    report = dest.verify()
    assert report.ok, report.problems
    for art in dest.list_artifacts():
        art.load()


def test_huge_frame_length_is_refused_without_reading_it(
    export_bytes: bytes, dest: Store, tmp_path: Path
) -> None:
    data = bytearray(export_bytes)
    struct.pack_into(">I", data, PREAMBLE.size + 1, 0xFFFFFFFF)  # the header frame's length
    msg = import_must_fail(dest, tmp_path / "huge.export", bytes(data))
    assert "nothing was imported" in msg
