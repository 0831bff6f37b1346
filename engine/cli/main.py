"""The ``artledger`` command: inspect, replay, move, check and clean a store.

``artledger [--store PATH] [--log URL --chunks URL] COMMAND``; PATH defaults
as for ``Store.open`` (``$ARTLEDGER_STORE``, else ``./.artledger``); with
``--log``/``--chunks`` (or a replica that recorded them) PATH is this
machine's replica of a shared store. Results go to stdout (tables
and trees through rich; ``--json`` and ``--format json|dot|mermaid`` print
clean machine-readable text); progress bars and chatter go to stderr.

Exit codes: 0 ok; 1 a problem was found (verify found damage, something was
not found, an import stream was refused, any other :class:`ArtledgerError`,
printed as one line on stderr); 2 usage errors; 130 interrupted.

Importing this module is cheap: the store, rich and numpy load on first use.
"""

from __future__ import annotations

import argparse
import sys

from engine.cli import (
    commands_artifacts,
    commands_catalog,
    commands_history,
    commands_maintenance,
    commands_transfer,
    ui,
)
from engine.cli.common import EXIT_OK, EXIT_PROBLEM, EXIT_USAGE
from engine.cli.render import stderr
from engine.errors import ArtledgerError

# Each module declares its subcommands with ``add_parser(sub)``; help lists them in this order.
COMMAND_MODULES = (
    commands_catalog,
    commands_artifacts,
    commands_history,
    commands_transfer,
    commands_maintenance,
    ui,
)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="artledger",
        description="Inspect, replay, export/import, verify and clean an artledger store.",
    )
    p.add_argument(
        "--store", metavar="PATH", help="store directory ($ARTLEDGER_STORE, ./.artledger)"
    )
    p.add_argument(
        "--log",
        metavar="URL",
        help="a shared store's log, postgresql://user@host:port/db ($ARTLEDGER_LOG); "
        "PATH is then this machine's replica",
    )
    p.add_argument(
        "--chunks",
        metavar="URL",
        help="a shared store's chunks, s3://bucket/prefix or file:///dir ($ARTLEDGER_CHUNKS)",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.add_parser(sub)
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
