"""Bad input and trust: the secret, classes named by imports, timestamps, amplification,
out-of-range numbers and file-name clashes.

Each test goes through the public API (``Store``, ``save_artifact``, ``Store.import_``,
``as_of``, ``export_files``) with crafted input; back doors (the secret file, raw
LMDB, forged streams with valid framing) only cause the condition.
"""

from __future__ import annotations

import datetime as dt
import fractions
import os
import subprocess
import sys
import textwrap
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from streams import (
    Frames,
    build_stream,
    edit_artifact,
    file_bytes,
    read_frames,
    replace_file,
    unpack,
)

import engine.ops.stream_scan
from engine import (
    ImportValidationError,
    InvalidArgumentError,
    MaterializerError,
    Store,
    StoreSecretError,
)
from engine.projections import apply
from engine.storage.chunks import FileEntry, content_hash
from engine.storage.kv import Txn
from engine.storage.log import chain, pack, seq_key
from materializers import BaseMaterializer, allow, registry
from materializers.builtins import decode, encode

PICKLED = fractions.Fraction(22, 7)
ROOT = Path(__file__).resolve().parents[1]


def _save_pickle(store: Store, value: Any, name: str) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the cloudpickle fallback warns
        return store.save_artifact(value, name)


def _state(store: Store) -> tuple[int, list[tuple[str, Any]], dict[str, int]]:
    arts = [(a.name, a.version) for a in store.list_artifacts(include_deleted=True)]
    return store.head, arts, store.stats()


# -- a missing or replaced secret refuses pickle writes ------------------------------


@pytest.mark.parametrize("damage", ["deleted", "replaced"])
def test_pickle_saves_are_refused_while_the_secret_is_damaged(tmp_path: Path, damage: str) -> None:
    root = tmp_path / "s"
    with Store.open(root) as s:
        s.save_artifact({"lr": 0.1}, "cfg")
    secret = root / "secret"
    original = secret.read_bytes()
    if damage == "deleted":
        secret.unlink()
    else:
        secret.write_bytes(os.urandom(32))
    with Store.open(root) as s:
        before = _state(s)
        with pytest.raises(StoreSecretError) as e:
            _save_pickle(s, PICKLED, "pick")
        msg = str(e.value)
        assert "'pick'" in msg and str(secret) in msg and "restore" in msg
        assert "nothing was committed" in msg
        # Any materializer that signs: numpy object arrays are pickles too.
        with pytest.raises(StoreSecretError):
            s.save_artifact(np.array([PICKLED, None], dtype=object), "objects")
        assert _state(s) == before
        # Everything that does not sign still saves and loads.
        s.save_artifact([1, 2], "plain")
        assert s.load_artifact("plain") == [1, 2]
        problems = s.verify().problems
        assert any(str(secret) in p and "neither load nor save" in p for p in problems)
    secret.write_bytes(original)
    with Store.open(root) as s:
        _save_pickle(s, PICKLED, "pick")
        assert s.load_artifact("pick") == PICKLED
        assert s.verify().ok


def test_trusting_an_import_is_refused_while_the_secret_is_missing(tmp_path: Path) -> None:
    with Store.open(tmp_path / "src") as src:
        _save_pickle(src, PICKLED, "pick")
        src.export(tmp_path / "x.alx")
    with Store.open(tmp_path / "dst") as dst:
        dst.save_artifact(1, "mine")
    (tmp_path / "dst" / "secret").unlink()
    with Store.open(tmp_path / "dst") as dst:
        before = _state(dst)
        with pytest.raises(StoreSecretError, match="trust_pickles"):
            Store.import_(tmp_path / "x.alx", into=dst, trust_pickles=True)
        assert _state(dst) == before
        Store.import_(tmp_path / "x.alx", into=dst)  # untrusted: nothing to sign
        assert dst.get_artifact("pick").record()["untrusted"] is True


# -- imported artifacts never import a module they name --------------------------------


