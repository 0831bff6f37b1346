"""Crash test: SIGKILL real workloads at random moments and at every failpoint.

Each round starts one or two workload processes on a store (saves of small
values and multi-chunk arrays, dedup, tags, untags, deletes, gc, rebuild;
pipeline runs and imports when the engine has them), and in about half the
rounds a companion that races their commits: a process that opens, saves and
closes in a loop (every open recovers pack tails), a process running gc in a
loop, or one process with save threads beside a gc thread. A workload prints a
``begin`` line before each call and an ``ack`` line after it returned
(flushed), to a file the parent reads. The parent kills the workload —
after a random delay, or by arming one failpoint so the process kills
itself exactly there — then reopens the store (timed), runs ``verify`` and
checks:

- every acknowledged save is there under its name and version and loads
  with the right content (values are regenerated from a key kept in the
  artifact's metadata), unless a delete of it was begun;
- every live artifact, acknowledged or not, loads with the right content
  (no dangling references);
- acknowledged deletes, tags and untags hold; versions per name are gapless;
  ``stats()`` agrees with the listing; ``verify`` is ok.

Usage::

    python tools/crashtest.py --rounds 1000 --seed 1 --out bench/results/crashtest-1000.md
    python tools/crashtest.py --rounds 18 --json        # a short run, JSON summary on stdout

The workload itself is this file run with ``--child``.
"""

from __future__ import annotations

import argparse
import contextlib
import fractions
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

WORKLOADS = ("mixed", "save")
CHUNK_SIZE = 64 << 10
NAMES = tuple(f"art{i}" for i in range(6))


# -- values: regenerated from a key, so the checker knows the right content --------------


def make_value(kind: str, key: str) -> Any:
    """The value a workload saves for ``(kind, key)``; deterministic."""
    import numpy as np

    seed = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big")
    rng = np.random.default_rng(seed)
    if kind == "small":
        return {"key": key, "n": int(rng.integers(1 << 40)), "t": (1, 2.5, None), "b": b"\x00"}
    if kind == "array":  # random floats: stored raw, several chunks
        return rng.standard_normal(int(rng.integers(20_000, 120_000))).astype(np.float32)
    if kind == "zeros":  # compressible: zstd path
        arr = np.zeros(int(rng.integers(50_000, 200_000)), dtype=np.int64)
        arr[:: int(rng.integers(7, 70))] = seed % 1000
        return arr
    if kind == "text":
        return (key + " ") * int(rng.integers(500, 3000))
    if kind == "pickle":  # no materializer: the signed cloudpickle fallback
        return fractions.Fraction(seed, 7)
    raise ValueError(f"unknown value kind {kind!r}")


def same(a: Any, b: Any) -> bool:
    import numpy as np

    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (
            isinstance(a, np.ndarray)
            and isinstance(b, np.ndarray)
            and a.dtype == b.dtype
            and a.shape == b.shape
            and bool(np.array_equal(a, b))
        )
    return type(a) is type(b) and bool(a == b)


# -- the workload (child process) -------------------------------------------------------


class _Out:
    def __init__(self) -> None:
        import threading

        self._lock = threading.Lock()

    def __call__(self, ev: str, op: str, **data: Any) -> None:
        line = json.dumps({"ev": ev, "op": op, **data}, sort_keys=True)
        with self._lock:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()


def _pipeline_ops() -> Any:
    """Pipeline definitions when ``engine.pipeline`` exists, else None."""
    import engine

    try:
        step, pipeline = engine.step, engine.pipeline
    except AttributeError:
        return None

    @step
    def crash_make(key: str) -> Any:
        return make_value("array", key)

    @step
    def crash_sum(arr: Any) -> float:
        return float(arr.sum())

    @pipeline(enable_cache=False)
    def crash_pipe(key: str) -> None:
        crash_sum(crash_make(key=key))

    return crash_pipe


