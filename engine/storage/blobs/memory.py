"""Chunk payloads in a dict: the in-memory twin of the pack store."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

from engine.errors import IntegrityError
from engine.storage.blobs.base import BlobStore, ContainerState, Location


class MemoryBlobStore(BlobStore):
    """Payloads in a dict, deleted one by one by gc (``supports_deletes``)."""

    supports_deletes = True

    def __init__(self) -> None:
        self.blobs: dict[int, bytes] = {}
        self._next = 0
        self._lock = threading.Lock()

    def put(self, digest: bytes, codec: int, raw_len: int, payload: Any) -> Location:
        with self._lock:
            self._next += 1
            self.blobs[self._next] = bytes(payload)
            return Location("mem", self._next, len(payload))

    def get(self, loc: Location) -> bytes:
        try:
            return self.blobs[loc.offset]
        except KeyError:
            raise IntegrityError(f"chunk payload at {list(loc)} is missing") from None

    def flush(self, held: Iterable[Location]) -> ContainerState:
        return {}

    def delete(self, loc: Location) -> None:
        self.blobs.pop(loc.offset, None)
