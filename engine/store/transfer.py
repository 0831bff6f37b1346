"""The store's methods that move history in and out: export, import, the
ZenML import and what-if replay (a part of :class:`engine.store.Store`)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, cast

from engine.ledger.core import Ledger
from engine.projections.records import damage_boundary
from engine.store.defaults import default_path

if TYPE_CHECKING:
    from engine.ops.transfer import ExportReport, ImportReport
    from engine.ops.whatif import WhatIfReport
    from engine.ops.zenml_import import ZenMLImportReport
    from engine.store import Store


class Transfers:
    """Export, import, ZenML import and what-if replay, for :class:`Store`."""

    ledger: Ledger
    path: Path | None

    def what_if(
        self,
        *,
        chunking: str | None = None,
        chunk_size: int | None = None,
        codec: str = "auto",
        level: int | None = None,
        progress: Callable[[str, int, int], None] | None = None,
    ) -> WhatIfReport:
        """Re-chunk and re-compress the whole history in memory under a policy,
        writing nothing: stored bytes, dedup ratio and time per artifact name,
        against what the store holds (``engine.ops.whatif``). ``chunking``:
        ``"cdc"``/``"fixed"`` (None: as each file was written); ``codec``:
        ``"auto"``, ``"zstd"`` or ``"raw"``; None sizes and levels: the store's."""
        from engine.ops.whatif import what_if

        with damage_boundary(f"what-if replay of the ledger at {self.path}"):
            return what_if(
                cast("Store", self),
                chunking=chunking,
                chunk_size=chunk_size,
                codec=codec,
                level=level,
                progress=progress,
            )

    def export(
        self,
        path: str | os.PathLike[str],
        *,
        names: Iterable[str] | None = None,
        progress: Callable[[str, int, int], None] | None = None,
    ) -> ExportReport:
        """Write a portable, checksummed stream of the log and its chunks to
        ``path`` (with ``names``: those artifacts, their upstream lineage and
        the runs that made them). Format: ``engine.ops.transfer``."""
        from engine.ops.transfer import export_stream

        with damage_boundary(f"export of the ledger at {self.path}"):
            return export_stream(
                cast("Store", self),
                path,
                names=None if names is None else list(names),
                progress=progress,
            )

    @classmethod
    def import_(
        cls,
        path: str | os.PathLike[str],
        into: Store | str | os.PathLike[str] | None = None,
        trust_pickles: bool = False,
        *,
        progress: Callable[[str, int, int], None] | None = None,
    ) -> ImportReport:
        """Validate the stream at ``path`` completely, then import it into
        ``into`` (a store, or a path opened like :meth:`open`) all-or-nothing.
        Imported pickles stay untrusted unless ``trust_pickles``; a store this
        created is removed again when the import is refused."""
        from engine.ops.transfer import import_into, import_stream

        if into is None or isinstance(into, (str, os.PathLike)):
            root = (Path(into) if into is not None else default_path()).expanduser()
            return import_into(
                cast("type[Store]", cls), path, root, trust_pickles=trust_pickles, progress=progress
            )
        into.ledger.check_writable("import")
        return import_stream(into, path, trust_pickles=trust_pickles, progress=progress)

    def import_zenml(
        self,
        source: str | os.PathLike[str],
        *,
        artifact_store: str | os.PathLike[str] | None = None,
        dry_run: bool = False,
        trust_pickles: bool = False,
        progress: Callable[[str, int, int], None] | None = None,
    ) -> ZenMLImportReport:
        """Import a ZenML local deployment (its config directory or ``zenml.db``):
        runs, step runs, artifact versions and lineage, one commit per run;
        idempotent and resumable. See ``engine.ops.zenml_import``."""
        from engine.ops.zenml_import import import_zenml

        if not dry_run:
            self.ledger.check_writable("import from ZenML")
        with damage_boundary(f"the ledger at {self.path}"):
            return import_zenml(
                cast("Store", self),
                Path(source),
                artifact_store=artifact_store,
                dry_run=dry_run,
                trust_pickles=trust_pickles,
                progress=progress,
            )
