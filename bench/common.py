"""What every scenario shares: result rows, timing, machine facts, subprocesses.

A scenario is a module with ``TITLE``, ``ABOUT``, ``PARAMS`` (per size) and
``run(ctx) -> Result``. Rows compare *ours* with a *baseline* measured in the
same run; ``ratio`` is always "how many times better than the baseline"
(throughput ratio: ``baseline_time / our_time`` for times), so ``> 1`` means
artledger wins whichever the unit.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SIZES = ("tiny", "small", "full")
MiB = 1 << 20
GiB = 1 << 30


@dataclass
class Row:
    """One measured metric against its baseline and goal.

    ``lower_is_better`` says how to read ``ours`` and ``baseline`` (times,
    bytes, latencies); ``ratio`` is computed so that ``> 1`` favours ours.
    ``goal`` is ``(kind, target)`` with kind ``"ratio>="``, ``"ours<="`` or
    ``"ours>="``; ``met`` is filled in by :meth:`finish`.
    """

    metric: str
    ours: float | None
    unit: str
    baseline: float | None = None
    baseline_name: str = ""
    lower_is_better: bool = True
    goal: tuple[str, float] | None = None
    goal_text: str = ""
    note: str = ""
    ratio: float | None = None
    met: bool | None = None

    def finish(self) -> Row:
        if self.ours is not None and self.baseline is not None and self.ours > 0:
            if self.lower_is_better:
                self.ratio = self.baseline / self.ours
            elif self.baseline > 0:
                self.ratio = self.ours / self.baseline
        if self.goal is not None:
            kind, target = self.goal
            value = self.ratio if kind.startswith("ratio") else self.ours
            if value is not None and math.isfinite(value):
                self.met = value >= target if kind.endswith(">=") else value <= target
            if not self.goal_text:
                shown = f"{target:g}x" if kind.startswith("ratio") else fmt(target, self.unit)
                self.goal_text = ("≥ " if kind.endswith(">=") else "≤ ") + shown
        return self


@dataclass
class Series:
    """A curve for a plot: x values and one or more named y series."""

    title: str
    xlabel: str
    ylabel: str
    x: list[float]
    ys: dict[str, list[float | None]]
    loglog: bool = False
    logx: bool = False


@dataclass
class Result:
    """What one scenario hands back to the report."""

    name: str
    title: str
    about: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    series: list[Series] = field(default_factory=list)
    skipped: str | None = None
    error: str | None = None
    seconds: float = 0.0

    def add(self, row: Row) -> Row:
        self.rows.append(row.finish())
        return row

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Context:
    """Where and how big a scenario runs."""

    size: str
    tmp: Path
    repeats: int
    log: Callable[[str], None] = field(default=lambda msg: None)

    @contextlib.contextmanager
    def tempdir(self, prefix: str) -> Iterator[Path]:
        """A fresh directory under the run's scratch space, removed afterwards."""
        d = Path(tempfile.mkdtemp(prefix=prefix + "-", dir=self.tmp))
        try:
            yield d
        finally:
            shutil.rmtree(d, ignore_errors=True)


# -- timing ------------------------------------------------------------------


