"""Artifact-level API through the store: files, export, visualizations, pickles."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from engine import MaterializerError, Store, UntrustedArtifactError


class Opaque:
    """A type no materializer is registered for (falls back to cloudpickle)."""

    def __init__(self, value: int) -> None:
        self.value = value


class Boom:
    """Unpickling it creates a file: proof that bytes were (not) unpickled."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (Path.touch, (Path(self.path),))


def test_export_files_are_plain_npy(store: Store, tmp_path: Path) -> None:
    arr = np.arange(12, dtype=">i4").reshape(3, 4)
    art = store.save_artifact(arr, "exported")
    assert art.files == ["data.npy"]
    written = art.export_files(tmp_path / "out")
    assert [p.name for p in written] == ["data.npy"]
    back = np.load(tmp_path / "out" / "data.npy")
    assert back.dtype == arr.dtype
    np.testing.assert_array_equal(back, arr)


def test_visualizations_come_back(store: Store) -> None:
    art = store.save_artifact(np.arange(6).reshape(2, 3), "small-array")
    vis = art.visualizations
    kinds = {kind for _, kind, _ in vis}
    assert {"csv", "html"} <= kinds
    csv = next(data for _, kind, data in vis if kind == "csv")
    assert b"5" in csv
    # Visualization files are not part of the artifact's files or content hash.
    assert art.files == ["data.npy"]
    again = store.save_artifact(np.arange(6).reshape(2, 3), "other")
    assert again.content_hash == art.content_hash


def test_dict_of_arrays_is_stored_element_by_element(store: Store) -> None:
    value = {"a": np.ones(3), "b": np.zeros((2, 2), dtype=np.int8), "n": 3}
    art = store.save_artifact(value, "bundle")
    assert not any(f.endswith(".pkl") for f in art.files)
    back = art.load()
    assert set(back) == {"a", "b", "n"}
    assert back["b"].dtype == np.int8 and back["n"] == 3


def test_pickle_fallback_round_trips_and_warns(store: Store) -> None:
    with pytest.warns(UserWarning, match="Opaque"):
        art = store.save_artifact(Opaque(7), "opaque")
    assert art.materializer.endswith("CloudpickleMaterializer")
    assert art.load().value == 7


def test_unpicklable_object_is_refused_and_nothing_written(store: Store) -> None:
    head = store.head
    with pytest.raises(MaterializerError, match="lock"), pytest.warns(UserWarning):
        store.save_artifact(threading.Lock(), "lock")
    assert store.head == head


def test_replaced_secret_refuses_pickles_before_unpickling(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    with Store.open(tmp_path / "s") as s, pytest.warns(UserWarning):
        s.save_artifact(Boom(str(marker)), "boom")
    marker.unlink(missing_ok=True)
    (tmp_path / "s" / "secret").write_bytes(b"x" * 32)
    with Store.open(tmp_path / "s") as s:
        with pytest.raises(UntrustedArtifactError, match=r"boom:1.*does not match"):
            s.load_artifact("boom")
        assert not marker.exists()
        assert any("secret" in p for p in s.verify().problems)
