"""``artledger`` commands that check and maintain a store: verify, recover, gc, stats."""

from __future__ import annotations

import argparse

from engine.cli.common import (
    EXIT_OK,
    EXIT_PROBLEM,
    add_command,
    looks_like_store,
    open_store,
    store_path,
)
from engine.cli.render import fmt_size, new_table, print_json, progress, stdout
from engine.errors import StoreError


def cmd_verify(args: argparse.Namespace) -> int:
    data = store_path(args) / "ledger" / "data.mdb"
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
    with open_store(args) as store:
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

    path = store_path(args)
    if not looks_like_store(path):
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


def cmd_sync(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        status = store.sync()
    if status is None:
        raise StoreError(
            f"the store at {store_path(args)} is not a shared store: there is nothing to sync"
        )
    if args.json:
        print_json({**status.__dict__, "online": status.online})
        return EXIT_OK
    stdout().print(f"pulled {status.pulled} events; head is event {status.head}")
    return EXIT_OK


def cmd_gc(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        report = store.gc(dry_run=args.dry_run, explain=args.explain, grace=args.grace)
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
            + (f", {report.objects_deleted} objects deleted" if report.objects_deleted else "")
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
    with open_store(args) as store:
        st = store.stats()
    if args.json:
        print_json(st)
        return EXIT_OK
    table = new_table(None, "stat", "value")
    for k, v in st.items():
        table.add_row(k, f"{v:,}" + (f"  ({fmt_size(v)})" if k.endswith("bytes") else ""))
    stdout().print(table)
    return EXIT_OK


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Declare the maintenance commands."""
    sp = add_command(
        sub,
        "verify",
        cmd_verify,
        "check the chain, every chunk, the projections and the packs",
        json_flag=True,
    )
    sp.add_argument(
        "--fix", action="store_true", help="rebuild projections, truncate torn pack tails"
    )
    sp = add_command(
        sub,
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
    sp = add_command(
        sub, "gc", cmd_gc, "reclaim chunks no live artifact version references", json_flag=True
    )
    sp.add_argument("--dry-run", action="store_true", help="report only")
    sp.add_argument("--explain", action="store_true", help="say why each kept chunk lives")
    sp.add_argument(
        "--grace",
        type=float,
        default=3600.0,
        metavar="SECONDS",
        help="shared store: delete unreferenced objects only once this old (default 3600)",
    )
    add_command(sub, "stats", cmd_stats, "counts and sizes", json_flag=True)
    add_command(
        sub,
        "sync",
        cmd_sync,
        "pull what other machines committed to a shared store into this replica",
        json_flag=True,
    )
