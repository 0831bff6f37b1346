"""``artledger`` commands over the event history: log (and follow), replay (rebuild
the projections, look at the past, copy history into a new store)."""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import fnmatch
import json
import sys
import time
from typing import TYPE_CHECKING, Any

from engine.cli.common import EXIT_OK, EXIT_USAGE, add_command, open_store
from engine.cli.render import (
    artifact_row,
    artifacts_table,
    fmt_size,
    fmt_time,
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
from engine.errors import InvalidArgumentError, SharedStoreUnavailableError

if TYPE_CHECKING:
    from engine.storage.log import Event


def cmd_log(args: argparse.Namespace) -> int:
    with open_store(args) as store:
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
            with contextlib.suppress(SharedStoreUnavailableError):
                store.sync()  # a shared store: pull what other machines wrote
            for e in store.events(pos):
                pos = e.seq + 1
                if not show(e):
                    return EXIT_OK
    return EXIT_OK


def _as_of_arg(text: str) -> int | _dt.datetime:
    if text.isdigit():
        if int(text) == 0:
            raise InvalidArgumentError(
                "--as-of 0: events are numbered from 1 (the store's creation); give an "
                "event sequence number from 1 to the head (`artledger log`), or an ISO time"
            )
        return int(text)
    try:
        when = _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidArgumentError(
            f"--as-of {text!r}: give an event sequence number or an ISO time "
            "(e.g. 2024-05-01T12:00:00)"
        ) from None
    return when


_WHAT_IF_KEYS = {"chunking": str, "chunk-size": int, "codec": str, "level": int}


def _size_arg(text: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    t = text.strip().lower().removesuffix("ib").removesuffix("b")
    scale = units.get(t[-1:], 1)
    return int(float(t[:-1] if scale > 1 else t) * scale)


def _what_if_arg(text: str) -> dict[str, Any]:
    """``chunking=cdc,chunk-size=1MiB,codec=zstd,level=3`` as what_if's keywords."""
    out: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, eq, value = part.partition("=")
        if not eq or key not in _WHAT_IF_KEYS:
            raise InvalidArgumentError(
                f"--what-if {part!r}: give key=value pairs among {', '.join(_WHAT_IF_KEYS)} "
                "(e.g. chunking=cdc,chunk-size=4MiB,codec=auto,level=3)"
            )
        try:
            out[key.replace("-", "_")] = (
                _size_arg(value) if key == "chunk-size" else _WHAT_IF_KEYS[key](value)
            )
        except ValueError:
            raise InvalidArgumentError(f"--what-if {part!r}: {value!r} is not a number") from None
    return out


def _what_if(store: Any, spec: str, as_json: bool) -> None:
    policy = _what_if_arg(spec)
    with progress("what-if") as update:
        report = store.what_if(progress=update, **policy)
    if as_json:
        print_json(report.to_dict())
        return
    p = report.policy
    table = new_table(
        f"what-if: chunking {p['chunking']}, chunk size {fmt_size(p['chunk_size'])}, "
        f"codec {p['codec']}, level {p['level']} (nothing written)",
        "artifact",
        "versions",
        "logical",
        "stored now",
        "stored what-if",
        "change",
        "dedup now",
        "dedup what-if",
        "time",
    )
    for n in [*report.names, report.total()]:
        change = n.stored_what_if / n.stored_now - 1 if n.stored_now else 0.0
        table.add_row(
            n.name,
            str(n.versions),
            fmt_size(n.logical),
            fmt_size(n.stored_now),
            fmt_size(n.stored_what_if),
            f"{change:+.1%}",
            f"{n.dedup_now:.2f}x",
            f"{n.dedup_what_if:.2f}x",
            f"{n.seconds:.2f} s",
        )
    stdout().print(table)
    if report.skipped:
        stdout().print(f"{report.skipped} deleted versions skipped: their chunks are collected")


def cmd_replay(args: argparse.Namespace) -> int:
    if not (args.rebuild or args.as_of or args.into or args.what_if):
        stderr().print(
            "artledger replay: give --rebuild, --as-of SEQ|ISO-TIME, --into DIR "
            "and/or --what-if POLICY"
        )
        return EXIT_USAGE
    if args.what_if:
        _what_if_arg(args.what_if)  # a bad policy fails before the store is opened
    with open_store(args) as store:
        if args.what_if:
            _what_if(store, args.what_if, args.json)
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


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Declare the history commands."""
    sp = add_command(
        sub,
        "log",
        cmd_log,
        "print events (and, with --follow, new ones as they arrive)",
        json_flag=True,
    )
    sp.add_argument("--follow", "-f", action="store_true", help="keep printing new events")
    sp.add_argument("--type", help="only events of this type (glob: 'artifact.*')")
    sp.add_argument("--start", type=int, default=1, help="first sequence number")
    sp.add_argument("--limit", type=int, default=None, help="stop after N events")
    sp.add_argument("--timeout", type=float, default=None, help="stop following after S seconds")
    sp.add_argument("--interval", type=float, default=0.2, help=argparse.SUPPRESS)
    sp = add_command(
        sub,
        "replay",
        cmd_replay,
        "rebuild projections, look at the past, or copy history",
        json_flag=True,
    )
    sp.add_argument("--rebuild", action="store_true", help="drop and refold every projection")
    sp.add_argument("--as-of", metavar="SEQ|ISO-TIME", help="the catalog as of an event or a time")
    sp.add_argument("--into", metavar="DIR", help="a new store holding history up to --as-of")
    sp.add_argument(
        "--what-if",
        metavar="POLICY",
        help="re-chunk and re-compress the whole history in memory, writing nothing, and "
        "report stored bytes per artifact name: chunking=cdc|fixed,chunk-size=4MiB,"
        "codec=auto|zstd|raw,level=3 (any subset)",
    )
