"""Scenario 10: moving a store — export and import against tar of the store directory."""

from __future__ import annotations

import tarfile
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import Context, MiB, Result, Row, fsync_path, gbps, median_time, new_path

TITLE = "Export and import"
ABOUT = (
    "A store holding half incompressible and half compressible arrays plus small "
    "artifacts: `store.export` to a stream file, and `Store.import_` of it into an "
    "empty store (validated in full, re-chunked, fsynced, one commit), against `tar` "
    "of the store directory (write + fsync) and its extraction, in the same run. "
    "Throughput is logical bytes per second."
)
PARAMS: dict[str, dict[str, Any]] = {
    "tiny": {"mib": 4, "small": 20},
    "small": {"mib": 64, "small": 200},
    "full": {"mib": 512, "small": 1000},
}


def _tar(src: Path, dest: Path) -> None:
    with tarfile.open(dest, "w") as t:
        t.add(src, arcname="store")
    fsync_path(dest)


def _untar(src: Path, dest: Path) -> None:
    with tarfile.open(src) as t:
        t.extractall(dest, filter="data")


def run(ctx: Context) -> Result:
    from engine import Store

    p = PARAMS[ctx.size]
    res = Result("transfer", TITLE, ABOUT)
    rng = np.random.default_rng(7)
    with ctx.tempdir("transfer") as tmp:
        src = tmp / "src"
        ctx.log(f"transfer: filling a {p['mib']} MiB store")
        with Store.open(src) as s:
            per = max(1, p["mib"] // 16)
            for i in range(per):
                s.save_artifact(rng.random(2 * MiB // 8 * 4), f"raw{i}")
                w = np.round(rng.standard_normal(2 * MiB) * 0.02, 3).astype(np.float32)
                s.save_artifact(w, f"weights{i}")
            for i in range(p["small"]):
                s.save_artifact({"i": i, "tag": f"t{i % 7}"}, f"small{i % 50}")
            logical = s.stats()["logical_bytes"]
            stored = s.stats()["stored_bytes"]
            ctx.log("transfer: export")
            exported = median_time(
                lambda _, s=s: s.export(new_path(tmp, "stream.alx")), ctx.repeats
            )
            stream = tmp / "stream.alx"
            s.export(stream)
        targets: list[Path] = []

        def empty() -> Path:
            targets.append(tmp / f"dst{len(targets)}")
            return targets[-1]

        ctx.log("transfer: import")
        imported = median_time(lambda d: Store.import_(stream, into=d), ctx.repeats, empty)
        ctx.log("transfer: tar")
        tarred = median_time(lambda _: _tar(src, new_path(tmp, "store.tar")), ctx.repeats)
        _tar(src, tmp / "store.tar")
        untarred = median_time(
            lambda _: _untar(tmp / "store.tar", new_path(tmp, "untar")), ctx.repeats
        )
        with Store.open(targets[-1]) as d:
            assert d.stats()["logical_bytes"] == logical
            assert d.verify().ok
        note = (
            f"logical {logical / MiB:,.0f} MiB, stored {stored / MiB:,.0f} MiB; stream "
            f"{stream.stat().st_size / MiB:,.0f} MiB (chunks travel decompressed)"
        )
        res.add(
            Row(
                "export",
                gbps(logical, exported),
                "GB/s",
                gbps(logical, tarred),
                "tar of the store dir + fsync",
                lower_is_better=False,
                note=note,
            )
        )
        res.add(
            Row(
                "import into an empty store (validated, verify ok after)",
                gbps(logical, imported),
                "GB/s",
                gbps(logical, untarred),
                "tar extract",
                lower_is_better=False,
            )
        )
    res.notes.append(
        "tar copies the already-compressed pack files byte for byte and checks nothing; "
        "import validates every frame, re-hashes, re-compresses under the destination's "
        "seed and fsyncs before one commit."
    )
    return res
