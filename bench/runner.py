"""Run scenarios and write the report: Markdown, JSON and PNG plots."""

from __future__ import annotations

import datetime as _dt
import importlib
import json
import shlex
import sys
import tempfile
import time
import traceback
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bench import REPEATS, SCENARIOS
from bench.common import Context, Result, Series, fmt, machine_facts


def log(msg: str) -> None:
    stamp = time.strftime("%H:%M:%S")
    print(f"[bench {stamp}] {msg}", file=sys.stderr, flush=True)


def run_scenario(name: str, size: str, tmp: Path, *, quiet: bool = False) -> Result:
    """Run one scenario; a crash is recorded in the result, not raised."""
    mod = importlib.import_module(SCENARIOS[name])
    ctx = Context(size=size, tmp=tmp, repeats=REPEATS[size], log=(lambda m: None) if quiet else log)
    t = time.perf_counter()
    try:
        res: Result = mod.run(ctx)
    except Exception as e:
        res = Result(name, mod.TITLE, mod.ABOUT, error=f"{type(e).__name__}: {e}")
        res.notes.append("```\n" + traceback.format_exc()[-3000:] + "```")
        log(f"{name}: FAILED {type(e).__name__}: {e}")
    res.seconds = time.perf_counter() - t
    return res


def run_all(
    size: str, out: Path, only: Iterable[str] | None = None, argv: list[str] | None = None
) -> dict[str, Any]:
    """Run the scenarios, write ``report-<size>.md``, ``.json`` and plots into ``out``
    (``report-<size>-<scenario>...`` when only some scenarios ran, so a partial
    run never replaces the whole report)."""
    out.mkdir(parents=True, exist_ok=True)
    names = list(only) if only else list(SCENARIOS)
    started = _dt.datetime.now(_dt.timezone.utc)
    facts = machine_facts(out)
    command = "python -m bench " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    log(f"size={size}, scenarios: {', '.join(names)}")
    results = []
    scratch = out / "tmp"
    scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=scratch) as tmp:
        for name in names:
            log(f"== {name}")
            res = run_scenario(name, size, Path(tmp))
            log(f"== {name} done in {res.seconds:.1f} s")
            results.append(res)
    doc = {
        "size": size,
        "command": command,
        "started": started.isoformat(timespec="seconds"),
        "seconds": (_dt.datetime.now(_dt.timezone.utc) - started).total_seconds(),
        "machine": facts,
        "scenarios": [r.to_json() for r in results],
    }
    stem = f"report-{size}" + ("".join(f"-{n}" for n in names) if only else "")
    plots = write_plots(results, out, size)
    (out / f"{stem}.json").write_text(json.dumps(doc, indent=1, default=str) + "\n")
    (out / f"{stem}.md").write_text(markdown(doc, results, plots))
    log(f"wrote {out / (stem + '.md')}")
    return doc


def markdown(doc: dict[str, Any], results: list[Result], plots: dict[str, list[str]]) -> str:
    m = doc["machine"]
    lines = [
        f"# artledger benchmark — size `{doc['size']}`",
        "",
        f"Command: `{doc['command']}`  ",
        f"Started {doc['started']}, took {doc['seconds'] / 60:.1f} min.",
        "",
        "Machine: "
        + f"{m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM, "
        + f"{m['disk_free_gib']} GiB disk free; {m['platform']}  ",
        f"Python {m['python']}, numpy {m['numpy']}, lmdb {m['lmdb']}, zstandard "
        f"{m['zstandard']}, xxhash {m['xxhash']}, msgpack {m['msgpack']}, joblib {m['joblib']}; "
        f"artledger {m['artledger']} (commit {m['git_commit'] or 'unknown'}).",
        "",
        "Ratios are *how many times better than the baseline* (> 1: artledger wins), from "
        "medians of repeats measured in the same run; absolute figures drift on this shared "
        "machine. Loads are from the page cache unless a note says otherwise.",
        "",
    ]
    summary = [(r, row) for r in results for row in r.rows if row.met is not None]
    if summary:
        met = sum(1 for _, row in summary if row.met)
        lines += [f"**Goals met: {met} of {len(summary)}.** Not met:", ""]
        lines += [
            f"- {r.title}: {row.metric} — {fmt(row.ours, row.unit)}"
            + (f" (ratio {fmt(row.ratio)}x)" if row.ratio is not None else "")
            + f", goal {row.goal_text}"
            for r, row in summary
            if not row.met
        ] or ["- none"]
        lines.append("")
    for i, r in enumerate(results, 1):
        lines += [f"## {i}. {r.title}", "", r.about, ""]
        if r.skipped:
            lines += [f"*Skipped:* {r.skipped}", ""]
        if r.error:
            lines += [f"**Error:** `{r.error}`", ""]
        if r.rows:
            lines += [
                "| metric | ours | baseline | ratio | goal | met? |",
                "| --- | --- | --- | --- | --- | --- |",
            ]
            for row in r.rows:
                base = (
                    f"{fmt(row.baseline, row.unit)} ({row.baseline_name})"
                    if row.baseline is not None
                    else "—"
                )
                met = {True: "yes", False: "**no**", None: "—"}[row.met]
                metric = row.metric + (f" <br>*{row.note}*" if row.note else "")
                ratio = f"{fmt(row.ratio)}x" if row.ratio is not None else "—"
                lines.append(
                    f"| {metric} | {fmt(row.ours, row.unit)} | {base} | {ratio} | "
                    f"{row.goal_text or '—'} | {met} |"
                )
            lines.append("")
        lines += [f"- {n}" if not n.startswith("```") else n for n in r.notes]
        if r.notes:
            lines.append("")
        for png in plots.get(r.name, []):
            lines += [f"![{r.title}]({png})", ""]
        lines += [f"*{r.seconds:.1f} s*", ""]
    return "\n".join(lines)


def write_plots(results: list[Result], out: Path, size: str) -> dict[str, list[str]]:
    """One PNG per series; {scenario: [file names]}. Needs matplotlib (bench extra)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib is not installed: no plots (pip install -e '.[bench]')")
        return {}
    made: dict[str, list[str]] = {}
    for r in results:
        for k, s in enumerate(r.series):
            name = f"{size}-{r.name}-{k}.png"
            fig, ax = plt.subplots(figsize=(6.4, 4.2))
            _draw(ax, s)
            fig.tight_layout()
            fig.savefig(out / name, dpi=90)
            plt.close(fig)
            made.setdefault(r.name, []).append(name)
    return made


def _draw(ax: Any, s: Series) -> None:
    for label, ys in s.ys.items():
        pts = [(x, y) for x, y in zip(s.x, ys, strict=True) if y is not None]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
    if s.loglog:
        ax.set_xscale("log")
        ax.set_yscale("log")
    elif s.logx:
        ax.set_xscale("log")
    ax.set_title(s.title)
    ax.set_xlabel(s.xlabel)
    ax.set_ylabel(s.ylabel)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
