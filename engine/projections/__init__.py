"""Projections: what you can query, folded from the event log.

``fold`` holds the one fold function and its handler registry, ``keys`` the
key builders, ``records`` the decoding of stored records; ``artifacts`` and
``runs`` register the handlers of their event types when imported (here).
"""

from __future__ import annotations

from engine.projections import artifacts as _artifacts  # noqa: F401 - registers handlers
from engine.projections import runs as _runs  # noqa: F401 - registers handlers
from engine.projections.fold import HANDLERS, apply, fold, handles
from engine.projections.schema import PROJECTION_DBS, STORE_DATABASES

__all__ = ["HANDLERS", "PROJECTION_DBS", "STORE_DATABASES", "apply", "fold", "handles"]
