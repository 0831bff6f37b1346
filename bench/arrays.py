"""Array data, the baselines people use instead, and peak-RSS probes.

Every baseline that writes makes its file durable (``fsync``) like
``save_artifact`` does, so times compare equal promises; joblib, numpy and
pickle do not fsync on their own.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import zstandard

from bench.common import MiB, Result, Row, fsync_path, run_python

BLOCK = 16 * MiB


def random_f64(nbytes: int, seed: int = 0) -> np.ndarray:
    """Incompressible data: uniform float64 (zstd saves ~4%, so stored raw)."""
    a = np.empty(nbytes // 8, dtype=np.float64)
    np.random.default_rng(seed).random(out=a)
    return a


def weights_f32(nbytes: int, seed: int = 0) -> np.ndarray:
    """Compressible data: normal weights rounded to 3 decimals, as float32."""
    a = np.empty(nbytes // 4, dtype=np.float32)
    rng = np.random.default_rng(seed)
    step = BLOCK // 4
    for i in range(0, len(a), step):
        part = a[i : i + step]
        part[:] = np.round(rng.standard_normal(len(part)) * 0.02, 3)
    return a


def np_save(arr: np.ndarray, path: Path) -> None:
    with open(path, "wb") as f:
        np.save(f, arr)
        f.flush()
        os.fsync(f.fileno())


def np_load(path: Path) -> np.ndarray:
    return np.load(path)  # type: ignore[no-any-return]


def joblib_dump(obj: Any, path: Path) -> None:
    import joblib

    joblib.dump(obj, path)
    fsync_path(path)


def joblib_load(path: Path) -> Any:
    import joblib

    return joblib.load(path)


def zstd_save(arr: np.ndarray, path: Path, level: int = 3, threads: int = 2) -> None:
    """zstd (level 3, 2 threads) over the array's bytes, streamed to a file, fsynced."""
    cctx = zstandard.ZstdCompressor(level=level, threads=threads)
    raw = memoryview(arr.reshape(-1).view(np.uint8))
    with open(path, "wb") as f:
        with cctx.stream_writer(f, closefd=False, size=len(raw)) as w:
            for i in range(0, len(raw), BLOCK):
                w.write(raw[i : i + BLOCK])
        f.flush()
        os.fsync(f.fileno())


def zstd_load(path: Path, like: np.ndarray) -> np.ndarray:
    out = np.empty_like(like)
    buf = memoryview(out.reshape(-1).view(np.uint8))
    with open(path, "rb") as f, zstandard.ZstdDecompressor().stream_reader(f) as r:
        got = 0
        while got < len(buf):
            n = r.readinto(buf[got:])
            if not n:
                break
            got += n
    return out


_PROBE = r"""
import json, resource, numpy as np
from pathlib import Path

def reset():  # Linux: writing 5 to clear_refs resets the peak (VmHWM) to the current RSS
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False

def status(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) * 1024
    raise KeyError(field)

kind, op, where, nbytes = {args!r}
where = Path(where)
if kind == "ours":
    from engine import Store
    s = Store.open(where)
    s.save_artifact(np.zeros(1000), "warm")
    s.load_artifact("warm")
exact = reset()
peak = (lambda: status("VmHWM")) if exact else (
    lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
base = status("VmRSS") if exact else peak()
if op == "save":
    a = np.empty(nbytes // 8, dtype=np.float64)
    np.random.default_rng(1).random(out=a)
    allocated = peak()
    if kind == "ours":
        s.save_artifact(a, "big")
    else:
        with open(where / "big.npy", "wb") as f:
            np.save(f, a)
    after = peak()
else:
    if kind == "ours":
        a = s.load_artifact("big")
    else:
        a = np.load(where / "big.npy")
    after = peak()
extra = after - base - a.nbytes
print(json.dumps({{"extra": extra, "nbytes": int(a.nbytes), "times": (after - base) / a.nbytes,
                  "exact": exact}}))
"""


def peak_rss(kind: str, op: str, where: Path, nbytes: int) -> dict[str, float]:
    """Peak RSS of saving (or then loading) ``nbytes`` of float64 in a fresh
    process, beyond what the process held before: ``times`` is that peak
    divided by the array's size (1.0 = no overhead beyond the array).

    The peak is VmHWM after resetting it through ``/proc/self/clear_refs``
    (exact), else ``ru_maxrss`` (which cannot see below an earlier peak)."""
    where.mkdir(parents=True, exist_ok=True)
    code = _PROBE.format(args=(kind, op, str(where), nbytes))
    out = run_python(code)
    return {k: float(v) for k, v in out.items()}


def add_peak_rss_rows(res: Result, label: str, workdir: Path, nbytes: int) -> None:
    """Rows for the peak RSS of saving and loading a ``nbytes`` array, ours vs numpy's."""
    for op in ("save", "load"):
        ours = peak_rss("ours", op, workdir / "rss-ours", nbytes)
        theirs = peak_rss("numpy", op, workdir / "rss-np", nbytes)
        res.add(
            Row(
                f"{label} (x array)".replace("{op}", op),
                ours["times"],
                "x",
                theirs["times"],
                f"np.{op}",
                goal=("ours<=", 1.1),
                note=f"extra beyond the array: {ours['extra'] / MiB:.1f} MiB",
            )
        )
