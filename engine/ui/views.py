"""``?as_of=`` for the dashboard: parse it, and keep folded views around.

``store.as_of(seq)`` reads the temporal index: opening a view costs nothing.
A store whose projections predate the index folds the log up to ``seq`` into a
private in-memory catalog instead: cheap for a small store, seconds for one
with hundreds of thousands of events. A page is served many times at the same
point in history (the slider, links within it), so the server keeps the last
few views, keyed by ``seq``: the log is append-only, so the fold of its first
``seq`` events never changes while the server runs (a store whose head moved
below a cached ``seq`` — a recovered ledger — drops the cache). A new point
later than a cached one starts from a copy of it and folds only the events
between (:func:`engine.query.pages.advance`).
"""

from __future__ import annotations

import datetime as _dt
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING

from engine.errors import InvalidArgumentError
from engine.query.history import HistoricalView, seq_at_time
from engine.query.pages import advance

if TYPE_CHECKING:
    from engine.query.catalog import Catalog
    from engine.store import Store


class BadAsOfError(InvalidArgumentError):
    """An ``as_of`` value that is neither a sequence number in the log nor a time."""


def parse_as_of(store: Store, raw: str) -> int:
    """The sequence number ``raw`` names: an int, or an ISO time (the log as it was then)."""
    text = raw.strip()
    head = store.head
    if text.lstrip("-").isdigit():
        seq = int(text)
    else:
        try:
            when = _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise BadAsOfError(
                f"as_of={raw!r} is neither a sequence number nor an ISO time "
                f"(e.g. as_of=42 or as_of=2026-01-31T12:00:00Z)"
            ) from None
        seq = seq_at_time(store, when)
    if not 0 <= seq <= head:
        raise BadAsOfError(f"as_of={seq}: the log holds events 1..{head}")
    return seq


class ViewCache:
    """The last ``size`` folded ``as_of`` views of one store (thread-safe)."""

    def __init__(self, store: Store, size: int = 4) -> None:
        self.store = store
        self.size = size
        self._views: OrderedDict[int, Catalog] = OrderedDict()
        self._lock = threading.Lock()
        self.folds = 0

    def get(self, seq: int) -> Catalog | Store:
        """The catalog as of event ``seq`` (the live store when ``seq`` is the head)."""
        head = self.store.head
        if seq >= head:
            return self.store
        with self._lock:
            if self._views and max(self._views) > head:
                self._views.clear()
            view = self._views.get(seq)
            if view is not None:
                self._views.move_to_end(seq)
                return view
            lower = [s for s in self._views if s < seq]
            base = self._views[max(lower)] if lower else None
            # From a cached earlier view, fold only the events after it.
            view = advance(base, seq) if isinstance(base, HistoricalView) else self.store.as_of(seq)
            self.folds += 1
            self._views[seq] = view
            while len(self._views) > self.size:
                self._views.popitem(last=False)
            return view

    def resolve(self, raw: str | None) -> tuple[Catalog | Store, int | None]:
        """The catalog for an ``as_of`` query value (None or empty: live) and its seq."""
        if raw is None or not raw.strip():
            return self.store, None
        seq = parse_as_of(self.store, raw)
        return self.get(seq), seq
