"""The one commit path: a chunk collected under a write is a typed error, retried once."""

from __future__ import annotations

import os

import pytest

from engine import ConcurrentGcError, Store
from engine.ledger.artifacts import commit_artifacts, prepare
from engine.ledger.core import retry_on_concurrent_gc


def test_a_chunk_collected_before_the_commit_is_a_concurrent_gc_error(store: Store) -> None:
    payload = os.urandom(300_000)
    first = store.save_artifact(payload, "first")
    # Prepared against the chunks of "first" (deduplicated, not written again) ...
    late = prepare(store.ledger, payload, "second")
    # ... which a gc collects before the commit.
    store.delete_artifact(first)
    assert store.gc().chunks_reclaimed > 0
    head = store.head
    with pytest.raises(ConcurrentGcError, match="concurrent gc"):
        commit_artifacts(store.ledger, [late])
    assert store.head == head  # nothing committed
    assert store.list_artifacts("second") == []


def test_retry_prepares_again_and_commits(store: Store) -> None:
    payload = os.urandom(300_000)
    first = store.save_artifact(payload, "first")
    attempts = []

    def write() -> list[dict[str, object]]:
        p = prepare(store.ledger, payload, "second")
        if not attempts:  # the first attempt loses its chunks to a gc
            store.delete_artifact(first)
            store.gc()
        attempts.append(p)
        return commit_artifacts(store.ledger, [p])

    done = retry_on_concurrent_gc(write)
    assert len(attempts) == 2
    assert store.get_artifact_by_id(str(done[0]["id"])).load() == payload


def test_the_store_surface_hides_the_write_steps(store: Store) -> None:
    for name in ("commit", "defer", "prepare", "assign_versions", "commit_artifacts", "kv"):
        assert not hasattr(store, name), name