def child(store_path: str, seed: int, workload: str, focus: str, tag: str) -> None:
    """Run operations on the store until killed, printing begin/ack lines."""
    import warnings

    warnings.simplefilter("ignore")
    from engine import ArtifactNotFoundError, Store, StoreError

    rng = random.Random(seed)
    out = _Out()
    store = Store.open(store_path, chunk_size=CHUNK_SIZE)
    pipe = _pipeline_ops() if workload == "mixed" else None
    transfer = workload == "mixed" and hasattr(Store, "import_") and hasattr(store, "export")
    out("ready", "open", pid=os.getpid())
    keys: list[tuple[str, str]] = []
    counter = 0

    def save(kind: str | None = None) -> None:
        nonlocal counter
        counter += 1
        if kind is None:
            kind = rng.choice(("small", "small", "array", "array", "zeros", "text", "pickle"))
        if keys and rng.random() < 0.2:  # the same data again: dedup path
            kind, key = rng.choice(keys)
        else:
            key = f"{tag}-{counter}"
        name = rng.choice(NAMES)
        out("begin", "save", name=name, key=key, kind=kind)
        art = store.save_artifact(make_value(kind, key), name, metadata={"ck": key, "kind": kind})
        keys.append((kind, key))
        out("ack", "save", id=art.id, name=name, version=art.version, key=key, kind=kind)

    def pick() -> Any:
        arts = store.list_artifacts()
        return rng.choice(arts) if arts else None

    def op_tag() -> None:
        nonlocal counter
        art = pick()
        if art is None:
            return
        counter += 1
        t = f"t-{tag}-{counter}"
        out("begin", "tag", id=art.id, tag=t)
        store.tag(art, t)
        out("ack", "tag", id=art.id, tag=t)

    def op_untag() -> None:
        arts = [a for a in store.list_artifacts() if a.tags]
        if not arts:
            return
        art = rng.choice(arts)
        t = rng.choice(art.tags)
        out("begin", "untag", id=art.id, tag=t)
        store.untag(art, t)
        out("ack", "untag", id=art.id, tag=t)

    def op_delete() -> None:
        art = pick()
        if art is None:
            return
        out("begin", "delete", id=art.id)
        store.delete_artifact(art)
        out("ack", "delete", id=art.id)

    def op_gc() -> None:
        out("begin", "gc")
        store.gc()
        out("ack", "gc")

    def op_rebuild() -> None:
        out("begin", "rebuild")
        store.rebuild()
        out("ack", "rebuild")

    def op_run() -> None:
        nonlocal counter
        counter += 1
        key = f"{tag}-run-{counter}"
        out("begin", "run", key=key)
        run = store.run(pipe, key=key)
        out("ack", "run", id=run.id, key=key)

    def op_import() -> None:
        with tempfile.TemporaryDirectory() as d:
            src_path = Path(d) / "src"
            with Store.open(src_path, chunk_size=CHUNK_SIZE) as src:
                nonlocal counter
                counter += 1
                key = f"{tag}-imp-{counter}"
                src.save_artifact(
                    make_value("array", key), "imported", metadata={"ck": key, "kind": "array"}
                )
                src.export(Path(d) / "x.export")
            out("begin", "import", key=key)
            Store.import_(Path(d) / "x.export", into=store)
            out("ack", "import", key=key)

    ops: list[tuple[Callable[[], None], float]]
    if workload == "save":
        ops = [(save, 1.0)]
    elif focus.startswith("gc."):
        ops = [(lambda: save("array"), 3.0), (op_delete, 2.0), (op_gc, 1.0)]
    elif focus.startswith("rebuild."):
        ops = [(save, 2.0), (op_rebuild, 1.0)]
    elif focus.startswith("import.") and transfer:
        ops = [(save, 1.0), (op_import, 1.0)]
    else:
        ops = [
            (save, 10.0),
            (op_tag, 2.0),
            (op_untag, 1.0),
            (op_delete, 2.0),
            (op_gc, 0.6),
            (op_rebuild, 0.3),
        ]
        if pipe is not None:
            ops.append((op_run, 2.0))
        if transfer:
            ops.append((op_import, 0.3))
    fns, weights = zip(*ops, strict=True)
    while True:
        fn = rng.choices(fns, weights)[0]
        try:
            fn()
        except (ArtifactNotFoundError, StoreError) as e:
            # Another writer deleted the artifact, or gc collected a chunk this
            # write deduplicated against (retried once already): benign.
            out("error", fn.__name__, kind=type(e).__name__, message=str(e))


