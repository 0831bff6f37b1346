"""scipy.sparse CSR/CSC/COO through the real store: exact components, no pickle."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp

from engine import Store
from materializers import materializer_for
from materializers.sparse import SparseMaterializer

ROOT = Path(__file__).resolve().parent.parent


def _matrices() -> list[Any]:
    rng = np.random.default_rng(5)
    base = sp.random(60, 30, density=0.1, format="csr", dtype=np.float32, random_state=rng)
    wide = sp.csr_matrix(base, dtype=np.float64)
    wide.indices, wide.indptr = wide.indices.astype(np.int64), wide.indptr.astype(np.int64)
    unsorted = sp.coo_matrix(
        (np.array([3, 1, 2, 0], np.int16), (np.array([2, 0, 2, 1]), np.array([1, 0, 1, 3]))),
        shape=(3, 4),
    )  # duplicates, explicit zero, unsorted: kept as they are
    return [
        base,
        base.tocsc(),
        base.tocoo(),
        sp.csr_array(base),
        sp.csc_array(base.astype(np.complex128)),
        sp.coo_array(np.arange(7.0)),  # 1-d
        wide,
        unsorted,
        sp.csr_matrix((0, 5), dtype=np.int8),
        sp.csr_matrix(np.eye(4, dtype=bool)),
    ]


def _components(m: Any) -> list[np.ndarray]:
    if m.format == "coo":
        return [m.data, *m.coords]
    return [m.data, m.indices, m.indptr]


def _assert_same(got: Any, want: Any) -> None:
    assert type(got) is type(want)
    assert got.shape == want.shape and got.format == want.format
    for a, b in zip(_components(got), _components(want), strict=True):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("index", range(len(_matrices())))
def test_roundtrip(store: Store, index: int) -> None:
    m = _matrices()[index]
    assert materializer_for(type(m)) is SparseMaterializer  # no fallback warning
    art = store.save_artifact(m, "m")
    _assert_same(art.load(), m)
    assert art.materializer == "materializers.sparse:SparseMaterializer"
    assert art.artifact_type == "data"
    names = [f[0] for f in art.record()["files"]]
    assert "artifact.pkl" not in names and "sparse.json" in names
    meta = art.metadata
    assert meta["format"] == m.format and meta["shape"] == list(m.shape)
    assert meta["nnz"] == m.nnz and meta["dtype"] == str(m.dtype)
    kind = {name: k for name, k, _ in art.visualizations}
    assert kind == {"summary.md": "markdown"}


def test_metadata_and_summary(store: Store) -> None:
    m = sp.csr_matrix(np.array([[0, 2.5, 0], [0, 0, 0], [1, 0, 0]]))
    art = store.save_artifact(m, "m")
    assert art.metadata["density"] == pytest.approx(2 / 9)
    assert art.metadata["bytes"] == m.data.nbytes + m.indices.nbytes + m.indptr.nbytes
    summary = art.visualizations[0][2].decode()
    assert "| nnz | `2` |" in summary and "| (0, 1) | `2.5` |" in summary


def test_shape_is_content(store: Store) -> None:
    a = store.save_artifact(sp.csr_matrix((2, 3)), "a")
    b = store.save_artifact(sp.csr_matrix((2, 4)), "b")
    assert a.content_hash != b.content_hash


def test_other_formats_are_not_claimed() -> None:
    with pytest.warns(UserWarning, match="No materializer"):
        materializer_for(sp.lil_matrix)


def test_export_import_stays_trusted(tmp_path: Path) -> None:
    m = _matrices()[0]
    with Store.open(tmp_path / "src") as src:
        src.save_artifact(m, "m")
        src.export(tmp_path / "s.alx")
    with Store.open(tmp_path / "dst") as dst:
        Store.import_(tmp_path / "s.alx", into=dst)
        assert dst.get_artifact("m").record().get("untrusted")
        _assert_same(dst.load_artifact("m"), m)


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )


def test_scipy_is_imported_only_when_used(tmp_path: Path) -> None:
    out = _run(
        f"""
        import sys
        import engine, materializers
        assert not {{"scipy", "sklearn", "skops", "torch"}} & set(sys.modules), sys.modules
        with engine.Store.open({str(tmp_path / "s")!r}) as s:
            s.save_artifact([1, 2], "x")
            s.load_artifact("x")
        assert "scipy" not in sys.modules
        """
    )
    assert out.returncode == 0, out.stderr


def test_missing_scipy_names_the_extra(tmp_path: Path) -> None:
    with Store.open(tmp_path / "s") as s:
        s.save_artifact(sp.csr_matrix(np.eye(2)), "m")
    out = _run(
        f"""
        import sys
        sys.modules["scipy"] = None  # as if scipy were not installed
        import engine
        with engine.Store.open({str(tmp_path / "s")!r}) as s:
            try:
                s.load_artifact("m")
            except engine.MaterializerError as e:
                print(e)
        """
    )
    assert out.returncode == 0, out.stderr
    assert "pip install 'artledger[sparse]'" in out.stdout