def timed(fn: Callable[[], Any]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


_paths = itertools.count()


def new_path(directory: Path, name: str) -> Path:
    """A file name no earlier repetition used. Baselines write new files, as
    save_artifact writes new pack segments: on this machine's thin-provisioned
    disk, writing never-used blocks costs several times more than rewriting
    just-freed ones, so reusing one name would flatter the baseline."""
    stem, dot, suffix = name.partition(".")
    return directory / f"{stem}-{next(_paths)}{dot}{suffix}"


def median_time(
    fn: Callable[[Any], Any], repeats: int, setup: Callable[[], Any] | None = None
) -> float:
    """Median wall time of ``fn(setup())`` over ``repeats`` (setup untimed).

    Dirty pages are flushed (``os.sync``, untimed) before each repetition, so
    the writeback of an earlier repetition, ours or a baseline's, does not
    throttle the one being timed."""
    times = []
    for _ in range(max(1, repeats)):
        arg = setup() if setup is not None else None
        os.sync()
        t = time.perf_counter()
        fn(arg)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def latencies(fn: Callable[[int], Any], n: int) -> list[float]:
    out = []
    for i in range(n):
        t = time.perf_counter()
        fn(i)
        out.append(time.perf_counter() - t)
    return out


def pct(values: list[float], q: float) -> float:
    """The ``q``-th percentile (nearest rank) of ``values``."""
    s = sorted(values)
    if not s:
        return float("nan")
    k = max(0, min(len(s) - 1, math.ceil(q / 100 * len(s)) - 1))
    return s[k]


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def pickle_save(obj: Any, path: Path, dump: Callable[..., Any] | None = None) -> None:
    """``obj`` pickled (protocol 5) to ``path`` and fsynced: the baseline of
    the materializer scenarios (``dump``: ``cloudpickle.dump`` for objects plain
    pickle cannot take; default ``pickle.dump``)."""
    import pickle

    with open(path, "wb") as f:
        (dump or pickle.dump)(obj, f, protocol=5)
        f.flush()
        os.fsync(f.fileno())


def pickle_load(path: Path) -> Any:
    """What :func:`pickle_save` wrote."""
    import pickle

    with open(path, "rb") as f:
        return pickle.load(f)


def disk_bytes(path: Path) -> int:
    """Bytes allocated on disk under ``path`` (st_blocks, so sparse maps count as used)."""
    total = 0
    for f in path.rglob("*"):
        with contextlib.suppress(FileNotFoundError):
            if f.is_file():
                total += f.stat().st_blocks * 512
    return total


def gbps(nbytes: int, seconds: float) -> float:
    return nbytes / seconds / 1e9 if seconds > 0 else float("inf")


# -- subprocesses ----------------------------------------------------------------


def run_python(code: str, *, timeout: float = 600) -> dict[str, Any]:
    """Run ``code`` in a fresh interpreter; it must print one JSON object last."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=root,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"subprocess failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


# -- machine facts -----------------------------------------------------------------


def _version(module: str) -> str:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:
        return "not installed"


def machine_facts(out: Path) -> dict[str, Any]:
    cpu = platform.processor() or "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    ram = 0
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal"):
                ram = int(line.split()[1]) * 1024
                break
    usage = shutil.disk_usage(out)
    commit = ""
    with contextlib.suppress(Exception):
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).resolve().parent.parent,
            timeout=10,
        ).stdout.strip()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gib": round(ram / GiB, 1),
        "disk_free_gib": round(usage.free / GiB, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": _version("numpy"),
        "lmdb": _version("lmdb"),
        "zstandard": _version("zstandard"),
        "xxhash": _version("xxhash"),
        "msgpack": _version("msgpack"),
        "joblib": _version("joblib"),
        "artledger": _version("artledger"),
        "git_commit": commit,
    }


def fmt(value: float | None, unit: str = "") -> str:
    """A number with 3 significant digits (and its unit)."""
    if value is None:
        return "—"
    if not math.isfinite(value):
        return str(value)
    if value == 0:
        s = "0"
    elif abs(value) >= 1000:
        s = f"{value:,.0f}"
    else:
        s = f"{value:.3g}"
    return f"{s} {unit}".strip()


def faulting(fn: Any, n: int) -> tuple[list[float], list[int], list[int]]:
    """Per-call latency of ``fn(i)`` for ``i < n`` (seconds), and the minor and
    major page faults each call took (``getrusage`` read outside the timed span)."""
    lat: list[float] = []
    minor: list[int] = []
    major: list[int] = []
    usage, me = resource.getrusage, resource.RUSAGE_SELF
    for i in range(n):
        r0 = usage(me)
        t = time.perf_counter()
        fn(i)
        lat.append(time.perf_counter() - t)
        r1 = usage(me)
        minor.append(r1.ru_minflt - r0.ru_minflt)
        major.append(r1.ru_majflt - r0.ru_majflt)
    return lat, minor, major


def fault_stats(prefix: str, got: tuple[list[float], list[int], list[int]]) -> dict[str, float]:
    """p50/p99 of the calls that took no page fault, and faults per call."""
    lat, minor, major = got
    clean = [t for t, a, b in zip(lat, minor, major, strict=True) if a == 0 and b == 0]
    return {
        f"{prefix}_clean_p50": pct(clean, 50),
        f"{prefix}_clean_p99": pct(clean, 99),
        f"{prefix}_clean_share": len(clean) / max(1, len(lat)),
        f"{prefix}_minflt": sum(minor) / max(1, len(lat)),
        f"{prefix}_majflt": sum(major) / max(1, len(lat)),
    }
