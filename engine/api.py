"""The module-level API: the active store, ``save_artifact`` and ``load_artifact``."""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.query.models import ArtifactVersion
    from engine.store import Store

from engine.pipelines.definition import set_active_store

_local = threading.local()
_default: Store | None = None
_default_lock = threading.Lock()


def active_store() -> Store:
    """The store set by :func:`use_store`, else the store of the pipeline step
    running in this thread, else the default store (opened on first use)."""
    stack: list[Store] = getattr(_local, "stack", [])
    if stack:
        return stack[-1]
    context = sys.modules.get("engine.pipelines.context")  # not imported: no step runs
    running: Store | None = None if context is None else context.running_store()
    if running is not None:
        return running
    global _default
    with _default_lock:
        if _default is None or _default.ledger.closed:
            from engine.store import Store

            _default = Store.open()
        return _default


@contextlib.contextmanager
def use_store(store: Store) -> Iterator[Store]:
    """Make ``store`` the active store inside the ``with`` block (this thread)."""
    stack: list[Store] = getattr(_local, "stack", None) or []
    _local.stack = stack
    stack.append(store)
    try:
        yield store
    finally:
        stack.pop()


def save_artifact(
    obj: Any,
    name: str,
    version: int | str | None = None,
    tags: Iterable[str] = (),
    metadata: Mapping[str, Any] | None = None,
    store: Store | None = None,
) -> ArtifactVersion:
    """Store ``obj`` as the next version of ``name`` (on ``store`` or the active store)."""
    return (store or active_store()).save_artifact(obj, name, version, tags, metadata)


def load_artifact(name: str, version: int | str | None = None, store: Store | None = None) -> Any:
    """Load ``name`` (latest version unless one is given) from ``store`` or the active store."""
    return (store or active_store()).load_artifact(name, version)


set_active_store(active_store)
