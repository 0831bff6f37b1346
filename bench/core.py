"""Scenario 1: the storage core's targets (issue "Storage core")."""

from __future__ import annotations

import os
import statistics
from pathlib import Path
from typing import Any

from bench import arrays
from bench.common import (
    Context,
    MiB,
    Result,
    Row,
    gbps,
    latencies,
    median_time,
    new_path,
    pct,
    run_python,
)
from bench.large_arrays import dedup_row, xxh3_seconds

TITLE = "Core targets"
ABOUT = (
    "The storage core's own goals: a new 100 MiB float64 array (incompressible, stored raw) "
    "against np.save+fsync and joblib.dump+fsync; compressible float32 weights against zstd "
    "level 3 on 2 threads over the same bytes (+ write + fsync); the same bytes saved again "
    "(dedup), also against one xxh3-128 pass over them; load against np.load (both from page "
    "cache); small save_artifact latency against joblib.dump and one fsync'd file; peak "
    "RSS saving/loading a large array (fresh process; VmHWM after resetting it, else "
    "ru_maxrss); `import engine` in a fresh interpreter."
)
PARAMS: dict[str, dict[str, Any]] = {
    "tiny": {"mib": 4, "small_saves": 30, "rss_mib": 16, "imports": 2},
    "small": {"mib": 100, "small_saves": 500, "rss_mib": 256, "imports": 5},
    "full": {"mib": 100, "small_saves": 2000, "rss_mib": 1024, "imports": 7},
}

_IMPORT = (
    "import time, json; t = time.perf_counter(); import {mod}; "
    "print(json.dumps({{'s': time.perf_counter() - t}}))"
)


def import_time(module: str, repeats: int) -> float:
    return statistics.median(
        run_python(_IMPORT.format(mod=module))["s"] for _ in range(max(1, repeats))
    )


def _save_fixed(store: Any, array: Any) -> None:
    """A save with the numpy materializer's fixed-size chunks (as before content-defined ones)."""
    from materializers.numpy import NumpyMaterializer

    NumpyMaterializer.CHUNKING = "fixed"
    try:
        store.save_artifact(array, "x")
    finally:
        NumpyMaterializer.CHUNKING = "cdc"


def _write_fsync(path: Path, payload: bytes) -> None:
    """One small file written and made durable: the least a durable save costs."""
    with open(path, "wb") as f:
        f.write(payload)
        f.flush()
        os.fsync(f.fileno())