@pytest.fixture
def evil(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Path]]:
    """A module on sys.path whose top-level code leaves a marker file when imported."""
    name = f"evil_{uuid.uuid4().hex[:12]}"
    marker = tmp_path / f"{name}.imported"
    (tmp_path / "mods").mkdir()
    (tmp_path / "mods" / f"{name}.py").write_text(
        textwrap.dedent(
            f"""
            import pathlib
            pathlib.Path({str(marker)!r}).write_text("top-level code ran")

            from materializers import BaseMaterializer


            class X(BaseMaterializer):
                SKIP_REGISTRATION = True

                def load(self, data_type):
                    return "evil loaded"


            class Y:
                pass
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path / "mods"))
    with registry.temporary_registrations():
        yield name, marker
    sys.modules.pop(name, None)


@pytest.fixture
def plain_export(tmp_path: Path) -> bytes:
    with Store.open(tmp_path / "src") as src:
        src.save_artifact({"a": 1}, "cfg")
        src.save_artifact({"k": np.arange(3)}, "mixed")
        src.export(tmp_path / "plain.alx")
    return (tmp_path / "plain.alx").read_bytes()


def _import(tmp_path: Path, frames: Frames, **kw: Any) -> Store:
    path = tmp_path / f"{uuid.uuid4().hex}.alx"
    path.write_bytes(build_stream(frames))
    dst = Store.open(tmp_path / f"dst-{uuid.uuid4().hex[:8]}")
    Store.import_(path, into=dst, **kw)
    return dst


def _with_element(frames: Frames, field: str, value: str) -> Frames:
    """``mixed``'s container structure with its array element's ``field`` changed."""
    structure = decode(file_bytes(frames, "mixed", "structure.msgpack"))
    structure["items"][0][1][field] = value
    return replace_file(frames, "mixed", "structure.msgpack", encode(structure))


CRAFTS = {
    "materializer": lambda f, m: edit_artifact(
        f, "cfg", lambda env: env["data"].__setitem__("materializer", f"{m}:X")
    ),
    "data_type": lambda f, m: edit_artifact(
        f, "cfg", lambda env: env["data"].__setitem__("data_type", f"{m}:Y")
    ),
    "element materializer": lambda f, m: _with_element(f, "materializer", f"{m}:X"),
    "element type": lambda f, m: _with_element(f, "type", f"{m}:Y"),
}


@pytest.mark.parametrize("where", sorted(CRAFTS))
def test_an_imported_artifact_cannot_import_a_module_it_names(
    plain_export: bytes, tmp_path: Path, evil: tuple[str, Path], where: str
) -> None:
    module, marker = evil
    frames = CRAFTS[where](read_frames(plain_export), module)
    name = "mixed" if where.startswith("element") else "cfg"
    with _import(tmp_path, frames) as dst:
        with pytest.raises(MaterializerError) as e:
            dst.load_artifact(name)
        msg = str(e.value)
        assert f"{module}:" in msg and "untrusted" in msg and "allow(" in msg
        assert f"{name}:1" in msg
        assert not marker.exists(), "the module named by the stream was imported"
        assert module not in sys.modules


def test_allowed_or_trusted_classes_import_as_before(
    plain_export: bytes, tmp_path: Path, evil: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    module, marker = evil
    frames = CRAFTS["materializer"](read_frames(plain_export), module)

    def forget() -> None:  # as if in a new process
        marker.unlink()
        sys.modules.pop(module)

    with registry.temporary_registrations(), _import(tmp_path, frames) as dst:
        monkeypatch.setenv("ARTLEDGER_ALLOW_CLASSES", f"other:Thing, {module}:X")
        assert dst.load_artifact("cfg") == "evil loaded"
        assert marker.exists()
        monkeypatch.delenv("ARTLEDGER_ALLOW_CLASSES")
    forget()
    with registry.temporary_registrations(), _import(tmp_path, frames) as dst:
        with pytest.raises(MaterializerError):
            dst.load_artifact("cfg")
        allow(f"{module}:X")
        assert dst.load_artifact("cfg") == "evil loaded"
    forget()
    with registry.temporary_registrations():
        with _import(tmp_path, frames) as dst, pytest.raises(MaterializerError):
            dst.load_artifact("cfg")  # allow() was undone with the registrations
        with _import(tmp_path, frames, trust_pickles=True) as dst:  # the operator vouches
            assert dst.load_artifact("cfg") == "evil loaded"
            assert marker.exists()


FRESH_PROCESS = """
import json, sys
from engine import Store, MaterializerError
stream, dst_path, local = sys.argv[1], sys.argv[2], sys.argv[3]
out = {}
with Store.open(dst_path) as d:
    Store.import_(stream, into=d)
    for a in d.list_artifacts():
        try:
            out[a.name] = repr(a.load())
        except MaterializerError as e:
            out[a.name] = "refused: " + str(e)
with Store.open(local) as s:  # trusted: imports the module it names, as before
    out["local"] = s.load_artifact("thing").v
with Store.open(dst_path) as d:  # now the process knows the class
    out["thing after"] = d.load_artifact("thing").v
print(json.dumps(out))
"""


def test_untrusted_builtin_and_numpy_values_load_in_a_fresh_process(tmp_path: Path) -> None:
    """A process that has seen none of the stream's types still loads what the
    built-in materializers wrote, and refuses a user class it has not imported."""
    mod = tmp_path / "mods"
    mod.mkdir()
    (mod / "usermod_fresh.py").write_text(
        textwrap.dedent(
            """
            from materializers import BaseMaterializer

            class Thing:
                def __init__(self, v):
                    self.v = v

            class ThingMaterializer(BaseMaterializer):
                ASSOCIATED_TYPES = (Thing,)

                def save(self, data):
                    with self.open("v.txt", "w") as f:
                        f.write(str(data.v))

                def load(self, data_type):
                    with self.open("v.txt") as f:
                        return data_type(int(f.read()))
            """
        )
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(mod), str(ROOT)])}
    make = textwrap.dedent(
        f"""
        import numpy as np
        from engine import Store
        from usermod_fresh import Thing
        with Store.open({str(tmp_path / "src")!r}) as s:
            s.save_artifact(np.arange(5), "array")
            s.save_artifact(np.float32(1.5), "scalar")
            s.save_artifact({{"a": (1, 2), "b": b"x"}}, "plain")
            s.save_artifact([np.arange(2), {{"k": np.ones(1)}}], "mixed")
            s.save_artifact(Thing(7), "thing")
            s.export({str(tmp_path / "x.alx")!r})
        """
    )
    subprocess.run([sys.executable, "-c", make], check=True, env=env, timeout=120)
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            FRESH_PROCESS,
            str(tmp_path / "x.alx"),
            str(tmp_path / "dst"),
            str(tmp_path / "src"),
        ],
        check=True,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    import json

    out = json.loads(done.stdout)
    assert out["array"] == "array([0, 1, 2, 3, 4])"
    assert out["scalar"] in ("np.float32(1.5)", "1.5")
    assert out["plain"] == "{'a': (1, 2), 'b': b'x'}"
    assert out["mixed"] == "[array([0, 1]), {'k': array([1.])}]"
    assert (
        out["thing"].startswith("refused: ") and "usermod_fresh:ThingMaterializer" in out["thing"]
    ), out["thing"]
    assert out["local"] == 7
    assert out["thing after"] == 7


# -- timestamps ---------------------------------------------------------------------------


def _stamp(frames: Frames, ts: int) -> Frames:
    return edit_artifact(frames, "cfg", lambda env: env.__setitem__("ts", ts))


def test_an_event_from_the_far_future_is_refused(plain_export: bytes, tmp_path: Path) -> None:
    path = tmp_path / "future.alx"
    path.write_bytes(build_stream(_stamp(read_frames(plain_export), 2**63 - 1)))
    with Store.open(tmp_path / "dst") as dst:
        dst.save_artifact(1, "mine")
        before = _state(dst)
        with pytest.raises(ImportValidationError) as e:
            Store.import_(path, into=dst)
        msg = str(e.value)
        assert "event 1 of the stream (artifact.written)" in msg and "minutes" in msg
        assert _state(dst) == before
        assert [a.name for a in dst.as_of(dt.datetime.now()).list_artifacts()] == ["mine"]


def test_timestamps_never_decrease_after_an_import_stamped_ahead(
    plain_export: bytes, tmp_path: Path
) -> None:
    """An import stamped a minute ahead (within the allowed skew) is kept; later
    local writes are stamped no earlier, so time order holds along the log."""
    ahead = time.time_ns() + 60 * 10**9
    frames = read_frames(plain_export)
    frames = [(k, pack({**unpack(p), "ts": ahead}) if k == b"E" else p) for k, p in frames]
    with _import(tmp_path, frames) as dst:
        dst.save_artifact(1, "after")
        stamps = [e.ts for e in dst.events(2)]
        assert stamps == sorted(stamps) and stamps[-1] >= ahead
        later = dt.datetime.fromtimestamp((ahead + 10**9) / 1e9)
        assert {a.name for a in dst.as_of(later).list_artifacts()} == {"cfg", "mixed", "after"}
        assert dst.as_of(dt.datetime.now()).list_artifacts() == []


def _raw_append(store: Store, records: list[tuple[str, dict[str, Any], int]]) -> None:
    """Append events stamped exactly as given, chain-valid, as an older artledger
    (which kept no time order) could have written them."""

    def fn(txn: Txn) -> None:
        seq = store.ledger.log.head(txn)
        prev = store.ledger.log.head_hash(txn)
        for etype, data, ts in records:
            seq += 1
            raw = pack({"type": etype, "v": 1, "ts": ts, "data": data, "prev": prev})
            txn.put("events", seq_key(seq), raw)
            prev = chain(prev, raw)
            apply(txn, next(store.ledger.log.read(txn, seq, seq + 1)))
        txn.put("meta", b"head_seq", seq_key(seq))
        txn.put("meta", b"head_hash", prev)
        txn.delete("meta", b"ts_order")

    store.ledger.kv.write(fn)


def _written(store: Store, name: str) -> dict[str, Any]:
    data = dict(store.get_artifact("seed").record())
    for key in ("seq", "ts", "deleted", "untrusted"):
        data.pop(key, None)
    return {**data, "id": uuid.uuid4().hex[:16], "name": name, "version": 1}


def test_as_of_a_time_on_an_old_log_out_of_time_order(tmp_path: Path) -> None:
    """An old log whose clock stepped back: the view at T is the longest prefix
    stamped no later than T, never one that holds an event stamped after T."""
    with Store.open(tmp_path / "s") as s:
        s.save_artifact("seed", "seed")
        t0 = next(s.events(s.head)).ts
        sec = 10**9
        stamps = [("ahead", t0 + 100 * sec)] + [(f"a{i}", t0 + i * sec) for i in range(2, 8)]
        _raw_append(s, [("artifact.written", _written(s, n), ts) for n, ts in stamps])
        at = dt.datetime.fromtimestamp((t0 + 5.5 * sec) / 1e9)
        assert [a.name for a in s.as_of(at).list_artifacts()] == ["seed"]
        late = dt.datetime.fromtimestamp((t0 + 101 * sec) / 1e9)
        assert len(s.as_of(late).list_artifacts()) == 8
        assert s.verify().ok


def test_as_of_a_time_on_an_old_ordered_log_is_checked_once(tmp_path: Path) -> None:
    with Store.open(tmp_path / "s") as s:
        s.save_artifact("seed", "seed")
        t0 = next(s.events(s.head)).ts
        _raw_append(
            s, [("artifact.written", _written(s, f"a{i}"), t0 + i * 10**9) for i in range(1, 6)]
        )
        txn = s.ledger.kv.read()
        assert txn.get("meta", b"ts_order") is None
        s.ledger.kv.end_read(txn)
        at = dt.datetime.fromtimestamp((t0 + 3.5 * 10**9) / 1e9)
        assert [a.name for a in s.as_of(at).list_artifacts()] == ["seed", "a1", "a2", "a3"]
        txn = s.ledger.kv.read()
        assert s.ledger.log.ts_order(txn)[1] == s.head  # known ordered: binary search from now on
        s.ledger.kv.end_read(txn)
        s.save_artifact(1, "more")
        assert [a.name for a in s.as_of(at).list_artifacts()] == ["seed", "a1", "a2", "a3"]


# -- import amplification ---------------------------------------------------------------


class Named:
    def __init__(self, name: str, data: bytes, repeat: int = 1) -> None:
        self.name, self.data, self.repeat = name, data, repeat


class NamedMaterializer(BaseMaterializer):
    """One file, named after the value, holding its data ``repeat`` times."""

    ASSOCIATED_TYPES = (Named,)

    def save(self, data: Named) -> None:
        with self.open(data.name + ".bin", "wb") as f:
            for _ in range(data.repeat):
                f.write(data.data)

    def load(self, data_type: type) -> Any:
        (name,) = self.files.names()
        with self.open(name, "rb") as f:
            return f.read()


def _count_digests(store: Store, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A counter of the destination's seeded chunk hashing (the chunk write path)."""
    calls: list[int] = []
    real = store.ledger.chunks.digest

    def counting(data: Any) -> bytes:
        calls.append(len(memoryview(data)))
        return real(data)

    monkeypatch.setattr(store.ledger.chunks, "digest", counting)
    return calls


K = 200
CHUNK = 4 << 20


def test_one_chunk_referenced_by_many_artifacts_is_written_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = os.urandom(CHUNK)
    with Store.open(tmp_path / "src") as src:
        for i in range(K):
            src.save_artifact(Named(f"f{i}", data), f"a{i}")
        src.export(tmp_path / "k.alx")
    assert (tmp_path / "k.alx").stat().st_size < CHUNK + K * 2048
    with Store.open(tmp_path / "dst") as dst:
        digests = _count_digests(dst, monkeypatch)
        report = Store.import_(tmp_path / "k.alx", into=dst)
        assert report.artifacts == K and report.chunks_written == 1
        assert len(digests) == 1, f"the chunk was hashed for writing {len(digests)} times"
        assert dst.load_artifact(f"a{K - 1}") == data
        assert dst.verify().ok


def test_one_chunk_repeated_in_a_file_is_written_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = os.urandom(CHUNK)
    with Store.open(tmp_path / "src") as src:
        src.save_artifact(Named("big", data, repeat=K), "big")
        src.save_artifact(Named("other", data, repeat=3), "other")
        src.export(tmp_path / "k.alx")
    with Store.open(tmp_path / "dst") as dst:
        digests = _count_digests(dst, monkeypatch)
        Store.import_(tmp_path / "k.alx", into=dst)
        assert len(digests) == 1
        art = dst.get_artifact("big")
        assert art.size == K * CHUNK and len(set(art.record()["files"][0][3])) == 1
        assert dst.load_artifact("other") == data * 3


def test_hashing_is_bounded_by_the_stream_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = os.urandom(64 << 10)
    with Store.open(tmp_path / "src", chunk_size=64 << 10) as src:
        src.save_artifact(Named("big", data, repeat=64), "big")
        src.export(tmp_path / "k.alx")
    size = (tmp_path / "k.alx").stat().st_size
    monkeypatch.setattr(engine.ops.stream_scan, "HASH_BUDGET_BASE", 0)
    monkeypatch.setattr(engine.ops.stream_scan, "HASH_BUDGET_PER_BYTE", 32)  # < 64 x 64 KiB
    with Store.open(tmp_path / "dst") as dst:
        before = _state(dst)
        with pytest.raises(ImportValidationError, match="amplification") as e:
            Store.import_(tmp_path / "k.alx", into=dst)
        assert str(32 * size) in str(e.value)
        assert _state(dst) == before
        monkeypatch.setattr(engine.ops.stream_scan, "HASH_BUDGET_PER_BYTE", 80)
        Store.import_(tmp_path / "k.alx", into=dst)
        assert dst.load_artifact("big") == data * 64


@pytest.mark.parametrize(("src_chunk", "dst_chunk"), [(64 << 10, 256 << 10), (256 << 10, 96 << 10)])
def test_rechunking_repeated_chunks_across_chunk_sizes(
    tmp_path: Path, src_chunk: int, dst_chunk: int
) -> None:
    data = os.urandom(100_000)
    tail = os.urandom(12_345)
    with Store.open(tmp_path / "src", chunk_size=src_chunk) as src:
        src.save_artifact(Named("x", data + tail, repeat=7), "x")
        src.save_artifact(Named("y", data, repeat=20), "y")
        src.save_artifact(Named("z", b""), "z")
        src.export(tmp_path / "k.alx")
    with Store.open(tmp_path / "dst", chunk_size=dst_chunk) as dst:
        Store.import_(tmp_path / "k.alx", into=dst)
        assert dst.load_artifact("x") == (data + tail) * 7
        assert dst.load_artifact("y") == data * 20
        assert dst.load_artifact("z") == b""
        assert dst.verify().ok


# -- numbers out of range, file-name clashes -------------------------------------------


@pytest.mark.parametrize("version", [2**64 - 1, 2**63, 2**63 - 1])
def test_an_out_of_range_version_is_refused_on_import(
    plain_export: bytes, tmp_path: Path, version: int
) -> None:
    frames = edit_artifact(
        read_frames(plain_export), "cfg", lambda env: env["data"].__setitem__("version", version)
    )
    path = tmp_path / "v.alx"
    path.write_bytes(build_stream(frames))
    with Store.open(tmp_path / "dst") as dst:
        before = _state(dst)
        with pytest.raises(ImportValidationError) as e:
            Store.import_(path, into=dst)
        assert "event 1 of the stream" in str(e.value) and str(version) in str(e.value)
        assert _state(dst) == before


def test_a_version_shifted_out_of_range_is_refused(plain_export: bytes, tmp_path: Path) -> None:
    top = 2**63 - 2
    frames = edit_artifact(
        read_frames(plain_export), "cfg", lambda env: env["data"].__setitem__("version", top)
    )
    path = tmp_path / "v.alx"
    path.write_bytes(build_stream(frames))
    with Store.open(tmp_path / "dst") as dst:
        dst.save_artifact(0, "cfg")  # the stream's versions of cfg shift by one
        before = _state(dst)
        with pytest.raises(ImportValidationError, match=f"cfg:{top} would become"):
            Store.import_(path, into=dst)
        assert _state(dst) == before
    with Store.open(tmp_path / "dst2") as dst:
        Store.import_(path, into=dst)
        assert dst.get_artifact("cfg").version == top


def test_an_out_of_range_version_is_refused_on_save(store: Store) -> None:
    for bad in (2**64 - 1, 2**63 - 1, str(2**64)):
        with pytest.raises(InvalidArgumentError, match="out of range"):
            store.save_artifact(1, "x", version=bad)
    assert store.save_artifact(1, "x", version=2**63 - 2).version == 2**63 - 2
    before = _state(store)
    with pytest.raises(InvalidArgumentError, match="integer versions"):
        store.save_artifact(2, "x")  # the next integer would be out of range
    assert _state(store) == before
    assert store.save_artifact(2, "x", version="next").version == "next"


class Tree:
    pass


class TreeMaterializer(BaseMaterializer):
    """Writes a file ``a`` and a file ``a/b``: no directory tree can hold both."""

    ASSOCIATED_TYPES = (Tree,)

    def save(self, data: Tree) -> None:
        with self.open("a", "wb") as f:
            f.write(b"1")
        with self.open("a/b", "wb") as f:
            f.write(b"2")

    def load(self, data_type: type) -> Any:
        return Tree()


def test_a_file_that_is_also_a_directory_is_refused_on_save(store: Store) -> None:
    before = _state(store)
    with pytest.raises(MaterializerError, match="'a' is also the directory of 'a/b'"):
        store.save_artifact(Tree(), "tree")
    assert _state(store) == before


def test_export_files_of_an_old_artifact_with_a_name_clash(store: Store, tmp_path: Path) -> None:
    """Stored before saves refused such names (forged here through the commit path):
    ``export_files`` says why it cannot, and writes nothing."""
    one = store.save_artifact(b"1", "one").record()["files"][0]
    two = store.save_artifact(b"2", "two").record()["files"][0]
    data = {**store.get_artifact("one").record()}
    for key in ("seq", "ts", "deleted"):
        data.pop(key, None)
    files = [["a", *one[1:]], ["a/b", *two[1:]]]
    data.update(
        id=uuid.uuid4().hex[:16],
        name="tree",
        version=1,
        files=files,
        content_hash=content_hash([FileEntry.from_record(f) for f in files]),
    )
    store.ledger.commit(lambda txn: [("artifact.written", data)])
    out = tmp_path / "out"
    with pytest.raises(MaterializerError, match="cannot be written as a directory tree") as e:
        store.get_artifact("tree").export_files(out)
    assert "'a'" in str(e.value) and "'a/b'" in str(e.value) and "tree:1" in str(e.value)
    assert not out.exists() or not any(out.iterdir())


def test_a_stream_with_a_name_clash_is_refused(plain_export: bytes, tmp_path: Path) -> None:
    def clash(env: dict[str, Any]) -> None:  # an empty file under the element's data.npy
        files = env["data"]["files"]
        files.append(["elements/0/data.npy/x", 0, files[0][2], []])

    frames = edit_artifact(read_frames(plain_export), "mixed", clash)
    path = tmp_path / "c.alx"
    path.write_bytes(build_stream(frames))
    with Store.open(tmp_path / "dst") as dst, pytest.raises(ImportValidationError) as e:
        Store.import_(path, into=dst)
    assert "'elements/0/data.npy' and a file 'elements/0/data.npy/x' under it" in str(e.value)
