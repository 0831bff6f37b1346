"""``ObjectBlobStore`` passes the blob contract on memory, a directory and a real S3 server."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from servers_s3 import S3Server, s3_server  # noqa: F401 - the fixture, by name

from engine.storage.blobs import BlobStore
from engine.storage.blobs.objects import ObjectBlobStore
from engine.testing.blobs import BlobStoreContract


def _prefix(tmp_path: Path) -> str:
    """A prefix of its own per test (the server and bucket are shared by the session)."""
    return "contract/" + hashlib.sha1(str(tmp_path).encode()).hexdigest()[:12]


class TestObjectBlobStoreMemory(BlobStoreContract):
    def make_blobs(self, tmp_path: Path) -> BlobStore:
        return ObjectBlobStore("memory://", cache_dir=None)


class TestObjectBlobStoreDirectory(BlobStoreContract):
    def make_blobs(self, tmp_path: Path) -> BlobStore:
        return ObjectBlobStore(f"file://{tmp_path}/objects", cache_dir=tmp_path / "cache")


class TestObjectBlobStoreS3(BlobStoreContract):
    @pytest.fixture(autouse=True)
    def _s3_env(self, s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
        for key, value in s3_server.env.items():
            monkeypatch.setenv(key, value)
        self.bucket = s3_server.bucket

    def make_blobs(self, tmp_path: Path) -> BlobStore:
        return ObjectBlobStore(
            f"s3://{self.bucket}/{_prefix(tmp_path)}",
            cache_dir=tmp_path / "cache",
            timeout=5.0,
        )