def run(ctx: Context) -> Result:
    from engine import Store

    p = PARAMS[ctx.size]
    res = Result("core", TITLE, ABOUT)
    nbytes = p["mib"] * MiB
    reps = ctx.repeats
    label = f"{p['mib']} MiB"

    with ctx.tempdir("core") as tmp:
        ctx.log(f"core: {label} random float64")
        a = arrays.random_f64(nbytes)
        stores: list[Any] = []

        def fresh() -> Any:
            s = Store.open(tmp / f"s{len(stores)}")
            stores.append(s)
            return s

        # Interleaved, one repetition of each in turn: this machine's disk speed
        # drifts by 3x within a minute, and the ratios should not.
        ours_t, npy_t, fixed_t = [], [], []
        for _ in range(max(1, reps)):
            ours_t.append(median_time(lambda s: s.save_artifact(a, "x"), 1, fresh))
            npy_t.append(median_time(lambda _: arrays.np_save(a, new_path(tmp, "a.npy")), 1))
            fixed_t.append(median_time(lambda s: _save_fixed(s, a), 1, fresh))
        ours, npy, fixed = (statistics.median(t) for t in (ours_t, npy_t, fixed_t))
        jl = median_time(lambda _: arrays.joblib_dump(a, new_path(tmp, "a.joblib")), reps)
        # The files the load baselines read, written untimed.
        arrays.np_save(a, tmp / "a.npy")
        arrays.joblib_dump(a, tmp / "a.joblib")
        res.add(
            Row(
                f"new {label} float64 save",
                gbps(nbytes, ours),
                "GB/s",
                gbps(nbytes, npy),
                "np.save+fsync",
                lower_is_better=False,
                goal=("ratio>=", 0.8),
            )
        )
        res.add(
            Row(
                f"new {label} float64 save, fixed chunks",
                gbps(nbytes, fixed),
                "GB/s",
                gbps(nbytes, npy),
                "np.save+fsync",
                lower_is_better=False,
                note=f"content-defined (the default) / fixed: {fixed / ours:.2f}x",
            )
        )
        res.add(
            Row(
                f"new {label} float64 save",
                gbps(nbytes, ours),
                "GB/s",
                gbps(nbytes, jl),
                "joblib.dump+fsync",
                lower_is_better=False,
            )
        )
        s = stores[-1]
        again = median_time(lambda _: s.save_artifact(a, "x"), reps)
        res.add(
            Row(
                f"same {label} saved again",
                gbps(nbytes, again),
                "GB/s",
                gbps(nbytes, npy),
                "np.save+fsync",
                lower_is_better=False,
                goal=("ours>=", 5.0),
            )
        )
        res.add(dedup_row(f"same {label} float64", nbytes, again, xxh3_seconds(a, reps)))
        s.load_artifact("x")  # warm: both loads are from the page cache
        arrays.np_load(tmp / "a.npy")
        load = median_time(lambda _: s.load_artifact("x"), reps)
        npl = median_time(lambda _: arrays.np_load(tmp / "a.npy"), reps)
        res.add(
            Row(
                f"load {label} raw chunks (page cache)",
                gbps(nbytes, load),
                "GB/s",
                gbps(nbytes, npl),
                "np.load",
                lower_is_better=False,
                goal=("ratio>=", 0.9),
            )
        )
        jll = median_time(lambda _: arrays.joblib_load(tmp / "a.joblib"), reps)
        res.add(
            Row(
                f"load {label} raw chunks (page cache)",
                gbps(nbytes, load),
                "GB/s",
                gbps(nbytes, jll),
                "joblib.load",
                lower_is_better=False,
            )
        )

        ctx.log(f"core: {label} compressible float32 weights")
        w = arrays.weights_f32(nbytes)
        ours_w = median_time(lambda s: s.save_artifact(w, "w"), reps, fresh)
        zs = median_time(lambda _: arrays.zstd_save(w, new_path(tmp, "w.zst")), reps)
        arrays.zstd_save(w, tmp / "w.zst")  # measured for its size
        stored = stores[-1].stats()["stored_bytes"]
        zsize = (tmp / "w.zst").stat().st_size
        res.add(
            Row(
                f"new {label} compressible float32 save",
                gbps(nbytes, ours_w),
                "GB/s",
                gbps(nbytes, zs),
                "zstd -3 T2 +fsync",
                lower_is_better=False,
                goal=("ratio>=", 0.9),
                note=f"stored {stored / nbytes:.1%} of logical; zstd file {zsize / nbytes:.1%}",
            )
        )

        ctx.log("core: small save_artifact latency")
        small = fresh()
        small.save_artifact({"warm": 1}, "warm")
        lat = latencies(lambda i: small.save_artifact({"i": i}, f"m{i % 50}"), p["small_saves"])
        jlat = latencies(
            lambda i: arrays.joblib_dump({"i": i}, tmp / f"m{i % 50}.joblib"), p["small_saves"]
        )
        payload = b"\0" * max(1, small.get_artifact("m0").size)
        flat = latencies(lambda i: _write_fsync(tmp / f"f{i % 50}", payload), p["small_saves"])
        for q in (50, 99):
            res.add(
                Row(
                    f"small save_artifact p{q}",
                    pct(lat, q) * 1e3,
                    "ms",
                    pct(jlat, q) * 1e3,
                    "joblib.dump+fsync",
                    goal=("ours<=", 0.5),
                )
            )
            res.add(
                Row(
                    f"small save_artifact p{q}",
                    pct(lat, q) * 1e3,
                    "ms",
                    pct(flat, q) * 1e3,
                    "one fsync'd small file",
                    goal=("ratio>=", 1 / 1.5),
                    goal_text="ours ≤ 1.5x the baseline",
                    note=f"a {len(payload)}-byte file written and fsynced",
                )
            )
        for st in stores:
            st.close()

        ctx.log(f"core: peak RSS, {p['rss_mib']} MiB")
        rss_bytes = p["rss_mib"] * MiB
        rl = f"{p['rss_mib']} MiB" if p["rss_mib"] < 1024 else f"{p['rss_mib'] // 1024} GiB"
        arrays.add_peak_rss_rows(res, f"peak RSS {{op}} {rl}", tmp, rss_bytes)

    ctx.log("core: import time")
    imp = import_time("engine", p["imports"])
    res.add(
        Row(
            "import engine (fresh interpreter)",
            imp,
            "s",
            import_time("numpy", p["imports"]),
            "import numpy",
            goal=("ours<=", 0.15),
        )
    )
    res.add(
        Row(
            "import engine + first use of engine.Store",
            import_time("engine; engine.Store", p["imports"]),
            "s",
            note="loads the store, LMDB, msgpack, zstd and xxhash (numpy stays lazy)",
        )
    )
    res.notes.append(
        "Loads read files just written: they come from the page cache (dropping it needs root)."
    )
    res.notes.append(
        "Every writing baseline is fsynced like save_artifact; np.save/joblib/zstd do not fsync "
        "on their own, so without it they would look faster than the durability they give."
    )
    return res