# Companion shapes: what races a writer's commits. Each runs beside the round's
# writers until the parent kills it, printing begin/ack lines like a workload.
SHAPES = ("cycle", "gcloop", "threads")


def _save_one(store: Any, rng: random.Random, out: _Out, key: str) -> Any:
    kind = rng.choice(("small", "array", "array", "zeros", "text"))
    name = rng.choice(NAMES)
    out("begin", "save", name=name, key=key, kind=kind)
    art = store.save_artifact(make_value(kind, key), name, metadata={"ck": key, "kind": kind})
    out("ack", "save", id=art.id, name=name, version=art.version, key=key, kind=kind)
    return art


def _delete_one(store: Any, art: Any, out: _Out) -> None:
    out("begin", "delete", id=art.id)
    store.delete_artifact(art)
    out("ack", "delete", id=art.id)


def companion(store_path: str, seed: int, shape: str, tag: str) -> None:
    """``cycle``: open, save, maybe delete, close, again (each open recovers packs
    while others commit); ``gcloop``: gc in a loop from its own process;
    ``threads``: save threads beside a gc thread on one Store."""
    import threading
    import warnings

    warnings.simplefilter("ignore")
    from engine import ArtifactNotFoundError, Store, StoreError

    rng = random.Random(seed)
    out = _Out()
    benign = (ArtifactNotFoundError, StoreError)
    if shape == "cycle":
        out("ready", "open", pid=os.getpid())
        n = 0
        while True:
            with Store.open(store_path, chunk_size=CHUNK_SIZE) as store:
                for _ in range(rng.randint(1, 3)):
                    n += 1
                    try:
                        art = _save_one(store, rng, out, f"{tag}-{n}")
                        if rng.random() < 0.3:  # leave mostly-dead segments for gc
                            _delete_one(store, art, out)
                    except benign as e:
                        out("error", "save", kind=type(e).__name__, message=str(e))
    store = Store.open(store_path, chunk_size=CHUNK_SIZE)
    out("ready", "open", pid=os.getpid())
    if shape == "gcloop":
        while True:
            out("begin", "gc")
            try:
                store.gc()
                out("ack", "gc")
            except benign as e:
                out("error", "gc", kind=type(e).__name__, message=str(e))
            time.sleep(rng.uniform(0.0, 0.02))

    def saver(w: int) -> None:
        trng = random.Random(seed * 31 + w)
        n = 0
        while True:
            n += 1
            try:
                art = _save_one(store, trng, out, f"{tag}-t{w}-{n}")
                if trng.random() < 0.3:
                    _delete_one(store, art, out)
            except benign as e:
                out("error", "save", kind=type(e).__name__, message=str(e))

    for w in range(4):
        threading.Thread(target=saver, args=(w,), daemon=True).start()
    while True:
        out("begin", "gc")
        try:
            store.gc()
            out("ack", "gc")
        except benign as e:
            out("error", "gc", kind=type(e).__name__, message=str(e))
        time.sleep(rng.uniform(0.0, 0.01))


# -- the checker (parent) ---------------------------------------------------------------


@dataclass
class Totals:
    rounds: int = 0
    kills: int = 0
    random_kills: int = 0
    failpoints_armed: Counter[str] = field(default_factory=Counter)
    failpoints_hit: Counter[str] = field(default_factory=Counter)
    acked: Counter[str] = field(default_factory=Counter)
    acked_checked: int = 0
    live_checked: int = 0
    lost: int = 0
    dangling: int = 0
    verify_failures: int = 0
    other_problems: int = 0
    benign_errors: int = 0
    shapes: Counter[str] = field(default_factory=Counter)
    reopen_s: list[float] = field(default_factory=list)
    verify_s: list[float] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0


