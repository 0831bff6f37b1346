"""Scenario 2: large arrays, new and again, incompressible and compressible, and loads."""

from __future__ import annotations

from typing import Any

from bench import arrays
from bench.common import Context, GiB, MiB, Result, Row, Series, gbps, median_time, new_path

TITLE = "Large arrays"
ABOUT = (
    "One array per size: incompressible float64 (stored raw) and compressible float32 weights "
    "(rounded normal), each saved new (fresh store per repeat), saved again (dedup), and "
    "loaded — against np.save/np.load, zstd level 3 on 2 threads (streamed, + fsync) and "
    "joblib.dump/load in the same run, and saving again against one xxh3-128 pass over the "
    "same bytes; peak RSS of save and load in a fresh process."
)
PARAMS: dict[str, dict[str, Any]] = {
    "tiny": {"mibs": [2, 8], "rss": True},
    "small": {"mibs": [100, 256], "rss": True},
    "full": {"mibs": [100, 512, 2048], "rss": True},
}


def xxh3_seconds(array: Any, repeats: int) -> float:
    """Median time of one xxh3-128 over ``array``'s bytes (one thread): the
    floor of saving bytes the store holds, which must at least hash them."""
    import numpy as np
    import xxhash

    raw = memoryview(np.ascontiguousarray(array).reshape(-1).view(np.uint8))
    xxhash.xxh3_128(raw).digest()  # warm
    return median_time(lambda _: xxhash.xxh3_128(raw).digest(), max(3, repeats))


def dedup_row(label: str, nbytes: int, again: float, xxh3: float) -> Row:
    """Saving the same bytes again against hashing them once, same run."""
    return Row(
        f"{label}: dedup save vs hashing",
        gbps(nbytes, again),
        "GB/s",
        gbps(nbytes, xxh3),
        "xxh3-128 of the same bytes",
        lower_is_better=False,
        goal=("ratio>=", 0.35),
    )


def _label(mib: int) -> str:
    return f"{mib // 1024} GiB" if mib >= 1024 and mib % 1024 == 0 else f"{mib} MiB"


def run(ctx: Context) -> Result:
    from engine import Store

    p = PARAMS[ctx.size]
    res = Result("large_arrays", TITLE, ABOUT)
    xs: list[float] = []
    curves: dict[str, list[float | None]] = {
        k: []
        for k in (
            "ours new raw",
            "np.save+fsync",
            "ours new compressible",
            "zstd T2 compressible",
            "ours again",
            "ours load",
            "np.load",
        )
    }
    for mib in p["mibs"]:
        nbytes = mib * MiB
        label = _label(mib)
        reps = min(ctx.repeats, 3) if nbytes < GiB else min(ctx.repeats, 2)
        xs.append(nbytes / MiB)
        with ctx.tempdir("large") as tmp:
            opened: list[Any] = []

            def fresh(tmp: Any = tmp, opened: list[Any] = opened) -> Any:
                if opened:
                    opened[-1].close()
                s = Store.open(tmp / f"s{len(opened)}")
                opened.append(s)
                return s

            for kind, make in (("raw", arrays.random_f64), ("compressible", arrays.weights_f32)):
                ctx.log(f"large: {label} {kind}")
                a = make(nbytes)
                ours = median_time(lambda s, a=a: s.save_artifact(a, "x"), reps, fresh)
                s = opened[-1]
                stored = s.stats()["stored_bytes"]
                npy = median_time(lambda _, a=a: arrays.np_save(a, new_path(tmp, "a.npy")), reps)
                zst = median_time(lambda _, a=a: arrays.zstd_save(a, new_path(tmp, "a.zst")), reps)
                jl = median_time(lambda _, a=a: arrays.joblib_dump(a, new_path(tmp, "a.jl")), reps)
                for path in tmp.glob("a-*"):  # keep the disk's free space for the next size
                    path.unlink()
                # The files the load baselines read (and zstd's size), written untimed.
                arrays.np_save(a, tmp / "a.npy")
                arrays.zstd_save(a, tmp / "a.zst")
                arrays.joblib_dump(a, tmp / "a.jl")
                zsize = (tmp / "a.zst").stat().st_size
                note = f"stored {stored / nbytes:.1%} of logical (zstd file: {zsize / nbytes:.1%})"
                for base, name in (
                    (npy, "np.save+fsync"),
                    (zst, "zstd -3 T2+fsync"),
                    (jl, "joblib+fsync"),
                ):
                    res.add(
                        Row(
                            f"{label} {kind}: new save",
                            gbps(nbytes, ours),
                            "GB/s",
                            gbps(nbytes, base),
                            name,
                            lower_is_better=False,
                            note=note if name.startswith("np") else "",
                        )
                    )
                again = median_time(lambda _, a=a, s=s: s.save_artifact(a, "x"), reps)
                res.add(
                    Row(
                        f"{label} {kind}: same bytes again",
                        gbps(nbytes, again),
                        "GB/s",
                        gbps(nbytes, npy),
                        "np.save+fsync",
                        lower_is_better=False,
                        goal=("ours>=", 5.0),
                    )
                )
                res.add(dedup_row(f"{label} {kind}", nbytes, again, xxh3_seconds(a, reps)))
                s.load_artifact("x")
                load = median_time(lambda _, s=s: s.load_artifact("x"), reps)
                npl = median_time(lambda _: arrays.np_load(tmp / "a.npy"), reps)
                zl = median_time(lambda _, a=a: arrays.zstd_load(tmp / "a.zst", a), reps)
                jll = median_time(lambda _: arrays.joblib_load(tmp / "a.jl"), reps)
                for base, name in (
                    (npl, "np.load"),
                    (zl, "zstd T2 decompress"),
                    (jll, "joblib.load"),
                ):
                    res.add(
                        Row(
                            f"{label} {kind}: load (page cache)",
                            gbps(nbytes, load),
                            "GB/s",
                            gbps(nbytes, base),
                            name,
                            lower_is_better=False,
                            goal=("ratio>=", 0.9) if kind == "raw" and name == "np.load" else None,
                        )
                    )
                if kind == "raw":
                    curves["ours new raw"].append(gbps(nbytes, ours))
                    curves["np.save+fsync"].append(gbps(nbytes, npy))
                    curves["ours again"].append(gbps(nbytes, again))
                    curves["ours load"].append(gbps(nbytes, load))
                    curves["np.load"].append(gbps(nbytes, npl))
                else:
                    curves["ours new compressible"].append(gbps(nbytes, ours))
                    curves["zstd T2 compressible"].append(gbps(nbytes, zst))
                del a
            for s in opened:
                s.close()
            if p["rss"]:
                ctx.log(f"large: {label} peak RSS")
                arrays.add_peak_rss_rows(res, f"{label} raw: peak RSS {{op}}", tmp, nbytes)
    res.series.append(
        Series("Throughput by array size", "array size (MiB)", "GB/s", xs, curves, logx=True)
    )
    res.notes.append(
        "Loads come from the page cache (files just written; the machine has ample RAM)."
    )
    return res
