"""The module-level API: the active store, ``save_artifact`` and ``load_artifact``."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.query.models import ArtifactVersion
    from engine.store import Store

from engine.pipelines.definition import set_active_store

_local = threading.local()
_default: Store | None = None
_default_lock = threading.Lock()


def active_store() -> Store:
    """The store set by :func:`use_store` (unless closed since), else the store
    of the pipeline step running in this thread, else the default store
    (opened on first use)."""
    stack: list[Store] = getattr(_local, "stack", [])
    while stack and stack[-1].ledger.closed:  # a closed store stops being active
        stack.pop()
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


class use_store:  # noqa: N801 -- a function to its callers
    """Make ``store`` the active store of this thread.

    A plain call, ``engine.use_store(store)``, makes it active from then on;
    the ``with engine.use_store(store):`` form makes it active inside the block
    and restores the one active before when the block ends."""

    def __init__(self, store: Store) -> None:
        stack: list[Store] = getattr(_local, "stack", None) or []
        _local.stack = stack
        self.store = store
        self._depth = len(stack)
        stack.append(store)

    def __enter__(self) -> Store:
        return self.store

    def __exit__(self, *exc: object) -> None:
        stack: list[Store] = getattr(_local, "stack", None) or []
        del stack[self._depth :]


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


def load_artifact(
    name: str,
    version: int | str | None = None,
    store: Store | None = None,
    *,
    tag: str | None = None,
) -> Any:
    """Load ``name`` from ``store`` or the active store: the latest version,
    ``version``, or the newest version tagged ``tag``."""
    return (store or active_store()).load_artifact(name, version, tag=tag)


set_active_store(active_store)
