"""Failpoints: named places where a test can make the process die or fail.

Set ``ARTLEDGER_FAILPOINTS`` to a comma-separated list of ``name=action``
(``kill``: SIGKILL the process; ``raise``: raise ``OSError``; ``enospc``: raise
``OSError(ENOSPC)``), optionally ``name=action@N`` to fire on the N-th hit only.
Unset (the normal case), :func:`hit` is one dictionary lookup.
"""

from __future__ import annotations

import errno
import os
import signal

# Every ordering point of the write, gc, rebuild and import paths, in the order
# a write meets them; crash tests kill the process at each.
# (``gc.before_compact_copy`` also exists, to interleave two gcs in tests.)
CRASH_POINTS = (
    "blob.before_write",
    "blob.after_write",
    "blob.after_fsync",
    "commit.before_txn",
    "commit.in_txn",
    "commit.after",
    "gc.after_index_commit",
    "gc.before_delete_files",
    "rebuild.before_commit",
    "import.after_chunks",
    "import.in_txn",
    "import.after_commit",
)
# Where a shared store's write can die besides those: the shared log committed,
# the replica not yet (tests/test_shared_store.py kills writers there).
SHARED_CRASH_POINTS = ("shared.after_commit",)

_ACTIVE: dict[str, tuple[str, int]] = {}
_COUNTS: dict[str, int] = {}


def _load() -> None:
    _ACTIVE.clear()
    _COUNTS.clear()
    spec = os.environ.get("ARTLEDGER_FAILPOINTS", "")
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name, _, action = item.partition("=")
        action, _, nth = (action or "kill").partition("@")
        _ACTIVE[name] = (action, int(nth) if nth else 1)


def reload() -> None:
    """Re-read ``ARTLEDGER_FAILPOINTS`` (tests change it in-process)."""
    _load()


def hit(name: str) -> None:
    """Mark that execution reached ``name``; act if a failpoint is set there."""
    if not _ACTIVE:
        return
    spec = _ACTIVE.get(name)
    if spec is None:
        return
    action, nth = spec
    _COUNTS[name] = _COUNTS.get(name, 0) + 1
    if _COUNTS[name] != nth:
        return
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if action == "enospc":
        raise OSError(errno.ENOSPC, f"No space left on device (failpoint {name})")
    raise OSError(errno.EIO, f"failpoint {name}")


_load()
