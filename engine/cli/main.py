"""The ``artledger`` command: inspect, replay, move, check and clean a store.

``artledger [--store PATH] COMMAND``; PATH defaults as for ``Store.open``
(``$ARTLEDGER_STORE``, else ``./.artledger``). Results go to stdout (tables
and trees through rich; ``--json`` and ``--format json|dot|mermaid`` print
clean machine-readable text); progress bars and chatter go to stderr.

Exit codes: 0 ok; 1 a problem was found (verify found damage, something was
not found, an import stream was refused, any other :class:`ArtledgerError`,
printed as one line on stderr); 2 usage errors; 130 interrupted.

Importing this module is cheap: the store, rich and numpy load on first use.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import fnmatch
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.cli.render import (
    artifact_row,
    artifacts_table,
    fmt_size,
    fmt_status,
    fmt_time,
    lineage_tree,
    new_table,
    plain,
    print_json,
    progress,
    run_row,
    runs_table,
    stderr,
    stdout,
    summary,
)
from engine.errors import ArtifactNotFoundError, ArtledgerError, InvalidArgumentError, StoreError

if TYPE_CHECKING:
    from engine.query.catalog import Catalog
    from engine.query.models import ArtifactVersion
    from engine.storage.log import Event
    from engine.store import Store

EXIT_OK, EXIT_PROBLEM, EXIT_USAGE = 0, 1, 2


# -- opening ---------------------------------------------------------------------------


def _store_path(args: argparse.Namespace) -> Path:
    from engine.store import default_path

    return Path(args.store) if args.store else default_path()


def _looks_like_store(path: Path) -> bool:
    return any((path / name).exists() for name in ("ledger", "packs", "secret", "identity"))


def _open(args: argparse.Namespace, *, create: bool = False) -> Store:
    from engine.store import Store

    path = _store_path(args)
    if not create and not _looks_like_store(path):
        raise StoreError(
            f"no store at {path}; pass --store PATH (or set ARTLEDGER_STORE), "
            "or create one with `artledger demo`"
        )
    return Store.open(path)


def _spec(catalog: Catalog, spec: str) -> ArtifactVersion:
    """``NAME`` or ``NAME:VERSION`` (a name containing ':' works when given whole)."""
    if ":" in spec:
        name, _, version = spec.rpartition(":")
        if name and version:
            try:
                return catalog.get_artifact(name, version)
            except ArtifactNotFoundError:
                try:
                    return catalog.get_artifact(spec)
                except ArtifactNotFoundError:
                    pass
                raise
    return catalog.get_artifact(spec)


# -- commands -------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    with _open(args, create=True) as store:
        try:
            from engine.cli.demo import run_demo  # type: ignore[import-not-found,unused-ignore]
        except ImportError:
            _fallback_demo(store)
        else:
            run_demo(store, stdout())
    return EXIT_OK


def _fallback_demo(store: Store) -> None:
    import numpy as np

    out = stdout()
    features = np.random.default_rng(0).random(1 << 18)
    for _ in range(2):
        store.save_artifact(features, "demo.features", tags=["demo"])
    store.save_artifact({"lr": 0.01, "epochs": 3}, "demo.config", tags=["demo"])
    out.print(artifacts_table(store.list_artifacts(tag="demo"), "artifacts written"))
    st = store.stats()
    out.print(
        f"{st['events']} events; {fmt_size(st['logical_bytes'])} logical, "
        f"{fmt_size(st['stored_bytes'])} stored (the second copy of demo.features is deduplicated)"
    )


def cmd_runs(args: argparse.Namespace) -> int:
    with _open(args) as store:
        runs = store.list_runs(args.pipeline)
        if args.json:
            print_json([run_row(r) for r in runs])
        else:
            stdout().print(runs_table(runs))
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    with _open(args) as store:
        run = store.get_run(args.id)
        steps = run.steps
        if args.json:
            row = run_row(run)
            row["steps"] = {inv: s.record() for inv, s in steps.items()}
            print_json(row)
            return EXIT_OK
        out = stdout()
        out.print(f"[bold]run {run.id}[/]  pipeline {run.pipeline}  {fmt_status(run.status)}")
        out.print(f"started {fmt_time(run.record().get('ts'))}  params {run.params}")
        if run.error:
            out.print(f"[red]error:[/] {run.error}")
        table = new_table(None, "invocation", "status", "step run", "cache key", "outputs")
        for inv, s in steps.items():
            outs = ", ".join(
                f"{k} -> {a.name}:{a.version}" for k, a in _safe_outputs(s.record(), store)
            )
            table.add_row(inv, fmt_status(s.status), s.id, (s.cache_key or "")[:12], outs)
        out.print(table)
    return EXIT_OK


def _safe_outputs(rec: dict[str, Any], store: Store) -> list[tuple[str, ArtifactVersion]]:
    out = []
    for k, aid in (rec.get("outputs") or {}).items():
        try:
            out.append((k, store.get_artifact_by_id(aid)))
        except ArtifactNotFoundError:
            continue
    return out


def cmd_artifacts(args: argparse.Namespace) -> int:
    with _open(args) as store:
        arts = store.list_artifacts(args.name, args.tag, include_deleted=args.all)
        if args.json:
            print_json([artifact_row(a) for a in arts])
        else:
            stdout().print(artifacts_table(arts))
    return EXIT_OK


def cmd_artifact(args: argparse.Namespace) -> int:
    with _open(args) as store:
        a = _spec(store, args.spec)
        rec = a.record()
        producer = None
        if rec.get("producer"):
            try:
                p = store.get_step_run(rec["producer"])
                producer = {"step_run": p.id, "invocation": p.invocation, "run": p.run_id}
            except ArtledgerError:
                producer = {"step_run": rec["producer"]}
        files = [
            {"name": f[0], "size": f[1], "hash": f[2], "chunks": len(f[3])} for f in rec["files"]
        ]
        if args.json:
            row = artifact_row(a)
            row.update(
                materializer=a.materializer,
                artifact_type=a.artifact_type,
                metadata=a.metadata,
                files=files,
                producer=producer,
                run=rec.get("run"),
                untrusted=bool(rec.get("untrusted")),
            )
            print_json(row)
            return EXIT_OK
        out = stdout()
        out.print(
            f"[bold]{a.name}:{a.version}[/]  id {a.id}" + ("  [red]deleted[/]" if a.deleted else "")
        )
        info = new_table(None, "field", "value")
        info.add_row("type", f"{a.data_type} ({a.artifact_type})")
        info.add_row("materializer", f"{a.materializer} v{a.materializer_version}")
        info.add_row("content hash", a.content_hash)
        info.add_row("size", f"{fmt_size(a.size)} ({a.size} bytes)")
        info.add_row("created", fmt_time(rec.get("ts")) + f"  (event {a.seq})")
        info.add_row("tags", ", ".join(a.tags))
        if producer:
            info.add_row("producer", " ".join(f"{k} {v}" for k, v in producer.items()))
        if rec.get("untrusted"):
            info.add_row("trust", "imported, untrusted (pickles will not load)")
        out.print(info)
        meta = new_table("metadata", "key", "value")
        for k, v in sorted(a.metadata.items()):
            meta.add_row(k, json.dumps(plain(v))[:200])
        out.print(meta)
        ftable = new_table("files", "name", "size", "hash", "chunks")
        for f in files:
            ftable.add_row(f["name"], fmt_size(f["size"]), f["hash"], str(f["chunks"]))
        out.print(ftable)
    return EXIT_OK


def cmd_lineage(args: argparse.Namespace) -> int:
    with _open(args) as store:
        a = _spec(store, args.spec)
        graph = store.lineage(a, "downstream" if args.down else "upstream", args.depth)
        if args.format == "json":
            sys.stdout.write(graph.to_json() + "\n")
        elif args.format == "dot":
            sys.stdout.write(graph.to_dot())
        elif args.format == "mermaid":
            sys.stdout.write(graph.to_mermaid())
        else:
            stdout().print(lineage_tree(graph, down=args.down))
    return EXIT_OK


def cmd_explain(args: argparse.Namespace) -> int:
    with _open(args) as store:
        step_run = store.get_step_run(args.step_run)
        reasons = list(store.explain(step_run)) if hasattr(store, "explain") else []
        if args.json:
            print_json(
                {
                    "step_run": step_run.id,
                    "invocation": step_run.invocation,
                    "status": step_run.status,
                    "reasons": reasons,
                }
            )
            return EXIT_OK
        out = stdout()
        out.print(f"[bold]{step_run.invocation}[/] ({step_run.step}) {fmt_status(step_run.status)}")
        if not reasons:
            out.print("no difference recorded (a cache hit, or nothing earlier to compare with)")
        for r in reasons:
            out.print(f"  - {r}")
    return EXIT_OK


def cmd_log(args: argparse.Namespace) -> int:
    with _open(args) as store:
        printed = 0
        out = stdout()

        def show(e: Event) -> bool:
            nonlocal printed
            if args.type and not fnmatch.fnmatchcase(e.type, args.type):
                return True
            if args.json:
                sys.stdout.write(
                    json.dumps(plain({"seq": e.seq, "type": e.type, "ts": e.ts, "data": e.data}))
                    + "\n"
                )
                sys.stdout.flush()
            else:
                out.print(f"{e.seq:>8}  {fmt_time(e.ts)}  [bold]{e.type:<18}[/] {summary(e)}")
            printed += 1
            return args.limit is None or printed < args.limit

        pos = max(1, args.start)
        for e in store.events(pos):
            pos = e.seq + 1
            if not show(e):
                return EXIT_OK
        if not args.follow:
            return EXIT_OK
        deadline = None if args.timeout is None else time.monotonic() + args.timeout
        while deadline is None or time.monotonic() < deadline:
            time.sleep(args.interval)
            for e in store.events(pos):
                pos = e.seq + 1
                if not show(e):
                    return EXIT_OK
    return EXIT_OK


def _as_of_arg(text: str) -> int | _dt.datetime:
    if text.isdigit():
        return int(text)
    try:
        when = _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidArgumentError(
            f"--as-of {text!r}: give an event sequence number or an ISO time "
            "(e.g. 2024-05-01T12:00:00)"
        ) from None
    return when


def cmd_replay(args: argparse.Namespace) -> int:
    if not (args.rebuild or args.as_of or args.into):
        stderr().print("artledger replay: give --rebuild, --as-of SEQ|ISO-TIME and/or --into DIR")
        return EXIT_USAGE
    with _open(args) as store:
        if args.rebuild:
            head = store.head
            t0 = time.perf_counter()
            with progress("rebuild") as update:
                n = store.rebuild(progress=lambda done, total: update("events", done, total))
            dt = max(time.perf_counter() - t0, 1e-9)
            stdout().print(
                f"rebuilt the projections from {n} events in {dt:.2f} s ({n / dt:,.0f} events/s)"
            )
            assert n == head or head == 0 or n >= head
        seq: int | None = None
        if args.as_of:
            view = store.as_of(_as_of_arg(args.as_of))
            seq = view.head
            if not args.into:
                _show_view(view, args.json)
        if args.into:
            from engine.ops.transfer import copy_history

            with progress("replay --into") as update:
                new, report = copy_history(store, args.into, upto=seq, progress=update)
            with new:
                head = new.head
            stdout().print(
                f"new store {args.into}: {report.events} events copied "
                f"(history up to event {seq if seq is not None else store.head}; head {head}), "
                f"{report.chunks_written} chunks, {fmt_size(report.bytes_written)} stored"
            )
    return EXIT_OK


def _show_view(view: Any, as_json: bool) -> None:
    arts = view.list_artifacts(include_deleted=True)
    runs = view.list_runs()
    events = list(view.events(view.head, view.head + 1)) if view.head else []
    when = fmt_time(events[0].ts) if events else ""
    if as_json:
        print_json(
            {
                "seq": view.head,
                "time": when,
                "stats": view.stats(),
                "artifacts": [artifact_row(a) for a in arts],
                "runs": [run_row(r) for r in runs],
            }
        )
        return
    out = stdout()
    out.print(f"[bold]as of event {view.head}[/] ({when})")
    st = view.stats()
    out.print(
        f"{st['artifacts']} live artifact versions ({fmt_size(st['logical_bytes'])}), "
        f"{st['runs']} runs"
    )
    out.print(artifacts_table(arts, "artifacts then"))
    if runs:
        out.print(runs_table(runs, "runs then"))


def cmd_export(args: argparse.Namespace) -> int:
    with _open(args) as store, progress("export") as update:
        report = store.export(args.file, names=args.name or None, progress=update)
    if args.json:
        print_json(report.__dict__)
        return EXIT_OK
    rate = report.stream_bytes / max(report.seconds, 1e-9) / 2**20
    stdout().print(
        f"exported {report.events} events and {report.chunks} chunks "
        f"({fmt_size(report.chunk_bytes)} of data) to {args.file}: {fmt_size(report.stream_bytes)} "
        f"in {report.seconds:.2f} s ({rate:.0f} MiB/s)"
    )
    return EXIT_OK


def cmd_import(args: argparse.Namespace) -> int:
    from engine.store import Store

    with _open(args, create=True) as store, progress("import") as update:
        report = Store.import_(
            args.file, into=store, trust_pickles=args.trust_pickles, progress=update
        )
    if args.json:
        print_json(report.__dict__)
        return EXIT_OK
    out = stdout()
    if report.already_imported:
        out.print(f"{args.file} is already imported here; nothing to do")
        return EXIT_OK
    out.print(
        f"imported {report.events} events (seq {report.first_seq}..{report.last_seq}): "
        f"{report.artifacts} artifact versions, {report.runs} runs; "
        f"{report.chunks_written} new chunks ({fmt_size(report.bytes_written)} stored) "
        f"in {report.seconds:.2f} s"
    )
    for name, shift in sorted(report.renumbered.items()):
        out.print(f"  versions of {name!r} shifted by {shift} (the store already had some)")
    if report.untrusted:
        out.print(
            f"  {report.untrusted} artifact versions are marked untrusted: their pickles will "
            "not load (re-import with --trust-pickles if you trust the source)"
        )
    if report.resigned:
        out.print(f"  {report.resigned} pickles signed again with this store's secret")
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    data = _store_path(args) / "ledger" / "data.mdb"
    if data.is_file():
        from engine.ops.salvage import walk_ledger

        # Read the whole ledger in a child process first: a damaged page can kill
        # the process that reads it, and this one must live to say so.
        problems = walk_ledger(data)
        if problems:
            problems.append("the store was not opened; `artledger recover` rebuilds the ledger")
            if args.json:
                print_json({"ok": False, "problems": problems, "remaining": problems})
            else:
                for p in problems:
                    stdout().print(f"[red]problem:[/] {p}")
            return EXIT_PROBLEM
    with _open(args) as store:
        with progress("verify") as update:
            report = store.verify(fix=args.fix, progress=update)
            remaining = report.problems
            if args.fix and report.fixed:
                remaining = store.verify(progress=update).problems
        if args.json:
            print_json({**report.__dict__, "ok": not remaining, "remaining": remaining})
            return EXIT_PROBLEM if remaining else EXIT_OK
        out = stdout()
        for p in report.problems:
            out.print(f"[red]problem:[/] {p}")
        for n in report.notes:
            out.print(f"[yellow]note:[/] {n}")
        for f in report.fixed:
            out.print(f"[green]fixed:[/] {f}")
        checked = ", ".join(f"{v} {k}" for k, v in report.checked.items())
        if remaining:
            out.print(f"[red]{len(remaining)} problem(s)[/] (checked {checked})")
            return EXIT_PROBLEM
        out.print(f"[green]ok[/]: checked {checked}")
    return EXIT_OK


def cmd_recover(args: argparse.Namespace) -> int:
    from engine.store import Store

    path = _store_path(args)
    if not _looks_like_store(path):
        raise StoreError(f"no store at {path}; pass --store PATH (or set ARTLEDGER_STORE)")
    with progress("recover") as update:
        report = Store.recover(path, from_export=args.from_file, progress=update)
    if args.json:
        print_json({**report.__dict__, "ok": report.ok})
        return EXIT_OK if report.ok else EXIT_PROBLEM
    out = stdout()
    if report.moved_to is not None:
        out.print(f"the old ledger was moved to {report.moved_to} (kept)")
    if report.events_imported:
        out.print(f"imported {report.events_imported} events from {args.from_file}")
    else:
        old = "" if report.events_in_old_log is None else f" (it had {report.events_in_old_log})"
        got = f"events 1..{report.events_salvaged}" if report.events_salvaged else "no events"
        out.print(f"salvaged {got} from the old ledger{old}")
    if report.stopped_at is not None:
        out.print(f"[yellow]salvage stopped at event {report.stopped_at}:[/] {report.stop_reason}")
    out.print(
        f"re-indexed {report.chunks_reindexed} chunks from {report.segments} pack segments "
        f"({report.damaged_pack_records} damaged records skipped) and "
        f"{report.inline_chunks} small chunks from the old chunk index"
    )
    for n in report.notes:
        out.print(f"[yellow]note:[/] {n}")
    if report.missing:
        out.print(
            f"[red]{len(report.missing)} artifact versions lost chunks:[/] "
            + ", ".join(report.missing)
        )
    for p in report.problems:
        out.print(f"[red]problem:[/] {p}")
    if report.ok:
        out.print(f"[green]ok[/]: recovered in {report.seconds:.2f} s")
        return EXIT_OK
    out.print(f"recovered in {report.seconds:.2f} s, with losses (above)")
    return EXIT_PROBLEM


def cmd_gc(args: argparse.Namespace) -> int:
    with _open(args) as store:
        report = store.gc(dry_run=args.dry_run, explain=args.explain)
    if args.json:
        print_json(report.__dict__)
        return EXIT_OK
    out = stdout()
    verb = "would reclaim" if report.dry_run else "reclaimed"
    out.print(
        f"{verb} {report.chunks_reclaimed} chunks ({fmt_size(report.bytes_reclaimed)}); "
        f"kept {report.chunks_kept} chunks ({fmt_size(report.bytes_kept)})"
        + (
            ""
            if report.dry_run
            else f"; {report.segments_compacted} pack segments compacted, "
            f"{report.segments_deleted} deleted"
        )
    )
    for note in report.notes:
        out.print(f"note: {note}")
    if args.explain:
        table = new_table(
            "why each kept chunk lives", "chunk", "referenced by (live artifact versions)"
        )
        for digest, labels in sorted(report.why_kept.items(), key=lambda kv: kv[1]):
            table.add_row(digest, ", ".join(labels))
        out.print(table)
    return EXIT_OK


def cmd_stats(args: argparse.Namespace) -> int:
    with _open(args) as store:
        st = store.stats()
    if args.json:
        print_json(st)
        return EXIT_OK
    table = new_table(None, "stat", "value")
    for k, v in st.items():
        table.add_row(k, f"{v:,}" + (f"  ({fmt_size(v)})" if k.endswith("bytes") else ""))
    stdout().print(table)
    return EXIT_OK


# -- the parser -------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="artledger",
        description="Inspect, replay, export/import, verify and clean an artledger store.",
    )
    p.add_argument(
        "--store", metavar="PATH", help="store directory ($ARTLEDGER_STORE, ./.artledger)"
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(
        name: str, fn: Callable[[argparse.Namespace], int], help_: str, *, json_flag: bool = False
    ) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_, description=help_)
        sp.set_defaults(func=fn)
        if json_flag:
            sp.add_argument("--json", action="store_true", help="machine-readable output on stdout")
        return sp

    add("demo", cmd_demo, "run a small pipeline twice on the store and show what was kept")
    sp = add("runs", cmd_runs, "list runs, oldest first", json_flag=True)
    sp.add_argument("--pipeline", help="only runs of this pipeline")
    sp = add("run", cmd_run, "one run and its step runs", json_flag=True)
    sp.add_argument("id")
    sp = add("artifacts", cmd_artifacts, "list artifact versions, oldest first", json_flag=True)
    sp.add_argument("--name", help="only versions of this name")
    sp.add_argument("--tag", help="only versions with this tag")
    sp.add_argument("--all", action="store_true", help="include deleted versions")
    sp = add(
        "artifact",
        cmd_artifact,
        "one artifact version: metadata, files, producer, tags",
        json_flag=True,
    )
    sp.add_argument("spec", metavar="NAME[:VERSION]")
    sp = add(
        "lineage", cmd_lineage, "where an artifact came from (or, with --down, what came of it)"
    )
    sp.add_argument("spec", metavar="NAME[:VERSION]")
    sp.add_argument("--down", action="store_true", help="downstream instead of upstream")
    sp.add_argument("--depth", type=int, default=None, help="at most N step hops")
    sp.add_argument("--format", choices=("tree", "dot", "json", "mermaid"), default="tree")
    sp = add(
        "explain",
        cmd_explain,
        "why a step run ran: what differs from the nearest earlier run",
        json_flag=True,
    )
    sp.add_argument("step_run", metavar="STEP_RUN")
    sp = add(
        "log", cmd_log, "print events (and, with --follow, new ones as they arrive)", json_flag=True
    )
    sp.add_argument("--follow", "-f", action="store_true", help="keep printing new events")
    sp.add_argument("--type", help="only events of this type (glob: 'artifact.*')")
    sp.add_argument("--start", type=int, default=1, help="first sequence number")
    sp.add_argument("--limit", type=int, default=None, help="stop after N events")
    sp.add_argument("--timeout", type=float, default=None, help="stop following after S seconds")
    sp.add_argument("--interval", type=float, default=0.2, help=argparse.SUPPRESS)
    sp = add(
        "replay",
        cmd_replay,
        "rebuild projections, look at the past, or copy history",
        json_flag=True,
    )
    sp.add_argument("--rebuild", action="store_true", help="drop and refold every projection")
    sp.add_argument("--as-of", metavar="SEQ|ISO-TIME", help="the catalog as of an event or a time")
    sp.add_argument("--into", metavar="DIR", help="a new store holding history up to --as-of")
    sp = add(
        "export",
        cmd_export,
        "write a portable, checksummed stream of events and chunks",
        json_flag=True,
    )
    sp.add_argument("file")
    sp.add_argument(
        "--name",
        action="append",
        metavar="NAME",
        help="only this artifact and its lineage (repeatable)",
    )
    sp = add(
        "import",
        cmd_import,
        "validate a stream completely, then import it all-or-nothing",
        json_flag=True,
    )
    sp.add_argument("file")
    sp.add_argument(
        "--trust-pickles",
        action="store_true",
        help="sign the stream's pickles with this store's secret",
    )
    sp = add(
        "verify",
        cmd_verify,
        "check the chain, every chunk, the projections and the packs",
        json_flag=True,
    )
    sp.add_argument(
        "--fix", action="store_true", help="rebuild projections, truncate torn pack tails"
    )
    sp = add(
        "recover",
        cmd_recover,
        "rebuild a lost or damaged ledger from what still reads, the packs, or an export",
        json_flag=True,
    )
    sp.add_argument(
        "--from",
        dest="from_file",
        metavar="FILE",
        help="take the events from this `artledger export` stream",
    )
    sp = add("gc", cmd_gc, "reclaim chunks no live artifact version references", json_flag=True)
    sp.add_argument("--dry-run", action="store_true", help="report only")
    sp.add_argument("--explain", action="store_true", help="say why each kept chunk lives")
    add("stats", cmd_stats, "counts and sizes", json_flag=True)
    from engine.cli import ui

    ui.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``artledger`` console command; the exit code."""
    args = _parser().parse_args(argv)
    if getattr(args, "depth", None) is not None and args.depth < 0:
        stderr().print("artledger: error: --depth must be >= 0")
        return EXIT_USAGE
    try:
        return int(args.func(args))
    except ArtledgerError as e:
        sys.stderr.write(f"artledger: error: {e}\n")
        return EXIT_PROBLEM
    except KeyboardInterrupt:
        sys.stderr.write("artledger: interrupted\n")
        return 130
    except BrokenPipeError:
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
