"""``store.as_of(...)``: the catalog as it was after some event.

The view reads the projections through the temporal index
(:class:`engine.projections.asof.AsOfKV`): each projection key as the fold
left it after that event, so opening a view folds nothing and its queries
(artifacts, runs, lineage, cache lookups) cost about what live ones do. A store
whose projections predate the index (no ``meta`` ``temporal``; ``rebuild``
adds it) gets the old way: the log up to the event folded into a private
in-memory KV. Artifact bytes are read from the store's chunk store, so a
version collected by ``gc`` since then can be listed but not loaded.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, NoReturn

from engine.errors import InvalidArgumentError, ReadOnlyStoreError
from engine.projections import STORE_DATABASES, fold
from engine.projections.asof import AsOfKV
from engine.projections.keys import from_u64
from engine.projections.temporal import TEMPORAL_META
from engine.query.catalog import Catalog
from engine.storage.kv import KV, MemoryKV
from engine.storage.log import Event, seq_key

if TYPE_CHECKING:
    from engine.store import Store


def seq_at_time(store: Store, when: _dt.datetime, *, remember_order: bool = False) -> int:
    """The last event of the log as it was at ``when``: its longest prefix
    stamped no later. An old log is checked for order once; with
    ``remember_order`` (``store.as_of``) the result is written to the ledger
    so later lookups binary-search (the dashboard, read-only, does not)."""
    if when.tzinfo is None:
        when = when.astimezone()
    target = int(when.timestamp() * 1e9)
    with store.ledger.kv.snapshot() as txn:
        seq, found_ordered = store.ledger.log.seq_at(txn, target)
    if found_ordered and remember_order:
        store.ledger.kv.write(store.ledger.log.mark_ordered)
    return int(seq)


class HistoricalView(Catalog):
    """A read-only catalog of the store as of event ``seq``."""

    def __init__(self, store: Store, seq: int, kv: KV, *, indexed: bool = False) -> None:
        super().__init__(
            kv,
            store.ledger.chunks,
            secret=store.ledger.secret,
            secret_problem=store.ledger.secret_problem,
        )
        self.store = store
        self.seq = seq
        #: Whether the view reads the temporal index (else it folded the log).
        self.indexed = indexed

    @classmethod
    def build(cls, store: Store, when: Any) -> HistoricalView:
        if isinstance(when, _dt.datetime):
            seq = seq_at_time(store, when, remember_order=True)
        elif isinstance(when, int) and not isinstance(when, bool):
            seq = when
        else:
            raise InvalidArgumentError(
                f"as_of takes a sequence number (int) or a datetime, not {when!r}"
            )
        head = store.head
        if seq < 0 or seq > head:
            raise InvalidArgumentError(f"as_of({seq}): the log holds events 1..{head}")
        # The index covers what the projections folded (all of the log, unless
        # events were appended behind their back).
        pos = store.ledger.meta(b"proj_pos")
        if store.ledger.meta(TEMPORAL_META) is not None and seq <= (from_u64(pos) if pos else 0):
            return cls(store, seq, AsOfKV(store.ledger.kv, seq), indexed=True)
        return cls(store, seq, folded(store, seq))

    @property
    def head(self) -> int:
        return self.seq

    def events(self, start: int = 1, stop: int | None = None) -> Iterator[Event]:
        stop = self.seq + 1 if stop is None else min(stop, self.seq + 1)
        return self.store.events(start, stop)

    def stats(self) -> dict[str, int]:
        out = super().stats()
        live = self.store.stats()
        out["chunks"] = live["chunks"]
        out["stored_bytes"] = live["stored_bytes"]
        return out

    def __repr__(self) -> str:
        return f"<HistoricalView of {self.store!r} as of event {self.seq}>"

    def load_artifact(
        self, name: str, version: int | str | None = None, *, tag: str | None = None
    ) -> Any:
        """The object ``name`` held then: the latest version then, ``version``,
        or the newest version tagged ``tag`` then (bytes ``gc`` collected since
        cannot be loaded)."""
        return self.get_artifact(name, version, tag=tag).load()

    # -- writes: a view of the past is read-only ---------------------------------
    def _read_only(self, what: str) -> NoReturn:
        raise ReadOnlyStoreError(
            f"{what}() writes, and {self!r} is a read-only view of the past; "
            f"call it on the store itself (view.store.{what}(...))"
        )

    def save_artifact(self, *args: Any, **kwargs: Any) -> NoReturn:
        self._read_only("save_artifact")

    def tag(self, *args: Any, **kwargs: Any) -> NoReturn:
        self._read_only("tag")

    def untag(self, *args: Any, **kwargs: Any) -> NoReturn:
        self._read_only("untag")

    def log_metadata(self, *args: Any, **kwargs: Any) -> NoReturn:
        self._read_only("log_metadata")

    def delete_artifact(self, *args: Any, **kwargs: Any) -> NoReturn:
        self._read_only("delete_artifact")

    def delete_run(self, *args: Any, **kwargs: Any) -> NoReturn:
        self._read_only("delete_run")

    def trust(self, *args: Any, **kwargs: Any) -> NoReturn:
        self._read_only("trust")

    def run(self, *args: Any, **kwargs: Any) -> NoReturn:
        self._read_only("run")

    def gc(self, *args: Any, **kwargs: Any) -> NoReturn:
        self._read_only("gc")

    def rebuild(self, *args: Any, **kwargs: Any) -> NoReturn:
        self._read_only("rebuild")


def folded(store: Store, seq: int) -> MemoryKV:
    """The log's first ``seq`` events folded into a private in-memory KV (for a
    store whose projections have no temporal index yet)."""
    kv = MemoryKV(STORE_DATABASES)
    w = kv.unsafe_writer()
    with store.ledger.kv.snapshot() as txn:
        for key in (b"format", b"seed", b"store_id"):
            v = txn.get("meta", key)
            if v is not None:
                w.put("meta", key, v)
        # The chunk index is physical, not historical: reads resolve chunks live.
        fold(w, store.ledger.log.read(txn, 1, seq + 1))
    if seq:
        w.put("meta", b"head_seq", seq_key(seq))
    return kv
