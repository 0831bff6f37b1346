"""``artledger`` commands that act on one artifact version: files (extract its
files), tag, untag, delete."""

from __future__ import annotations

import argparse
from pathlib import Path

from engine.cli.common import EXIT_OK, SPEC, add_command, artifact_spec, open_store
from engine.cli.render import print_json, stdout


def cmd_files(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        a = artifact_spec(store.catalog, args.spec)
        paths = a.export_files(Path(args.dir))
    if args.json:
        print_json([str(p) for p in paths])
        return EXIT_OK
    out = stdout()
    for p in paths:
        out.print(str(p))
    return EXIT_OK


def cmd_tag(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        a = artifact_spec(store.catalog, args.spec)
        a = store.untag(a, *args.tags) if args.command == "untag" else store.tag(a, *args.tags)
    stdout().print(f"{a.name}:{a.version} tags: {', '.join(a.tags) or '(none)'}")
    return EXIT_OK


def cmd_delete(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        a = artifact_spec(store.catalog, args.spec)
        store.delete_artifact(a)
    stdout().print(f"deleted {a.name}:{a.version} (id {a.id}); its bytes stay until `artledger gc`")
    return EXIT_OK


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Declare the commands on one artifact version."""
    sp = add_command(
        sub,
        "files",
        cmd_files,
        "write an artifact version's files, byte-exact, into DIR",
        json_flag=True,
    )
    sp.add_argument("spec", metavar=SPEC)
    sp.add_argument("dir", metavar="DIR", help="created when missing")
    for name, what in (("tag", "add tags to"), ("untag", "remove tags from")):
        sp = add_command(sub, name, cmd_tag, f"{what} an artifact version")
        sp.add_argument("spec", metavar=SPEC)
        sp.add_argument("tags", metavar="TAG", nargs="+")
    sp = add_command(
        sub, "delete", cmd_delete, "delete an artifact version (gc reclaims its bytes later)"
    )
    sp.add_argument("spec", metavar=SPEC)
