"""Make ``tests/fixtures/zenml/``: a real ZenML store, for ``tests/test_zenml_import.py``.

Run it with a Python that has ZenML installed (never the project's own
environment: ZenML pins many packages), pointing ``ZENML_CONFIG_PATH`` at a
fresh directory::

    python -m venv /tmp/zenv && /tmp/zenv/bin/pip install "zenml[local]" pandas numpy pyarrow
    rm -rf /tmp/zenml-fixture
    ZENML_CONFIG_PATH=/tmp/zenml-fixture /tmp/zenv/bin/python tools/make_zenml_fixture.py
    python tools/make_zenml_fixture.py --copy /tmp/zenml-fixture tests/fixtures/zenml

(the last line, with any Python, copies the config directory into the
repository, keeping only what an import reads: ``config.yaml``, the database
and the local artifact store). The pipelines run on ZenML's default local
stack and cover: numpy arrays, builtins (int, float, str, list, dict), a
pandas DataFrame, a pickled custom object (cloudpickle), artifact tags and
metadata, run tags, a named version ("golden"), an artifact saved outside any
step, a fully cached second run, a run with the cache disabled (the same
bytes written again), and a failed run.

The committed fixture was made by ZenML 0.98.0; its database schema
(``alembic_version``) is 0.98.0, the one ``engine.ops.zenml_db`` knows.
"""

import os
import shutil
import sqlite3
import sys
from pathlib import Path

KEEP_DB = "local_stores/default_zen_store/zenml.db"


def scrub(db: Path) -> None:
    """Drop what a fixture should not carry: the local user's password hash."""
    con = sqlite3.connect(db)
    try:
        con.execute("UPDATE user SET password = NULL, activation_token = NULL")
        con.commit()
        con.execute("VACUUM")
    finally:
        con.close()


def copy(src: Path, dst: Path) -> None:
    """Copy what an import reads from the config directory ``src`` to ``dst``."""
    if dst.exists():
        shutil.rmtree(dst)
    dst.mkdir(parents=True)
    shutil.copy2(src / "config.yaml", dst / "config.yaml")
    (dst / KEEP_DB).parent.mkdir(parents=True)
    con = sqlite3.connect(src / KEEP_DB)
    try:
        con.execute("VACUUM INTO ?", (str(dst / KEEP_DB),))
    finally:
        con.close()
    scrub(dst / KEEP_DB)
    for d in sorted((src / "local_stores").iterdir()):
        if d.is_dir() and d.name != "default_zen_store":
            # step logs are not imported
            shutil.copytree(d, dst / "local_stores" / d.name, ignore=shutil.ignore_patterns("logs"))
    total = sum(p.stat().st_size for p in dst.rglob("*") if p.is_file())
    print(f"copied to {dst}: {total / 2**20:.2f} MiB")


if __name__ == "__main__" and sys.argv[1:2] == ["--copy"]:
    copy(Path(sys.argv[2]), Path(sys.argv[3]))
    sys.exit(0)
if not os.environ.get("ZENML_CONFIG_PATH"):
    sys.exit("set ZENML_CONFIG_PATH to a fresh directory")
os.environ.setdefault("ZENML_ANALYTICS_OPT_IN", "false")
os.environ.setdefault("AUTO_OPEN_DASHBOARD", "false")

# ZenML resolves step annotations at run time and finds steps by module
# attribute: both need module-level definitions without postponed annotations.
from typing import Annotated  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from zenml import ArtifactConfig, log_metadata, pipeline, save_artifact, step  # noqa: E402


class Point:
    """A custom class with no ZenML materializer: saved by cloudpickle."""

    def __init__(self, x: float, y: float) -> None:
        self.x, self.y = x, y

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Point) and (self.x, self.y) == (other.x, other.y)

    def __hash__(self) -> int:
        return hash((self.x, self.y))


@step
def make_features(
    n: int,
) -> Annotated[np.ndarray, ArtifactConfig(name="features", tags=["raw", "numeric"])]:
    return np.arange(n, dtype=np.float64).reshape(-1, 4) * 1.5


@step
def make_config() -> Annotated[dict, ArtifactConfig(name="config")]:
    return {"lr": 0.1, "layers": [64, 32], "name": "demo", "dropout": None}


@step
def summarize(
    features: np.ndarray, config: dict
) -> tuple[
    Annotated[float, ArtifactConfig(name="mean")],
    Annotated[int, "count"],
    Annotated[str, "summary"],
    Annotated[list, "shape"],
]:
    mean = float(features.mean())
    log_metadata(
        metadata={"accuracy": 0.93, "epochs": 3}, infer_artifact=True, artifact_name="mean"
    )
    summary = f"{config['name']}: mean {mean:.3f}"
    return mean, int(features.size), summary, list(features.shape)


@pipeline(tags=["numbers"])
def numbers(n: int = 400) -> None:
    summarize(make_features(n), make_config())


@step
def make_frame() -> Annotated[pd.DataFrame, ArtifactConfig(name="frame", tags=["table"])]:
    return pd.DataFrame(
        {
            "city": ["Oslo", "Lima", "Pune", "Kobe"] * 25,
            "temp": np.linspace(-5.0, 30.0, 100),
            "rank": np.arange(100, dtype=np.int64),
        }
    )


@step
def make_point() -> Annotated[Point, ArtifactConfig(name="point")]:
    return Point(1.5, -2.0)


@step
def frame_stats(frame: pd.DataFrame, point: Point) -> Annotated[dict, "frame_stats"]:
    return {"rows": len(frame), "max_temp": float(frame["temp"].max()), "x": point.x}


@pipeline(tags=["tables"])
def tables() -> None:
    frame_stats(make_frame(), make_point())


@step
def boom(features: np.ndarray) -> Annotated[int, "never"]:
    raise RuntimeError("this step fails on purpose")


@pipeline
def failing() -> None:
    boom(make_features(8))


if __name__ == "__main__":
    numbers()  # computes every step
    numbers()  # every step cached
    numbers.with_options(enable_cache=False)()  # the same bytes written again
    tables()
    try:
        failing()
    except Exception as e:  # the failure is the point
        print("failing pipeline failed as intended:", type(e).__name__, e)
    save_artifact(
        np.array([1, 2, 3], dtype=np.int32), name="golden_ref", version="golden", tags=["reference"]
    )
