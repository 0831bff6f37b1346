"""The dashboard's as_of handling: parsing, and the cache of folded views."""

from __future__ import annotations

import datetime as _dt

import pytest

from engine import Store
from engine.ui.views import BadAsOfError, ViewCache, parse_as_of


@pytest.fixture
def store() -> Store:
    s = Store.memory()
    for i in range(30):
        s.save_artifact(i, f"n{i % 3}", tags=["even"] if i % 2 == 0 else [])
    return s


def test_parse(store: Store) -> None:
    assert parse_as_of(store, "7") == 7 and parse_as_of(store, " 0 ") == 0
    now = _dt.datetime.now(_dt.timezone.utc).isoformat().replace("+00:00", "Z")
    assert parse_as_of(store, now) == store.head
    for bad in ("x", "-1", str(store.head + 1), "2026-02-30", "1e3"):
        with pytest.raises(BadAsOfError):
            parse_as_of(store, bad)


def test_cache_reuses_advances_and_evicts(store: Store) -> None:
    cache = ViewCache(store, size=2)
    assert cache.resolve(None) == (store, None) and cache.resolve("") == (store, None)
    assert cache.get(store.head) is store
    a = cache.get(10)
    assert cache.get(10) is a and cache.folds == 1
    b = cache.get(20)  # advanced from the view at 10
    assert cache.folds == 2 and b.head == 20
    assert [x.id for x in b.list_artifacts()] == [x.id for x in store.as_of(20).list_artifacts()]
    assert [x.id for x in b.list_artifacts(tag="even")] == [
        x.id for x in store.as_of(20).list_artifacts(tag="even")
    ]
    cache.get(5)  # evicts 10, the least recently used
    assert cache.get(20) is b and cache.folds == 3
    cache.get(10)
    assert cache.folds == 4
