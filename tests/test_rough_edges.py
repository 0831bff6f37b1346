"""What a new user ran into: the active store, metadata keys, read-only views."""

from __future__ import annotations

from pathlib import Path

import pytest

import engine
from engine import Store


def test_use_store_as_a_plain_call_and_as_a_block(tmp_path: Path) -> None:
    with Store.open(tmp_path / "a") as a, Store.open(tmp_path / "b") as b:
        outer = engine.use_store(b)
        with outer:  # leaving it undoes everything made active inside, plain calls too
            engine.use_store(a)  # a plain call: active from now on
            engine.save_artifact(1, "x")
            assert engine.active_store() is a
            with engine.use_store(b) as active:
                assert active is b and engine.active_store() is b
                engine.save_artifact(2, "x")
                with engine.use_store(a):
                    assert engine.load_artifact("x") == 1
                assert engine.active_store() is b
            assert engine.active_store() is a  # the block restored the one before
            assert engine.load_artifact("x") == 1
        assert b.load_artifact("x") == 2 and a.list_artifacts("x")[-1].version == 1
    assert not (tmp_path / ".artledger").exists()


def test_user_metadata_never_hides_the_engines(store: Store) -> None:
    art = store.save_artifact([1, 2, 3], "m", metadata={"source": "unit"})
    with pytest.warns(UserWarning, match=r"\['content_hash'\].*engine's"):
        store.log_metadata(art, {"content_hash": "evil", "accuracy": 0.9})
    got = store.get_artifact("m")
    assert got.metadata["content_hash"] == art.content_hash
    assert got.metadata["accuracy"] == 0.9 and got.metadata["source"] == "unit"
    assert got.user_metadata == {"source": "unit", "content_hash": "evil", "accuracy": 0.9}
    store.rebuild()
    assert store.get_artifact("m").metadata["content_hash"] == art.content_hash


def test_as_of_views_load_and_refuse_writes(store: Store) -> None:
    art = store.save_artifact({"v": 1}, "cfg", tags=["prod"])
    mark = store.head
    store.save_artifact({"v": 2}, "cfg", tags=["prod"])
    view = store.as_of(mark)
    assert view.load_artifact("cfg") == {"v": 1}
    assert view.load_artifact("cfg", tag="prod") == {"v": 1}
    assert store.load_artifact("cfg", tag="prod") == {"v": 2}
    for write in (
        lambda: view.tag(art, "x"),
        lambda: view.untag(art, "prod"),
        lambda: view.save_artifact(1, "y"),
        lambda: view.log_metadata(art, {"a": 1}),
        lambda: view.delete_artifact(art),
        lambda: view.trust(art),
    ):
        with pytest.raises(engine.ReadOnlyStoreError, match="read-only view of the past"):
            write()
    assert store.head == mark + 1


def test_a_refused_import_leaves_no_new_store(tmp_path: Path) -> None:
    bad = tmp_path / "bad.alx"
    bad.write_bytes(b"not a stream")
    target = tmp_path / "new" / "store"
    with pytest.raises(engine.ImportValidationError):
        Store.import_(bad, into=target)
    assert not (tmp_path / "new").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(engine.ImportValidationError):
        Store.import_(bad, into=empty)
    assert empty.is_dir() and not any(empty.iterdir())
    with Store.open(tmp_path / "kept") as s:
        s.save_artifact(1, "x")
    with pytest.raises(engine.ImportValidationError):
        Store.import_(bad, into=tmp_path / "kept")
    with Store.open(tmp_path / "kept") as s:
        assert s.load_artifact("x") == 1


def test_a_closed_store_stops_being_active(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARTLEDGER_STORE", str(tmp_path / "default"))
    with Store.open(tmp_path / "outer") as outer, engine.use_store(outer):
        inner = Store.open(tmp_path / "inner")
        engine.use_store(inner)
        assert engine.active_store() is inner
        inner.close()
        assert engine.active_store() is outer
