"""``artledger`` commands that read the catalog: demo, runs, run, artifacts, artifact,
lineage, explain."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from engine.cli.common import (
    EXIT_OK,
    SPEC,
    add_command,
    artifact_spec,
    open_store,
    save_visualizations,
)
from engine.cli.render import (
    artifact_row,
    artifacts_table,
    cache_reason,
    fmt_size,
    fmt_status,
    fmt_time,
    lineage_tree,
    new_table,
    plain,
    print_json,
    run_row,
    runs_table,
    stdout,
)
from engine.errors import ArtifactNotFoundError, ArtledgerError

if TYPE_CHECKING:
    from engine.query.models import ArtifactVersion
    from engine.store import Store


def cmd_demo(args: argparse.Namespace) -> int:
    from engine.cli.demo import run_demo

    with open_store(args, create=True) as store:
        run_demo(store, stdout())
    return EXIT_OK


def cmd_runs(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        runs = store.list_runs(args.pipeline)
        if args.json:
            print_json([run_row(r) for r in runs])
        else:
            stdout().print(runs_table(runs))
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        run = store.get_run(store.catalog.complete_id("run", args.id))
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
        table = new_table(None, "invocation", "status", "step run", "cache key", "cache", "outputs")
        for inv, s in steps.items():
            outs = ", ".join(
                f"{k} -> {a.name}:{a.version}" for k, a in _safe_outputs(s.record(), store)
            )
            table.add_row(
                inv, fmt_status(s.status), s.id, (s.cache_key or "")[:12], cache_reason(s), outs
            )
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
    with open_store(args) as store:
        arts = store.list_artifacts(args.name, args.tag, include_deleted=args.all)
        if args.json:
            print_json([artifact_row(a) for a in arts])
        else:
            stdout().print(artifacts_table(arts))
    return EXIT_OK


def cmd_artifact(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        a = artifact_spec(store.catalog, args.spec)
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
        vis = [{"name": v[0], "kind": v[1], "size": v[2][1]} for v in rec.get("visualizations", [])]
        saved = [] if args.save_visualizations is None else save_visualizations(a, args)
        if args.json:
            row = artifact_row(a)
            row.update(
                materializer=a.materializer,
                artifact_type=a.artifact_type,
                metadata=a.metadata,
                user_metadata=a.user_metadata,
                files=files,
                producer=producer,
                run=rec.get("run"),
                untrusted=bool(rec.get("untrusted")),
                visualizations=vis,
                saved_visualizations=saved,
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
            info.add_row(
                "trust",
                "imported, untrusted (pickles will not load; "
                f"`artledger trust {a.name}:{a.version}` vouches for it)",
            )
        out.print(info)
        meta = new_table("metadata", "key", "value")
        for k, v in sorted(a.metadata.items()):
            meta.add_row(k, json.dumps(plain(v))[:200])
        out.print(meta)
        ftable = new_table("files", "name", "size", "hash", "chunks")
        for f in files:
            ftable.add_row(f["name"], fmt_size(f["size"]), f["hash"], str(f["chunks"]))
        out.print(ftable)
        if vis:
            vtable = new_table("visualizations", "name", "kind", "size")
            for v in vis:
                vtable.add_row(v["name"], v["kind"], fmt_size(v["size"]))
            out.print(vtable)
        for path in saved:
            out.print(f"wrote {path}")
    return EXIT_OK


def cmd_lineage(args: argparse.Namespace) -> int:
    with open_store(args) as store:
        a = artifact_spec(store.catalog, args.spec)
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
    with open_store(args) as store:
        step_run = store.get_step_run(store.catalog.complete_id("step run", args.step_run))
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


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Declare the catalog commands."""
    add_command(
        sub, "demo", cmd_demo, "run a small pipeline twice on the store and show what was kept"
    )
    sp = add_command(sub, "runs", cmd_runs, "list runs, oldest first", json_flag=True)
    sp.add_argument("--pipeline", help="only runs of this pipeline")
    sp = add_command(sub, "run", cmd_run, "one run and its step runs", json_flag=True)
    sp.add_argument("id", help="a run id, or a unique prefix of one")
    sp = add_command(
        sub, "artifacts", cmd_artifacts, "list artifact versions, oldest first", json_flag=True
    )
    sp.add_argument("--name", help="only versions of this name")
    sp.add_argument("--tag", help="only versions with this tag")
    sp.add_argument("--all", action="store_true", help="include deleted versions")
    sp = add_command(
        sub,
        "artifact",
        cmd_artifact,
        "one artifact version: metadata, files, producer, tags",
        json_flag=True,
    )
    sp.add_argument("spec", metavar=SPEC)
    sp.add_argument(
        "--save-visualizations",
        metavar="DIR",
        help="write its visualizations (HTML, images, ...) into DIR",
    )
    sp = add_command(
        sub,
        "lineage",
        cmd_lineage,
        "where an artifact came from (or, with --down, what came of it)",
    )
    sp.add_argument("spec", metavar=SPEC)
    sp.add_argument("--down", action="store_true", help="downstream instead of upstream")
    sp.add_argument("--depth", type=int, default=None, help="at most N step hops")
    sp.add_argument("--format", choices=("tree", "dot", "json", "mermaid"), default="tree")
    sp = add_command(
        sub,
        "explain",
        cmd_explain,
        "why a step run ran: what differs from the nearest earlier run",
        json_flag=True,
    )
    sp.add_argument("step_run", metavar="STEP_RUN", help="a step run id, or a unique prefix")
