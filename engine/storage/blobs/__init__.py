"""Where chunk payloads live: the ``BlobStore`` seam and its backends."""

from engine.storage.blobs.base import BlobStore, ContainerCheck, ContainerState, Location
from engine.storage.blobs.memory import MemoryBlobStore
from engine.storage.blobs.packs import HEADER, MAGIC, SEGMENT_LIMIT, PackBlobStore

__all__ = [
    "HEADER",
    "MAGIC",
    "SEGMENT_LIMIT",
    "BlobStore",
    "ContainerCheck",
    "ContainerState",
    "Location",
    "MemoryBlobStore",
    "PackBlobStore",
]
