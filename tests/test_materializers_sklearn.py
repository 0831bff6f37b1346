"""scikit-learn estimators and pipelines through skops and the real store.

Types skops does not trust need the same explicit trust as a pickle: this
store's signature, an import with ``trust_pickles=True``, or the allow-list.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from sklearn.base import BaseEstimator
from sklearn.cluster import KMeans
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from engine import Store, UntrustedArtifactError
from materializers import materializer_for, registry
from materializers.sklearn import SklearnMaterializer

ROOT = Path(__file__).resolve().parent.parent
RNG = np.random.default_rng(11)
X = RNG.random((80, 4))
Y = (X[:, 0] + X[:, 1] > 1).astype(int)


class Shrink(BaseEstimator):  # type: ignore[misc]
    """A user estimator: skops does not know it."""

    def __init__(self, factor: float = 0.5) -> None:
        self.factor = factor

    def fit(self, x: npt.NDArray[Any], y: Any = None) -> Shrink:
        self.mean_ = np.asarray(x).mean(axis=0)
        return self

    def predict(self, x: npt.NDArray[Any]) -> npt.NDArray[Any]:
        return np.asarray(np.asarray(x) @ self.mean_ * self.factor)


def _estimators() -> dict[str, Any]:
    cat = np.array([["a"], ["b"], ["c"], ["a"]] * 20)
    mixed = np.hstack([X[:, :2].astype(object), cat.astype(object)])
    columns = ColumnTransformer([("num", StandardScaler(), [0, 1]), ("cat", OneHotEncoder(), [2])])
    return {
        "pipeline": make_pipeline(StandardScaler(), LogisticRegression()).fit(X, Y),
        "ridge": Ridge(alpha=0.3).fit(X, X[:, 2]),
        "kmeans": KMeans(n_clusters=3, n_init=2, random_state=0).fit(X),
        "columns": Pipeline([("prep", columns), ("clf", LogisticRegression())]).fit(mixed, Y),
        "unfitted": LogisticRegression(C=0.5),
    }


def _inputs(name: str) -> Any:
    if name == "columns":
        cat = np.array([["a"], ["b"], ["c"], ["a"]] * 20)
        return np.hstack([X[:, :2].astype(object), cat.astype(object)])
    return X


@pytest.mark.parametrize("name", sorted(_estimators()))
def test_roundtrip_predicts_the_same(store: Store, name: str) -> None:
    est = _estimators()[name]
    assert materializer_for(type(est)) is SklearnMaterializer  # no fallback warning
    art = store.save_artifact(est, name)
    got = art.load()
    assert type(got) is type(est)
    assert got.get_params(deep=False).keys() == est.get_params(deep=False).keys()
    if name != "unfitted":
        np.testing.assert_array_equal(got.predict(_inputs(name)), est.predict(_inputs(name)))
    assert art.artifact_type == "model"
    assert [f[0] for f in art.record()["files"]] == ["model.skops"]
    assert "signature" not in art.record()["state"]  # nothing skops distrusts: not signed


def test_metadata_and_visualizations(store: Store) -> None:
    est = _estimators()["pipeline"]
    art = store.save_artifact(est, "p")
    meta = art.metadata
    assert meta["class"] == "sklearn.pipeline:Pipeline"
    assert meta["steps"] == [
        ["standardscaler", "sklearn.preprocessing._data:StandardScaler"],
        ["logisticregression", "sklearn.linear_model._logistic:LogisticRegression"],
    ]
    ridge = store.save_artifact(_estimators()["ridge"], "r").metadata
    assert ridge["params"]["alpha"] == 0.3
    assert ridge["fitted"]["coef_"] == [4] and ridge["fitted"]["n_features_in_"] == 4
    vis = {name: (kind, body) for name, kind, body in art.visualizations}
    assert vis["model.html"][0] == "html" and b"LogisticRegression" in vis["model.html"][1]
    assert vis["summary.md"][0] == "markdown" and b"| memory |" in vis["summary.md"][1]


def test_unknown_types_are_signed_and_load_here(store: Store) -> None:
    forest = RandomForestClassifier(n_estimators=3, random_state=0).fit(X, Y)
    for name, est in (("forest", forest), ("shrink", Shrink(2.0).fit(X))):
        art = store.save_artifact(est, name)
        state = art.record()["state"]
        assert state["signature"] and state["untrusted_types"]
        np.testing.assert_array_equal(art.load().predict(X), est.predict(X))


@pytest.fixture
def stream(tmp_path: Path) -> Path:
    with Store.open(tmp_path / "src") as src:
        src.save_artifact(_estimators()["pipeline"], "pipeline")
        src.save_artifact(Shrink(3.0).fit(X), "shrink")
        src.export(tmp_path / "s.alx")
    return tmp_path / "s.alx"


def test_import_keeps_safe_models_trusted_and_refuses_unknown_types(
    stream: Path, tmp_path: Path
) -> None:
    with Store.open(tmp_path / "dst") as dst:
        Store.import_(stream, into=dst)
        got = dst.load_artifact("pipeline")  # names nothing skops distrusts
        np.testing.assert_array_equal(got.predict(X), _estimators()["pipeline"].predict(X))
        topic = f"{Shrink.__module__}:Shrink"
        with pytest.raises(UntrustedArtifactError) as err:
            dst.load_artifact("shrink")
        message = str(err.value)
        assert f"`{Shrink.__module__}.Shrink`" in message
        assert "trust_pickles=True" in message and f"allow('{topic}')" in message
        with registry.temporary_registrations():
            registry.allow(topic)
            assert dst.load_artifact("shrink").factor == 3.0


def test_import_with_trust_signs_again(stream: Path, tmp_path: Path) -> None:
    with Store.open(tmp_path / "dst") as dst:
        report = Store.import_(stream, into=dst, trust_pickles=True)
        assert report.resigned == 1
        np.testing.assert_array_equal(
            dst.load_artifact("shrink").predict(X), Shrink(3.0).fit(X).predict(X)
        )


def test_missing_sklearn_names_the_extra(tmp_path: Path) -> None:
    with Store.open(tmp_path / "s") as s:
        s.save_artifact(Ridge().fit(X, Y), "m")
    code = f"""
        import sys
        sys.modules["skops"] = None  # as if skops were not installed
        import engine
        with engine.Store.open({str(tmp_path / "s")!r}) as s:
            try:
                s.load_artifact("m")
            except engine.MaterializerError as e:
                print(e)
        """
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0, out.stderr
    assert "pip install 'artledger[sklearn]'" in out.stdout
