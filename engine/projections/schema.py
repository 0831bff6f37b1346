"""The databases of a store's KV: the engine's own, and the projections'."""

from __future__ import annotations

# The projections as of the head (what live queries read).
LIVE_DBS = (
    "artifacts",
    "names",
    "versions",
    "name_meta",
    "tags",
    "content",
    "counters",
    "runs",
    "run_index",
    "steps",
    "cache",
    "consumers",
    "step_history",
    "run_steps",
    "step_components",
)
# Projection databases whose keys end with the seq of the event that created
# them (8 bytes, big-endian), after a group prefix: a name without NUL, then
# NUL (or the one prefix b"\x01" of ``run_index``). A key whose seq is after a
# point in history did not exist then: ``as_of`` scans of one group stop there.
# Their values never change, so the temporal index records only their deletes.
SEQ_KEYED_DBS = frozenset({"names", "run_index", "cache", "step_history", "run_steps"})
# Databases of the projections (dropped and refolded by ``Store.rebuild``): the
# live ones and ``history``, the temporal index of their writes
# (``engine.projections.temporal``), which ``as_of`` reads.
PROJECTION_DBS = (*LIVE_DBS, "history")
# Every database of a store: its metadata, the event log, the chunk index,
# the blob store's container state (pack segment ends), and the projections.
STORE_DATABASES = ("meta", "events", "chunks", "segments", *PROJECTION_DBS)