def read_lines(path: Path) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    try:
        text = path.read_text()
    except FileNotFoundError:
        return out
    for line in text.split("\n"):
        if not line:
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut off by the kill
    return out


def check_store(store: Any, lines: list[dict[str, Any]], totals: Totals) -> list[str]:
    """Every check after a crash; the problems found (also counted in ``totals``)."""
    from engine import ArtifactNotFoundError, ArtledgerError

    problems: list[str] = []
    delete_begun = {d["id"] for d in lines if d["op"] == "delete" and d["ev"] == "begin"}
    untag_begun = {(d["id"], d["tag"]) for d in lines if d["op"] == "untag" and d["ev"] == "begin"}
    for d in lines:
        if d["ev"] != "ack":
            continue
        op = d["op"]
        if op == "save":
            totals.acked_checked += 1
            try:
                art = store.get_artifact_by_id(d["id"])
            except ArtifactNotFoundError:
                totals.lost += 1
                problems.append(f"LOST: acknowledged save {d['name']}:{d['version']} ({d['id']})")
                continue
            if (art.name, art.version) != (d["name"], d["version"]):
                totals.lost += 1
                problems.append(
                    f"LOST: {d['id']} is {art.name}:{art.version}, "
                    f"acknowledged as {d['name']}:{d['version']}"
                )
            if art.deleted and d["id"] not in delete_begun:
                totals.lost += 1
                problems.append(f"LOST: {art.name}:{art.version} deleted without a delete")
            if not art.deleted and not _loads_right(art, problems, "acknowledged "):
                totals.lost += 1
        elif op == "delete":
            totals.acked_checked += 1
            if not store.get_artifact_by_id(d["id"]).deleted:
                totals.lost += 1
                problems.append(f"LOST: acknowledged delete of {d['id']} is undone")
        elif op == "tag":
            totals.acked_checked += 1
            tags = store.get_artifact_by_id(d["id"]).tags
            if d["tag"] not in tags and (d["id"], d["tag"]) not in untag_begun:
                totals.lost += 1
                problems.append(f"LOST: acknowledged tag {d['tag']} of {d['id']} is missing")
        elif op == "untag":
            totals.acked_checked += 1
            if d["tag"] in store.get_artifact_by_id(d["id"]).tags:
                totals.lost += 1
                problems.append(f"LOST: acknowledged untag {d['tag']} of {d['id']} is undone")
        elif op == "run":
            totals.acked_checked += 1
            try:
                run = store.get_run(d["id"])
                if run.status != "completed":
                    raise ArtledgerError(f"status {run.status}")
            except ArtledgerError as e:
                totals.lost += 1
                problems.append(f"LOST: acknowledged run {d['id']}: {e}")
        elif op == "import":
            totals.acked_checked += 1
            if not any(
                a.metadata.get("ck") == d["key"]
                for a in store.list_artifacts("imported", include_deleted=True)
            ):
                totals.lost += 1
                problems.append(f"LOST: acknowledged import {d['key']}")
    # Every live artifact loads with the right content: no dangling references.
    live = store.list_artifacts()
    for art in live:
        totals.live_checked += 1
        if not _loads_right(art, problems, ""):
            totals.dangling += 1
    for run in store.list_runs():
        try:
            steps = list(run.steps.values())
        except Exception as e:
            totals.other_problems += 1
            problems.append(f"run {run.id}: its steps cannot be read: {type(e).__name__}: {e}")
            continue
        for sr in steps:
            for out in sr.outputs.values() if sr.status in ("completed", "cached") else []:
                if not out.deleted and not _loads_right(out, problems, "run output "):
                    totals.dangling += 1
    # Versions per name gapless; stats agree with the listing.
    by_name: dict[str, list[Any]] = defaultdict(list)
    for art in store.list_artifacts(include_deleted=True):
        by_name[art.name].append(art.version)
    for name, versions in by_name.items():
        if versions != list(range(1, len(versions) + 1)):
            totals.other_problems += 1
            problems.append(f"versions of {name} are not gapless: {versions}")
    stats = store.stats()
    if stats["artifacts"] != len(live):
        totals.other_problems += 1
        problems.append(f"stats says {stats['artifacts']} artifacts, listing has {len(live)}")
    return problems


