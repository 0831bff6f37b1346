"""``artledger`` commands that move history between stores: export, import, import-zenml."""

from __future__ import annotations

import argparse

from engine.cli.common import (
    EXIT_OK,
    EXIT_USAGE,
    SPEC,
    add_command,
    artifact_spec,
    looks_like_store,
    open_store,
    store_path,
)
from engine.cli.render import fmt_size, print_json, progress, stderr, stdout
from engine.errors import StoreError


def cmd_export(args: argparse.Namespace) -> int:
    with open_store(args) as store, progress("export") as update:
        try:
            report = store.export(args.file, names=args.name or None, progress=update)
        except OSError as e:  # the destination: permissions, a full disk
            raise StoreError(f"cannot export to {args.file}: {e.strerror or e}") from None
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

    joining = args.log is not None or args.chunks is not None
    if not joining and not looks_like_store(store_path(args)):
        # A new store: made by the import, and removed again if it is refused.
        with progress("import") as update:
            report = Store.import_(
                args.file, into=store_path(args), trust_pickles=args.trust_pickles, progress=update
            )
    else:
        with open_store(args, create=True) as store, progress("import") as update:
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
    if report.untrusted_pickles:
        out.print(
            f"  {report.untrusted_pickles} artifact versions hold pickles that will not load "
            "until trusted (`artledger trust --all-imported` if you trust the source)"
        )
    if report.resigned:
        out.print(f"  {report.resigned} pickles signed again with this store's secret")
    return EXIT_OK


def cmd_trust(args: argparse.Namespace) -> int:
    from engine.ops.trust import trust

    if bool(args.spec) == bool(args.all_imported):
        stderr().print("artledger trust: give NAME[:VERSION] or --all-imported (one of them)")
        return EXIT_USAGE
    with open_store(args) as store:
        if args.spec:
            arts = [artifact_spec(store.catalog, args.spec)]
        else:
            arts = [a for a in store.list_artifacts() if not a.trusted]
        done = []
        for a in arts:
            _, signed = trust(store, a)
            done.append({"name": a.name, "version": a.version, "id": a.id, "signed": signed})
    if args.json:
        print_json(done)
        return EXIT_OK
    out = stdout()
    for d in done:
        out.print(f"trusted {d['name']}:{d['version']} ({d['signed']} pickles signed again)")
    if not done:
        out.print("no untrusted artifact versions; nothing to do")
    return EXIT_OK


def cmd_import_zenml(args: argparse.Namespace) -> int:
    from engine.store import Store

    # A dry run against a path with no store yet plans against an empty one.
    fresh = args.dry_run and not looks_like_store(store_path(args))
    opened = Store.memory() if fresh else open_store(args, create=True)
    with opened as store, progress("import-zenml") as update:
        report = store.import_zenml(
            args.source,
            artifact_store=args.artifact_store,
            dry_run=args.dry_run,
            trust_pickles=args.trust_pickles,
            progress=update,
        )
    if args.json:
        print_json(report.__dict__)
        return EXIT_OK
    out = stdout()
    verb = "would import" if report.dry_run else "imported"
    out.print(
        f"{verb} from ZenML (schema {report.schema}): {report.runs} runs, {report.steps} step "
        f"runs ({report.cached_steps} cached, {report.failed_steps} failed), "
        f"{report.artifacts} artifact versions ({report.converted} converted, "
        f"{report.kept_as_files} kept as ZenML's files)"
    )
    if report.runs_already or report.artifacts_already:
        out.print(
            f"  already here, skipped: {report.runs_already} runs, "
            f"{report.artifacts_already} artifact versions"
        )
    if report.runs_unfinished:
        out.print(
            f"  {report.runs_unfinished} runs still in progress in ZenML were left for a later "
            "import"
        )
    if not report.dry_run:
        out.print(
            f"  {fmt_size(report.logical_bytes)} of artifact data in {report.chunks_written} new "
            f"chunks ({fmt_size(report.bytes_written)} stored) in {report.seconds:.2f} s"
        )
    for name, n in sorted(report.materializers.items()):
        out.print(f"  {n:5d} x {name}")
    if report.untrusted:
        out.print(
            f"  {report.untrusted} artifact versions kept as files are untrusted: their pickles "
            "will not load (import again into a fresh store with --trust-pickles if you trust "
            "the source)"
        )
    if report.signed:
        out.print(f"  {report.signed} pickles signed with this store's secret")
    return EXIT_OK


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Declare the transfer commands."""
    sp = add_command(
        sub,
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
    sp = add_command(
        sub,
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
    sp = add_command(
        sub,
        "trust",
        cmd_trust,
        "vouch for imported artifact versions: sign their pickles with this store's secret",
        json_flag=True,
    )
    sp.add_argument("spec", metavar=SPEC, nargs="?")
    sp.add_argument(
        "--all-imported", action="store_true", help="every untrusted (imported) live version"
    )
    sp = add_command(
        sub,
        "import-zenml",
        cmd_import_zenml,
        "import a ZenML local deployment's runs, artifacts and lineage",
        json_flag=True,
    )
    sp.add_argument("source", metavar="ZENML_CONFIG_DIR_OR_DB")
    sp.add_argument(
        "--artifact-store",
        metavar="PATH",
        help="the local artifact store's directory (default: local_stores/<its id> "
        "in the config directory)",
    )
    sp.add_argument(
        "--dry-run", action="store_true", help="read and check everything, write nothing"
    )
    sp.add_argument(
        "--trust-pickles",
        action="store_true",
        help="sign the imported pickles with this store's secret, so they load",
    )
