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
