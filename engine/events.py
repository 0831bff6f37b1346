"""Event types and their schemas: the one list both the writers and import validation use.

Every event in the log has a ``type`` (one of the constants here), a schema
version (``engine.storage.log.SCHEMA_VERSIONS``) and a ``data`` map. Code that
builds or folds events names the type by its constant, never by a string
literal. :data:`SCHEMAS` gives the required fields of each type's data (after
upcasting) and their types; an import checks every event against it
(``engine.ops.stream.check_event``), and every type the projections fold has
a schema (``tests/test_events.py``).

This module is at the bottom of the package: it imports nothing from it.
"""

from __future__ import annotations

from typing import Final

STORE_CREATED: Final = "store.created"
RUN_STARTED: Final = "run.started"
RUN_COMPLETED: Final = "run.completed"
RUN_FAILED: Final = "run.failed"
RUN_DELETED: Final = "run.deleted"
STEP_STARTED: Final = "step.started"
STEP_CACHED: Final = "step.cached"
STEP_SKIPPED: Final = "step.skipped"
STEP_COMPLETED: Final = "step.completed"
STEP_FAILED: Final = "step.failed"
ARTIFACT_WRITTEN: Final = "artifact.written"
ARTIFACT_TAGGED: Final = "artifact.tagged"
ARTIFACT_UNTAGGED: Final = "artifact.untagged"
ARTIFACT_DELETED: Final = "artifact.deleted"
ARTIFACT_TRUSTED: Final = "artifact.trusted"
METADATA_LOGGED: Final = "metadata.logged"
GC_COMPLETED: Final = "gc.completed"

_STR, _INT, _LIST, _DICT = (str,), (int,), (list,), (dict,)
_OPT_STR = (str, type(None))
_VERSION = (int, str)

SCHEMAS: dict[str, dict[str, tuple[type, ...]]] = {
    ARTIFACT_WRITTEN: {
        "id": _STR,
        "name": _STR,
        "version": _VERSION,
        "content_hash": _STR,
        "data_type": _STR,
        "materializer": _STR,
        "materializer_version": _INT,
        "artifact_type": _STR,
        "files": _LIST,
        "visualizations": _LIST,
        "state": _DICT,
        "metadata": _DICT,
        "user_metadata": _DICT,
        "tags": _LIST,
        "producer": _OPT_STR,
        "run": _OPT_STR,
        "size": _INT,
    },
    ARTIFACT_TAGGED: {"id": _STR, "tags": _LIST},
    ARTIFACT_UNTAGGED: {"id": _STR, "tags": _LIST},
    ARTIFACT_TRUSTED: {"id": _STR, "state": _DICT},
    METADATA_LOGGED: {"id": _STR, "metadata": _DICT},
    ARTIFACT_DELETED: {"id": _STR},
    RUN_STARTED: {"id": _STR, "pipeline": _STR},
    RUN_COMPLETED: {"id": _STR},
    RUN_FAILED: {"id": _STR},
    RUN_DELETED: {"id": _STR},
    STEP_STARTED: {"id": _STR, "run": _STR, "invocation": _STR, "step": _STR},
    STEP_CACHED: {"id": _STR, "run": _STR, "invocation": _STR, "step": _STR},
    STEP_SKIPPED: {"id": _STR, "run": _STR, "invocation": _STR, "step": _STR},
    STEP_COMPLETED: {"id": _STR, "run": _STR},
    STEP_FAILED: {"id": _STR, "run": _STR},
    GC_COMPLETED: {"chunks": _INT, "bytes": _INT},
}
"""Required fields per event type (after upcasting), and their types.
``store.created`` has none: it is never folded, exported or imported."""

ID_MAPS: dict[str, tuple[str, ...]] = {
    STEP_COMPLETED: ("inputs", "outputs"),
    STEP_CACHED: ("inputs", "outputs"),
}
"""Fields, per event type, that map names to ids (``{name: artifact id}``)."""

EVENT_TYPES: frozenset[str] = frozenset(SCHEMAS) | {STORE_CREATED}
"""Every event type this artledger writes."""
