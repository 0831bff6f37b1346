"""Export: a store's events, and the chunks they reference, as a stream.

The stream format and the rules an import enforces are described in
:mod:`engine.ops.transfer`; the framing is :mod:`engine.ops.stream`.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import xxhash

from engine.errors import ArtifactNotFoundError, ImportValidationError, InvalidArgumentError
from engine.events import ARTIFACT_WRITTEN, METADATA_LOGGED, STORE_CREATED
from engine.ops.stream import FORMAT, MAGIC, PREAMBLE, Progress, Writer, absent_key
from engine.projections.records import map_manifests
from engine.storage.log import pack, unpack

if TYPE_CHECKING:
    from engine.store import Store


@dataclass
class ExportReport:
    """What ``store.export()`` wrote."""

    path: Path
    events: int = 0
    chunks: int = 0
    absent: int = 0
    chunk_bytes: int = 0
    stream_bytes: int = 0
    seconds: float = 0.0


def _selection(store: Store, names: list[str], upto: int) -> tuple[set[str], set[str], set[str]]:
    """Artifact, step run and run ids to export for ``names``: their live versions,
    sibling outputs of their producers, and the whole upstream lineage."""
    arts: set[str] = set()
    steps: set[str] = set()
    runs: set[str] = set()
    queue: list[str] = []
    for name in names:
        found = [a for a in store.list_artifacts(name) if a.seq <= upto]
        if not found:
            raise ArtifactNotFoundError(
                f"cannot export {name!r}: no live artifact of that name; "
                "`artledger artifacts` lists them"
            )
        queue += [a.id for a in found]
    with store.catalog._read() as txn:
        while queue:
            aid = queue.pop()
            if aid in arts:
                continue
            raw = txn.get("artifacts", aid.encode())
            if raw is None:
                continue
            arts.add(aid)
            rec = unpack(raw)
            if rec.get("run"):
                runs.add(rec["run"])
            sid = rec.get("producer")
            if not sid or sid in steps:
                continue
            sraw = txn.get("steps", sid.encode())
            if sraw is None:
                continue
            steps.add(sid)
            srec = unpack(sraw)
            runs.add(srec["run"])
            queue += list(srec.get("inputs", {}).values())
            queue += list(srec.get("outputs", {}).values())
    return arts, steps, runs


def _wanted(etype: str, data: dict[str, Any], sel: tuple[set[str], set[str], set[str]]) -> bool:
    arts, steps, runs = sel
    if etype.startswith("artifact.") or etype == METADATA_LOGGED:
        return data.get("id") in arts
    if etype.startswith("step."):
        return data.get("id") in steps
    if etype.startswith("run."):
        return data.get("id") in runs
    return False


def export_stream(
    store: Store,
    path: str | os.PathLike[str],
    *,
    names: list[str] | None = None,
    upto: int | None = None,
    progress: Progress | None = None,
) -> ExportReport:
    """Write the log (events ``1..upto``, default all) and the chunks its
    artifact versions reference to ``path``; with ``names``, only those
    artifacts with their upstream lineage and the runs and step runs that
    made them. The file appears complete or not at all."""
    t0 = time.perf_counter()
    store.flush()
    head = store.head
    upto = head if upto is None else upto
    if not 0 <= upto <= head:
        raise ImportValidationError(f"cannot export up to event {upto}: the log holds 1..{head}")
    sel = _selection(store, names, upto) if names else None
    target = Path(path)
    report = ExportReport(target)
    tmp = target.with_name(f".{target.name}.partial-{os.getpid()}")
    if not target.parent.is_dir():
        raise InvalidArgumentError(
            f"cannot export to {target}: the directory {target.parent} does not exist"
        )
    if target.is_dir():
        raise InvalidArgumentError(f"cannot export to {target}: it is a directory; name a file")
    emitted: dict[bytes, bytes] = {}
    try:
        with open(tmp, "wb") as f:
            w = Writer(f)
            w.raw(PREAMBLE.pack(MAGIC, FORMAT, 0))
            header = {
                "format": FORMAT,
                "store_id": store.store_id,
                "created": time.time_ns(),
                "scope": "names" if names else "store",
                "names": list(names or []),
                "upto": upto,
            }
            w.frame(b"H", pack(header))
            with store.ledger.kv.snapshot() as txn:
                for seq, raw in store.ledger.log.read_raw(txn, 1, upto + 1):
                    env = unpack(raw)
                    etype, data = env["type"], env["data"]
                    if etype == STORE_CREATED:
                        continue
                    if sel is not None and not _wanted(etype, data, sel):
                        continue
                    if etype == ARTIFACT_WRITTEN:
                        data = _exportmanifests(store, w, data, emitted, report)
                    w.frame(
                        b"E",
                        pack({"type": etype, "v": env["v"], "ts": env["ts"], "data": data}),
                    )
                    report.events += 1
                    if progress is not None and report.events % 1000 == 0:
                        progress("export", seq, upto)
            trailer = {
                "events": report.events,
                "chunks": report.chunks,
                "absent": report.absent,
                "chunk_bytes": report.chunk_bytes,
                "hash": w.running.hexdigest(),
            }
            w.frame(b"T", pack(trailer))
            f.flush()
            os.fsync(f.fileno())
            report.stream_bytes = w.size
        tmp.replace(target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    if progress is not None:
        progress("export", upto, upto)
    report.seconds = time.perf_counter() - t0
    return report


def _exportmanifests(
    store: Store,
    w: Writer,
    data: dict[str, Any],
    emitted: dict[bytes, bytes],
    report: ExportReport,
) -> dict[str, Any]:
    label = f"artifact {data.get('name')}:{data.get('version')} (id {data.get('id')})"

    def convert(frec: list[Any]) -> list[Any]:
        keys = []
        for digest in frec[3]:
            key = emitted.get(digest)
            if key is None:
                if store.ledger.chunks.lookup(digest) is None:
                    key = absent_key(digest)
                    w.frame(b"A", key)
                    report.absent += 1
                else:
                    chunk = store.ledger.chunks.read_chunk(digest, label)
                    key = xxhash.xxh3_128(chunk).digest()
                    w.frame(b"C", key, chunk)
                    report.chunks += 1
                    report.chunk_bytes += len(chunk)
                emitted[digest] = key
            keys.append(key)
        return [frec[0], frec[1], frec[2], keys, *frec[4:]]  # and its layout, if any

    return map_manifests(data, convert)
