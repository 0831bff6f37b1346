"""The seam between a materializer and the storage engine.

A materializer never touches the store directly: it reads and writes named
files through an :class:`ArtifactFiles`. The engine's implementation streams
written bytes into content-addressed chunks and reads them back verified;
tests may use any other implementation of the same protocol.
"""

from __future__ import annotations

from typing import IO, Any, Protocol, runtime_checkable


@runtime_checkable
class ArtifactFiles(Protocol):
    """The files of one artifact version, as seen by its materializer.

    File names are relative POSIX paths ("data.npy", "elements/0/data.npy");
    they never start with "/" and never contain a ".." part.
    """

    state: dict[str, Any]
    """Small msgpack-able values the materializer wants kept with the artifact
    (a pickle's signature, the Python version that wrote it). Whatever save()
    leaves here is recorded in the ``artifact.written`` event and handed back,
    unchanged, to load()."""

    def open_write(self, name: str) -> IO[bytes]:
        """A new binary file for writing; closing it ingests the bytes."""
        ...

    def open_read(self, name: str) -> IO[bytes]:
        """A binary reader over a stored file; supports ``readinto`` and
        ``read``; every byte handed out has been checked against its digest.
        Raises ``FileNotFoundError`` for a name the artifact does not have."""
        ...

    def names(self) -> list[str]:
        """The names of the files present (on save: written so far)."""
        ...

    def size(self, name: str) -> int:
        """The size in bytes of a stored file."""
        ...

    def sub(self, prefix: str) -> ArtifactFiles:
        """A view of the files under ``prefix/`` (for element-wise containers)."""
        ...

    def local_dir(self) -> str:
        """A real directory path. On save, files written there by the
        materializer are ingested after ``save()`` returns; on load, it holds
        every file of the artifact, byte-exact."""
        ...

    def sign(self, payload: bytes) -> str:
        """HMAC-SHA256 (hex) of ``payload`` under the store's secret."""
        ...

    def verify(self, payload: bytes, signature: str) -> bool:
        """Whether ``signature`` is this store's HMAC of ``payload``."""
        ...
