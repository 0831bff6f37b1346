"""``artledger demo``: a small training pipeline, run twice on a store.

The first run executes every step; the second is served from the cache. The
demo prints what ran or was cached and why, what was stored (versions, sizes,
logical against stored bytes) and the lineage of the final artifact.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import numpy as np

from engine.cli.render import fmt_size, fmt_status, lineage_tree
from engine.pipelines.definition import pipeline, step

if TYPE_CHECKING:
    from rich.console import Console

    from engine.query.models import Run
    from engine.store import Store


@step
def load_data(rows: int = 50_000, features: int = 8) -> np.ndarray:
    """A reproducible feature matrix (rows x features float64: a few MB)."""
    rng = np.random.default_rng(7)
    return rng.normal(loc=3.0, scale=2.0, size=(rows, features))


@step
def normalise(data: np.ndarray, method: str = "zscore") -> np.ndarray:
    if method == "minmax":
        lo, hi = data.min(axis=0), data.max(axis=0)
        out: np.ndarray = (data - lo) / (hi - lo)
        return out
    scaled: np.ndarray = (data - data.mean(axis=0)) / data.std(axis=0)
    return scaled


@step
def train(data: np.ndarray, l2: float = 0.1) -> Annotated[np.ndarray, "demo.model"]:
    """Ridge regression of the last column on the others."""
    x, y = data[:, :-1], data[:, -1]
    return np.linalg.solve(x.T @ x + l2 * np.eye(x.shape[1]), x.T @ y)


@step
def evaluate(model: np.ndarray, data: np.ndarray) -> Annotated[dict[str, float], "demo.metrics"]:
    x, y = data[:, :-1], data[:, -1]
    residual = y - x @ model
    return {
        "mse": float(np.mean(residual**2)),
        "r2": float(1 - residual.var() / y.var()),
        "weights_norm": float(np.linalg.norm(model)),
    }


@pipeline(name="demo")
def demo_pipeline(method: str = "zscore", l2: float = 0.1) -> None:
    data = normalise(load_data(), method=method)
    model = train(data, l2=l2)
    evaluate(model, data)


def _run_table(store: Store, run: Run, title: str) -> Any:
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    table.add_column("step")
    table.add_column("status")
    table.add_column("why")
    table.add_column("output")
    for inv, sr in run.steps.items():
        if sr.status == "cached":
            why = f"cache hit (reuses step run {sr.source})"
        else:
            why = "; ".join(store.explain(sr)) or ""
        outs = ", ".join(f"{a.name}:{a.version}" for a in sr.outputs.values())
        table.add_row(inv, fmt_status(sr.status), why, outs)
    return table


def run_demo(store: Store, console: Console) -> None:
    """Run the demo pipeline twice on ``store`` and show what happened."""
    from rich.table import Table

    console.rule("[bold]artledger demo")
    first = store.run(demo_pipeline)
    console.print(_run_table(store, first, f"run 1 ({first.id}): {first.status}"))
    second = store.run(demo_pipeline)
    console.print(_run_table(store, second, f"run 2 ({second.id}): {second.status}"))
    metrics = second.steps["evaluate"].output.load()
    console.print("metrics: " + ", ".join(f"{k} = {v:.4f}" for k, v in metrics.items()))

    table = Table(title="what was stored", title_justify="left")
    for col in ("artifact", "version", "type", "size", "content hash"):
        table.add_column(col)
    names = {a.name for sr in second.steps.values() for a in sr.outputs.values()}
    for art in store.list_artifacts():
        if art.name in names:
            table.add_row(
                art.name, str(art.version), art.data_type, fmt_size(art.size), art.content_hash[:16]
            )
    console.print(table)
    st = store.stats()
    saved = st["logical_bytes"] - st["stored_bytes"]
    console.print(
        f"store: {st['runs']} runs, {st['artifacts']} artifact versions, {st['chunks']} chunks, "
        f"{st['events']} events; logical {fmt_size(st['logical_bytes'])}, stored "
        f"{fmt_size(st['stored_bytes'])}"
        + (f" ({fmt_size(saved)} saved by dedup and compression)" if saved > 0 else "")
    )

    final = second.steps["evaluate"].output
    console.print(f"\nlineage of {final.name}:{final.version} (upstream):")
    console.print(lineage_tree(store.lineage(final, direction="upstream"), down=False))
