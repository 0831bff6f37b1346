"""Every BlobStore backend passes the blob contract (engine.testing.blobs)."""

from __future__ import annotations

from pathlib import Path

from engine.storage.blobs import BlobStore, MemoryBlobStore, PackBlobStore
from engine.testing.blobs import BlobStoreContract


class TestMemoryBlobStore(BlobStoreContract):
    def make_blobs(self, tmp_path: Path) -> BlobStore:
        return MemoryBlobStore()


class TestPackBlobStore(BlobStoreContract):
    def make_blobs(self, tmp_path: Path) -> BlobStore:
        return PackBlobStore(tmp_path / "packs")


def test_pack_check_names_a_header_that_does_not_match(tmp_path: Path) -> None:
    blobs = PackBlobStore(tmp_path / "packs")
    loc = blobs.put(b"d" * 16, 1, 10, b"0123456789")
    blobs.flush([loc])
    assert blobs.check(loc, b"d" * 16, 1, 10) is None
    problem = blobs.check(loc, b"e" * 16, 1, 10)
    assert problem is not None and loc.container in problem
    blobs.release([loc])
    blobs.close()