def _loads_right(art: Any, problems: list[str], what: str) -> bool:
    from engine import ArtledgerError

    meta = art.metadata
    try:
        value = art.load()
    except ArtledgerError as e:
        problems.append(f"DANGLING: {what}{art.name}:{art.version} does not load: {e}")
        return False
    if "ck" in meta and not same(value, make_value(meta["kind"], meta["ck"])):
        problems.append(f"WRONG: {what}{art.name}:{art.version} loads the wrong content")
        return False
    return True


def _wait_ready(path: Path, proc: subprocess.Popen[bytes], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            if b'"ready"' in path.read_bytes():
                return True
        except FileNotFoundError:
            pass
        time.sleep(0.005)
    return False


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def run(
    rounds: int,
    seed: int,
    workload: str,
    workdir: Path,
    *,
    rounds_per_store: int = 40,
    max_delay: float = 0.6,
    fp_timeout: float = 30.0,
    companions: bool = True,
    log: Any = None,
) -> Totals:
    """Run ``rounds`` kill rounds; the totals."""
    from engine import Store

    rng = random.Random(seed)
    totals = Totals()
    from engine.failpoints import CRASH_POINTS

    # Only the mixed workload imports streams, so only it can meet import.* points.
    points = [p for p in CRASH_POINTS if workload == "mixed" or not p.startswith("import.")]
    started = time.monotonic()
    store_dir = workdir / "store-0"
    lines: list[dict[str, Any]] = []
    for r in range(rounds):
        if r % rounds_per_store == 0:
            store_dir = workdir / f"store-{r // rounds_per_store}"
            lines = []
        mode = "failpoint" if r % 2 == 0 and workload == "mixed" else "random"
        fp = points[(r // 2) % len(points)] if mode == "failpoint" else ""
        writers = 2 if rng.random() < 0.25 else 1
        shape = SHAPES[r % len(SHAPES)] if companions and rng.random() < 0.5 else ""
        if shape:
            totals.shapes[shape] += 1
        procs = []
        outs = []
        for w in range(writers + bool(shape)):
            env = dict(os.environ)
            env.pop("ARTLEDGER_FAILPOINTS", None)
            if fp and w == 0:
                env["ARTLEDGER_FAILPOINTS"] = f"{fp}=kill@{rng.randint(1, 3)}"
                totals.failpoints_armed[fp] += 1
            out = workdir / f"round-{r}-{w}.jsonl"
            outs.append(out)
            cmd = [
                sys.executable,
                str(Path(__file__).resolve()),
                "--child",
                str(store_dir),
                "--seed",
                str(rng.randrange(1 << 30)),
                "--workload",
                workload,
                "--focus",
                fp,
                "--tag",
                f"r{r}w{w}",
            ]
            if w == writers:
                cmd += ["--shape", shape]
            with open(out, "wb") as f:
                procs.append(subprocess.Popen(cmd, stdout=f, stderr=subprocess.PIPE, env=env))
        early = mode == "random" and rng.random() < 0.1
        if early:  # kill during start-up and open
            time.sleep(rng.uniform(0.0, 0.4))
        else:
            for p, out in zip(procs, outs, strict=True):
                _wait_ready(out, p, 60.0)
        if mode == "random":
            time.sleep(rng.uniform(0.0, max_delay))
            for p in procs:
                _kill(p)
            totals.kills += len(procs)
            totals.random_kills += len(procs)
        else:
            with contextlib.suppress(subprocess.TimeoutExpired):
                procs[0].wait(fp_timeout)
            code = procs[0].poll()
            if code == -signal.SIGKILL:
                totals.failpoints_hit[fp] += 1
            for p in procs:
                _kill(p)
            totals.kills += len(procs)
        for p in procs:
            err = p.stderr.read().decode(errors="replace") if p.stderr else ""
            if p.stderr:
                p.stderr.close()
            if "Traceback" in err:
                totals.other_problems += 1
                totals.problems.append(f"round {r}: workload crashed on its own:\n{err[-2000:]}")
        new = [d for out in outs for d in read_lines(out)]
        for d in new:
            if d["ev"] == "ack":
                totals.acked[d["op"]] += 1
            elif d["ev"] == "error":
                totals.benign_errors += 1
        lines += new
        t0 = time.perf_counter()
        store = Store.open(store_dir, chunk_size=CHUNK_SIZE)
        totals.reopen_s.append(time.perf_counter() - t0)
        try:
            try:
                problems = check_store(store, lines, totals)
            except Exception as e:  # a checker crash is a finding, not the end of the run
                totals.other_problems += 1
                problems = [f"checker failed: {type(e).__name__}: {e}"]
            t0 = time.perf_counter()
            report = store.verify()
            totals.verify_s.append(time.perf_counter() - t0)
            if not report.ok:
                totals.verify_failures += 1
                problems += [f"verify: {p}" for p in report.problems]
        finally:
            store.close()
        totals.rounds += 1
        for msg in problems:
            totals.problems.append(f"round {r} ({mode} {fp or ''} x{writers}): {msg}")
        if problems:  # keep the evidence: every begin/ack line seen on this store
            evidence = workdir / f"problem-round-{r}.jsonl"
            evidence.write_text("".join(json.dumps(d) + "\n" for d in lines))
        if log is not None:
            status = "ok" if not problems else f"{len(problems)} PROBLEMS"
            for msg in problems[:3]:
                print(f"    {msg[:300]}", file=log)
            print(
                f"round {r + 1}/{rounds} {mode:9} {fp:24} writers={writers} "
                f"acks={sum(1 for d in new if d['ev'] == 'ack'):3} "
                f"reopen={totals.reopen_s[-1] * 1000:6.1f}ms {status}",
                file=log,
                flush=True,
            )
        for out in outs:
            out.unlink(missing_ok=True)
    totals.seconds = time.monotonic() - started
    return totals


def summary(totals: Totals) -> dict[str, Any]:
    return {
        "rounds": totals.rounds,
        "kills": totals.kills,
        "random_kills": totals.random_kills,
        "failpoints_armed": dict(totals.failpoints_armed),
        "failpoints_hit": dict(totals.failpoints_hit),
        "acked": dict(totals.acked),
        "acked_checked": totals.acked_checked,
        "live_checked": totals.live_checked,
        "lost": totals.lost,
        "dangling": totals.dangling,
        "verify_failures": totals.verify_failures,
        "other_problems": totals.other_problems,
        "benign_errors": totals.benign_errors,
        "shapes": dict(totals.shapes),
        "slowest_reopen_s": max(totals.reopen_s, default=0.0),
        "median_reopen_s": sorted(totals.reopen_s)[len(totals.reopen_s) // 2]
        if totals.reopen_s
        else 0.0,
        "slowest_verify_s": max(totals.verify_s, default=0.0),
        "seconds": totals.seconds,
        "problems": totals.problems[:50],
    }


def markdown(s: dict[str, Any], command: str) -> str:
    fp_rows = "\n".join(
        f"| `{name}` | {s['failpoints_armed'].get(name, 0)} | {s['failpoints_hit'].get(name, 0)} |"
        for name in sorted(set(s["failpoints_armed"]) | set(s["failpoints_hit"]))
    )
    acked = ", ".join(f"{k} {v}" for k, v in sorted(s["acked"].items()))
    ok = s["lost"] == 0 and s["dangling"] == 0 and s["verify_failures"] == 0
    problems = "\n".join(f"- {p}" for p in s["problems"]) or "none"
    shapes = ", ".join(f"{k} {v}" for k, v in sorted(s.get("shapes", {}).items())) or "none"
    return f"""# Crash test: {s["kills"]} kills

Command (from the repository root):

```
{command}
```

Result: **{"PASS" if ok else "FAIL"}**

| figure | value | goal |
|---|---|---|
| rounds | {s["rounds"]} | |
| kills (SIGKILL) | {s["kills"]} | 1,000 |
| of which at a random moment | {s["random_kills"]} | |
| of which a failpoint killed the process | {sum(s["failpoints_hit"].values())} | |
| acknowledged writes (by operation) | {acked} | |
| acknowledged writes checked (cumulative, every round) | {s["acked_checked"]} | |
| live artifacts loaded and compared (cumulative) | {s["live_checked"]} | |
| writes lost | {s["lost"]} | 0 |
| dangling references (live artifact does not load or loads wrong) | {s["dangling"]} | 0 |
| verify failures after reopen | {s["verify_failures"]} | 0 |
| other problems (gaps in versions, stats, workload tracebacks) | {s["other_problems"]} | 0 |
| rounds with a companion racing the writers (see below) | {shapes} | |
| benign workload errors (concurrent delete or gc race, reported clearly) | {s["benign_errors"]} | |
| slowest reopen (`Store.open` + pack recovery) | {s["slowest_reopen_s"] * 1000:.1f} ms | ≤ 1 s |
| median reopen | {s["median_reopen_s"] * 1000:.1f} ms | |
| slowest verify | {s["slowest_verify_s"] * 1000:.1f} ms | |
| wall time | {s["seconds"]:.0f} s | |

Companions: `cycle` opens, saves (sometimes deletes) and closes a store in a
loop, so every open recovers pack tails while the writers commit; `gcloop`
runs gc in a loop in its own process; `threads` runs four save threads
beside a gc thread on one Store. They are killed with the writers.

Failpoints (armed to kill on their 1st-3rd hit; "killed" = the process died there):

| failpoint | armed | killed there |
|---|---|---|
{fp_rows}

Problems: {problems}
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workload", choices=WORKLOADS, default="mixed")
    ap.add_argument("--out", type=Path, help="write a markdown report here")
    ap.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    ap.add_argument("--workdir", type=Path, help="keep the stores here (default: a temp dir)")
    ap.add_argument("--rounds-per-store", type=int, default=40)
    ap.add_argument("--max-delay", type=float, default=0.6)
    ap.add_argument("--child", metavar="STORE", help=argparse.SUPPRESS)
    ap.add_argument("--focus", default="", help=argparse.SUPPRESS)
    ap.add_argument("--tag", default="c", help=argparse.SUPPRESS)
    ap.add_argument("--shape", default="", help=argparse.SUPPRESS)
    ap.add_argument(
        "--no-companions",
        action="store_true",
        help="no processes racing the writers (open/save/close loops, gc loops, gc threads)",
    )
    args = ap.parse_args(argv)
    if args.child and args.shape:
        companion(args.child, args.seed, args.shape, args.tag)
        return 0
    if args.child:
        child(args.child, args.seed, args.workload, args.focus, args.tag)
        return 0
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="artledger-crashtest-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        totals = run(
            args.rounds,
            args.seed,
            args.workload,
            workdir,
            rounds_per_store=args.rounds_per_store,
            max_delay=args.max_delay,
            companions=not args.no_companions,
            log=sys.stderr,
        )
    finally:
        if args.workdir is None and not any(workdir.glob("problem-*")):
            shutil.rmtree(workdir, ignore_errors=True)
    s = summary(totals)
    if args.out:
        command = "python tools/crashtest.py " + " ".join(
            a for a in (argv if argv is not None else sys.argv[1:])
        )
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(markdown(s, command))
    if args.json:
        print(json.dumps(s))
    else:
        print(
            f"{s['kills']} kills, {s['acked_checked']} acknowledged writes checked, "
            f"{s['lost']} lost, {s['dangling']} dangling, {s['verify_failures']} verify "
            f"failures, slowest reopen {s['slowest_reopen_s'] * 1000:.1f} ms",
            file=sys.stderr,
        )
    bad = s["lost"] or s["dangling"] or s["verify_failures"] or s["other_problems"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
