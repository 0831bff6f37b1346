"""Scenario: models and sparse matrices through their materializers."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import (
    Context,
    MiB,
    Result,
    Row,
    fsync_path,
    median_time,
    new_path,
    pickle_load,
    pickle_save,
)

TITLE = "Models and sparse matrices"
ABOUT = (
    "A torch MLP (10 square float32 Linear layers) saved with `save_artifact` as "
    "safetensors (fresh store per repeat) and loaded back, against "
    "`safetensors.torch.save_file` + fsync / `load_file` + `load_state_dict` into a new "
    "model, and "
    "`torch.save` + fsync; the same model saved again after one layer changed "
    "(new stored bytes); a scipy CSR matrix against `scipy.sparse.save_npz` "
    "(uncompressed) + fsync / `load_npz`; a scikit-learn random forest (skops) "
    "against pickle + fsync. torch rows are skipped when torch is not installed."
)
PARAMS: dict[str, dict[str, Any]] = {
    "tiny": {"model_mib": 2, "nnz": 20_000, "trees": 5},
    "small": {"model_mib": 64, "nnz": 2_000_000, "trees": 50},
    "full": {"model_mib": 256, "nnz": 8_000_000, "trees": 200},
}


def _fresh(tmp: Path, stores: list[Any]) -> Any:
    from engine import Store

    if stores:
        stores[-1].close()
    stores.append(Store.open(tmp / f"s{len(stores)}"))
    return stores[-1]


def _torch_rows(ctx: Context, res: Result, tmp: Path, model_mib: int) -> None:
    import safetensors.torch as stt
    import torch

    from bench._torch_models import MLP

    MLP.width = int((model_mib * MiB / 4 / 10) ** 0.5)
    torch.manual_seed(0)
    net = MLP()
    state = net.state_dict()
    size = sum(t.numel() * t.element_size() for t in state.values())
    label = f"nn.Module, {size / MiB:.0f} MiB float32"
    ctx.log(f"models: {label}")
    stores: list[Any] = []
    save = median_time(
        lambda s: s.save_artifact(net, "net"), ctx.repeats, lambda: _fresh(tmp, stores)
    )

    def st_save() -> None:
        path = new_path(tmp, "m.safetensors")
        stt.save_file(state, str(path))
        fsync_path(path)

    def torch_save() -> None:
        with open(new_path(tmp, "m.pt"), "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())

    st = median_time(lambda _: st_save(), ctx.repeats)
    pt = median_time(lambda _: torch_save(), ctx.repeats)
    stt.save_file(state, str(tmp / "m.safetensors"))
    store = stores[-1]
    load = median_time(lambda _: store.load_artifact("net"), ctx.repeats)

    def st_load() -> None:
        MLP().load_state_dict(stt.load_file(str(tmp / "m.safetensors")))

    stl = median_time(lambda _: st_load(), ctx.repeats)
    res.add(Row(f"{label}: save", save * 1e3, "ms", st * 1e3, "safetensors save_file+fsync"))
    res.add(Row(f"{label}: save", save * 1e3, "ms", pt * 1e3, "torch.save+fsync"))
    res.add(
        Row(
            f"{label}: load",
            load * 1e3,
            "ms",
            stl * 1e3,
            "MLP()+load_file+load_state_dict",
            note="ours builds the module on the meta device: no random initialisation",
        )
    )
    before = store.stats()["stored_bytes"]
    with torch.no_grad():
        net.layers[7].weight.add_(0.01)
    store.save_artifact(net, "net")
    grown = store.stats()["stored_bytes"] - before
    res.add(
        Row(
            f"{label}: saved again, 1 of 10 layers changed: new stored bytes",
            100 * grown / size,
            "%",
            note="the changed layer is ~10% of the bytes; fixed-size chunks of the rest dedup",
        )
    )
    store.close()


def run(ctx: Context) -> Result:
    import scipy.sparse as sp

    p = PARAMS[ctx.size]
    res = Result("models", TITLE, ABOUT)
    with ctx.tempdir("models") as tmp:
        try:
            import torch  # noqa: F401
        except ImportError:
            res.notes.append("torch is not installed: the nn.Module rows were skipped.")
        else:
            _torch_rows(ctx, res, tmp, p["model_mib"])

        rng = np.random.default_rng(1)
        nnz = p["nnz"]
        shape = (max(1000, nnz // 10), 50_000)
        m = sp.csr_matrix(
            (
                rng.random(nnz, dtype=np.float32),
                (rng.integers(0, shape[0], nnz), rng.integers(0, shape[1], nnz)),
            ),
            shape=shape,
        )
        label = f"csr_matrix, {m.nnz:,} stored entries"
        ctx.log(f"models: {label}")
        stores: list[Any] = []
        save = median_time(
            lambda s: s.save_artifact(m, "m"), ctx.repeats, lambda: _fresh(tmp, stores)
        )

        def npz_save() -> None:
            path = new_path(tmp, "m.npz")
            sp.save_npz(path, m, compressed=False)
            fsync_path(path)

        npz = median_time(lambda _: npz_save(), ctx.repeats)
        sp.save_npz(tmp / "m.npz", m, compressed=False)
        store = stores[-1]
        load = median_time(lambda _: store.load_artifact("m"), ctx.repeats)
        npl = median_time(lambda _: sp.load_npz(tmp / "m.npz"), ctx.repeats)
        res.add(Row(f"{label}: save", save * 1e3, "ms", npz * 1e3, "save_npz+fsync"))
        res.add(Row(f"{label}: load", load * 1e3, "ms", npl * 1e3, "load_npz"))
        store.close()

        from sklearn.ensemble import RandomForestClassifier

        import materializers.sklearn  # noqa: F401  (skops' one-off import, out of the timings)

        x = rng.random((2000, 20))
        forest = RandomForestClassifier(n_estimators=p["trees"], random_state=0, n_jobs=1)
        forest.fit(x, (x[:, 0] > 0.5).astype(int))
        label = f"RandomForestClassifier, {p['trees']} trees (skops)"
        ctx.log(f"models: {label}")
        stores = []
        save = median_time(
            lambda s: s.save_artifact(forest, "rf"), ctx.repeats, lambda: _fresh(tmp, stores)
        )
        psave = median_time(lambda _: pickle_save(forest, new_path(tmp, "rf.pkl")), ctx.repeats)
        pickle_save(forest, tmp / "rf.pkl")
        store = stores[-1]
        load = median_time(lambda _: store.load_artifact("rf"), ctx.repeats)

        pl = median_time(lambda _: pickle_load(tmp / "rf.pkl"), ctx.repeats)
        res.add(Row(f"{label}: save", save * 1e3, "ms", psave * 1e3, "pickle+fsync"))
        res.add(Row(f"{label}: load", load * 1e3, "ms", pl * 1e3, "pickle.load"))
        store.close()
    res.notes.append(
        "Loads are from the page cache. The forest's rows price skops' safe format "
        "(no code runs on load) against pickle, which runs code."
    )
    return res
