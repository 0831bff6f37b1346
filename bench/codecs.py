"""Scenario 14: numeric arrays under the chunk codecs — shuffle+zstd vs plain zstd."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from bench import arrays
from bench.common import Context, MiB, Result, Row, gbps, median_time, new_path

TITLE = "Numeric-array codecs"
ABOUT = (
    "Four kinds of numeric arrays (and normal noise) saved into a fresh store, where each "
    "chunk's codec is picked from a sample among raw, zstd-3 and byte-shuffle+zstd-3, against "
    "zstd level 3 on 2 threads over the same bytes (+ write + fsync): stored size and save "
    "speed, and load speed against zstd decompression into a new array. The kinds: float32 "
    "weights upcast from bfloat16 (low 16 mantissa bits zero), 12-bit sensor readings in "
    "uint16, a smooth float64 series (sine plus a slow random walk), floats rounded to 2 "
    "decimals (where plain zstd wins), and normal float64 noise (stored raw)."
)
PARAMS: dict[str, dict[str, Any]] = {
    "tiny": {"mib": 4},
    "small": {"mib": 32},
    "full": {"mib": 128},
}
SHUFFLE_GOAL = 0.85  # stored size vs zstd-3's, where shuffling helps
PLAIN_GOAL = 1.05  # ... and where it does not


def bf16_weights(n: int, rng: np.random.Generator) -> np.ndarray:
    w = rng.standard_normal(n).astype(np.float32) * 0.02
    return (w.view(np.uint32) & 0xFFFF0000).view(np.float32)


def sensor_12bit(n: int, rng: np.random.Generator) -> np.ndarray:
    wave = 2048 + 300 * np.sin(np.arange(n) / 500) + rng.normal(0, 20, n)
    return wave.clip(0, 4095).astype(np.uint16)


def smooth_f64(n: int, rng: np.random.Generator) -> np.ndarray:
    return np.sin(np.arange(n) / 1e4) * 100 + np.cumsum(rng.normal(0, 1e-3, n))


def decimals_f64(n: int, rng: np.random.Generator) -> np.ndarray:
    return np.round(rng.normal(50, 10, n), 2)


def noise_f64(n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.standard_normal(n)


KINDS: dict[str, tuple[Callable[[int, np.random.Generator], np.ndarray], int, float | None]] = {
    "bfloat16-upcast float32 weights": (bf16_weights, 4, SHUFFLE_GOAL),
    "12-bit sensor data in uint16": (sensor_12bit, 2, SHUFFLE_GOAL),
    "smooth float64 series": (smooth_f64, 8, SHUFFLE_GOAL),
    "float64 rounded to 2 decimals": (decimals_f64, 8, PLAIN_GOAL),
    "normal float64 noise": (noise_f64, 8, None),
}


def codec_names(store: Any, name: str) -> str:
    from engine.storage.chunks import FileEntry
    from engine.storage.codecs import codec

    entry = FileEntry.from_record(store.get_artifact(name).record()["files"][0])
    counts: dict[str, int] = {}
    for digest in entry.chunks:
        rec = store.ledger.chunks.lookup(digest)
        counts[codec(rec.codec).name] = counts.get(codec(rec.codec).name, 0) + 1
    return ", ".join(f"{n} {c}" for c, n in sorted(counts.items(), key=lambda kv: -kv[1]))


def run(ctx: Context) -> Result:
    from engine import Store

    p = PARAMS[ctx.size]
    res = Result("codecs", TITLE, ABOUT)
    nbytes = p["mib"] * MiB
    reps = ctx.repeats
    for kind, (make, itemsize, goal) in KINDS.items():
        ctx.log(f"codecs: {kind}, {p['mib']} MiB")
        a = make(nbytes // itemsize, np.random.default_rng(3))
        with ctx.tempdir("codecs") as tmp:
            stores: list[Any] = []

            def fresh(tmp: Any = tmp, stores: list[Any] = stores) -> Any:
                s = Store.open(tmp / f"s{len(stores)}")
                stores.append(s)
                return s

            ours = median_time(lambda s, a=a: s.save_artifact(a, "x"), reps, fresh)
            zs = median_time(lambda _, a=a, t=tmp: arrays.zstd_save(a, new_path(t, "a.zst")), reps)
            arrays.zstd_save(a, tmp / "a.zst")
            s = stores[-1]
            stored = s.stats()["stored_bytes"]
            zsize = (tmp / "a.zst").stat().st_size
            picked = codec_names(s, "x")
            size_row = Row(
                f"{kind}: stored bytes",
                stored / MiB,
                "MiB",
                zsize / MiB,
                "zstd -3 file",
                note=f"{stored / zsize:.2f}x zstd-3's size; {stored / nbytes:.1%} of logical; "
                f"chunks: {picked}",
            )
            if goal is not None:
                size_row.goal = ("ratio>=", 1 / goal)
                size_row.goal_text = f"≤ {goal:g}x zstd's size"
            res.add(size_row)
            res.add(
                Row(
                    f"{kind}: new save",
                    gbps(nbytes, ours),
                    "GB/s",
                    gbps(nbytes, zs),
                    "zstd -3 T2 +fsync",
                    lower_is_better=False,
                    goal=("ratio>=", 1.0),
                )
            )
            s.load_artifact("x")
            back = s.load_artifact("x")
            assert back.tobytes() == a.tobytes()
            load = median_time(lambda _, s=s: s.load_artifact("x"), reps)
            zl = median_time(lambda _, a=a, t=tmp: arrays.zstd_load(t / "a.zst", a), reps)
            res.add(
                Row(
                    f"{kind}: load (page cache)",
                    gbps(nbytes, load),
                    "GB/s",
                    gbps(nbytes, zl),
                    "zstd decompress",
                    lower_is_better=False,
                )
            )
            for st in stores:
                st.close()
    res.notes.append(
        "Stored bytes are the chunks' payloads (the store's stored_bytes; each pack record's "
        "32-byte header is not counted, under 0.01% at these chunk sizes); the zstd file is one "
        "frame. Our save also cuts content-defined chunks, hashes each chunk and commits the "
        "version (fsync of pack and ledger)."
    )
    return res
