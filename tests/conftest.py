"""Shared fixtures: every store test runs against both backends."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from engine import Store


@pytest.fixture(params=["lmdb", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A fresh store on each backend: LMDB + packs on disk, and the in-memory twin."""
    if request.param == "lmdb":
        s = Store.open(tmp_path / "store", chunk_size=256 << 10)
    else:
        s = Store.memory(chunk_size=256 << 10)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def disk_store(tmp_path: Path) -> Iterator[Store]:
    """A fresh on-disk store (for reopen, back-door and multi-process tests)."""
    s = Store.open(tmp_path / "store", chunk_size=256 << 10)
    try:
        yield s
    finally:
        s.close()
