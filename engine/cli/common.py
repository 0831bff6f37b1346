"""What every ``artledger`` command shares: exit codes, opening the store, naming an
artifact version, and declaring a subcommand.

Each ``commands_*`` module exposes ``add_parser(sub)``, which declares its
subcommands with :func:`add_command`; ``engine.cli.main`` calls them in order.
"""

from __future__ import annotations

import argparse
import string
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from engine.cli.render import stderr
from engine.errors import ArtifactNotFoundError, StoreError

if TYPE_CHECKING:
    from engine.query.catalog import Catalog
    from engine.query.models import ArtifactVersion
    from engine.store import Store

EXIT_OK, EXIT_PROBLEM, EXIT_USAGE = 0, 1, 2
SPEC = "NAME[:VERSION|:latest|@TAG]"
"""How commands that take an artifact version name it (:func:`artifact_spec`)."""

Command = Callable[[argparse.Namespace], int]
"""A subcommand's handler: the parsed arguments in, the exit code out."""


def add_command(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    fn: Command,
    help_: str,
    *,
    json_flag: bool = False,
) -> argparse.ArgumentParser:
    """Declare subcommand ``name`` run by ``fn``; ``json_flag`` adds ``--json``."""
    sp = sub.add_parser(name, help=help_, description=help_)
    sp.set_defaults(func=fn)
    if json_flag:
        sp.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    return sp


def store_path(args: argparse.Namespace) -> Path:
    """``--store``, else the default store path (``$ARTLEDGER_STORE``, ``./.artledger``)."""
    from engine.store import default_path

    return Path(args.store) if args.store else default_path()


def looks_like_store(path: Path) -> bool:
    """Whether ``path`` holds any part of a store (so opening it creates nothing)."""
    return any(
        (path / name).exists() for name in ("ledger", "packs", "secret", "identity", "shared.json")
    )


def open_store(args: argparse.Namespace, *, create: bool = False) -> Store:
    """The store at ``--store``; unless ``create``, refuse a path that holds none."""
    from engine.store import Store

    path = store_path(args)
    log, chunks = getattr(args, "log", None), getattr(args, "chunks", None)
    joining = log is not None or chunks is not None
    if not create and not joining and not looks_like_store(path):
        raise StoreError(
            f"no store at {path}; pass --store PATH (or set ARTLEDGER_STORE), "
            "or create one with `artledger demo`"
        )
    store = Store.open(path, log=log, chunks=chunks)
    status = store.replica_status()
    if status is not None and not status.online:
        stderr().print(f"[yellow]offline:[/] reading the replica as it is ({status.staleness()})")
    return store


def artifact_spec(catalog: Catalog, spec: str) -> ArtifactVersion:
    """``NAME``, ``NAME:VERSION``, ``NAME:latest``, ``NAME@TAG`` (the newest
    version with that tag), or an artifact id or a unique prefix of one (at
    least 4 hex digits, when no name matches); a name containing ':' or '@'
    works when given whole."""
    try:
        return _by_name(catalog, spec)
    except ArtifactNotFoundError:
        if len(spec) >= 4 and all(c in string.hexdigits for c in spec):
            try:
                return catalog.get_artifact_by_id(catalog.complete_id("artifact", spec))
            except ArtifactNotFoundError:
                pass
        raise


def _by_name(catalog: Catalog, spec: str) -> ArtifactVersion:
    for sep in (":", "@"):
        if sep not in spec:
            continue
        name, _, version = spec.rpartition(sep)
        if name and version:
            try:
                if sep == "@":
                    return catalog.get_artifact(name, tag=version)
                return catalog.get_artifact(name, version)
            except ArtifactNotFoundError:
                try:
                    return catalog.get_artifact(spec)
                except ArtifactNotFoundError:
                    pass
                raise
    return catalog.get_artifact(spec)


def save_visualizations(art: ArtifactVersion, args: argparse.Namespace) -> list[Path]:
    """Write ``art``'s visualizations into ``args.save_visualizations``; the paths."""
    from engine.storage.files import check_name

    target = Path(args.save_visualizations)
    out = []
    for name, _, data in art.visualizations:
        dest = target / check_name(name)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
        out.append(dest)
    return out
