"""An in-memory ``ArtifactFiles`` and the ``files_factory`` fixture.

The executable spec of the seam between materializers and storage: a dict of
name -> bytes. The engine's tests run the same materializer tests through the
real store by providing another ``FilesFactory``.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Protocol

import pytest

from engine.storage.files import check_name
from materializers.files import ArtifactFiles

TEST_KEY = b"artledger-test-secret"


class _Backing:
    """What all views of one artifact share."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.staged: list[tuple[str, Path]] = []  # (prefix, dir) from local_dir() on save
        self.temp_dirs: list[Path] = []


class _Writer(io.BytesIO):
    def __init__(self, on_close: Any) -> None:
        super().__init__()
        self._on_close = on_close

    def close(self) -> None:
        if not self.closed:
            self._on_close(self.getvalue())
        super().close()


class MemFiles:
    """``ArtifactFiles`` over a dict. ``writable`` views are for ``save()``;
    call :meth:`finish` afterwards, then :meth:`reader` for ``load()``."""

    def __init__(
        self,
        backing: _Backing | None = None,
        prefix: str = "",
        *,
        key: bytes = TEST_KEY,
        writable: bool = True,
        state: dict[str, Any] | None = None,
    ) -> None:
        self._backing = backing or _Backing()
        self._prefix = prefix
        self._key = key
        self._writable = writable
        self._local: Path | None = None
        self.state: dict[str, Any] = {} if state is None else state

    # --- ArtifactFiles
    def open_write(self, name: str) -> IO[bytes]:
        full = self._prefix + check_name(name)
        if not self._writable:
            raise PermissionError(f"{full}: artifact files are read-only once saved")
        if full in self._backing.blobs:
            raise FileExistsError(full)
        self._backing.blobs[full] = b""  # visible in names() while open, like a real store

        def ingest(data: bytes) -> None:
            self._backing.blobs[full] = data

        return _Writer(ingest)

    def open_read(self, name: str) -> IO[bytes]:
        full = self._prefix + check_name(name)
        try:
            return io.BytesIO(self._backing.blobs[full])
        except KeyError:
            raise FileNotFoundError(full) from None

    def names(self) -> list[str]:
        n = len(self._prefix)
        return sorted(k[n:] for k in self._backing.blobs if k.startswith(self._prefix))

    def size(self, name: str) -> int:
        full = self._prefix + check_name(name)
        try:
            return len(self._backing.blobs[full])
        except KeyError:
            raise FileNotFoundError(full) from None

    def sub(self, prefix: str) -> MemFiles:
        return MemFiles(
            self._backing,
            self._prefix + check_name(prefix) + "/",
            key=self._key,
            writable=self._writable,
        )

    def local_dir(self) -> str:
        if self._local is None:
            self._local = Path(tempfile.mkdtemp(prefix="artledger-test-"))
            self._backing.temp_dirs.append(self._local)
            if self._writable:
                self._backing.staged.append((self._prefix, self._local))
            else:
                for name in self.names():
                    target = self._local / name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(self._backing.blobs[self._prefix + name])
        return str(self._local)

    def sign(self, payload: bytes) -> str:
        return hmac.new(self._key, payload, hashlib.sha256).hexdigest()

    def verify(self, payload: bytes, signature: str) -> bool:
        return hmac.compare_digest(self.sign(payload), signature)

    # --- test harness
    def finish(self) -> None:
        """Ingest files staged in ``local_dir()`` directories (what the engine
        does after ``save()`` returns)."""
        for prefix, root in self._backing.staged:
            for path in sorted(root.rglob("*")):
                if path.is_file():
                    name = prefix + path.relative_to(root).as_posix()
                    if name in self._backing.blobs:
                        raise FileExistsError(name)
                    self._backing.blobs[name] = path.read_bytes()
        self._backing.staged.clear()

    def reader(self, *, key: bytes | None = None) -> MemFiles:
        """A read-only view of the same files and a copy of the state (as the
        engine hands back on load); ``key`` simulates another store's secret."""
        return MemFiles(
            self._backing,
            self._prefix,
            key=self._key if key is None else key,
            writable=False,
            state=dict(self.state),
        )

    @property
    def blobs(self) -> dict[str, bytes]:
        """Back door: the raw files (mutable, for tampering tests)."""
        return self._backing.blobs

    def cleanup(self) -> None:
        for path in self._backing.temp_dirs:
            shutil.rmtree(path, ignore_errors=True)
        self._backing.temp_dirs.clear()


class FilesFactory(Protocol):
    """What a backend provides to run the materializer tests through it."""

    def new(self) -> ArtifactFiles:
        """Fresh, empty files for one ``save()``."""
        ...

    def saved(self, files: ArtifactFiles) -> ArtifactFiles:
        """After ``save()`` (and ``save_visualizations``) returned: commit
        ``files`` and hand back a read view with the recorded state."""
        ...


class MemFilesFactory:
    def __init__(self, key: bytes = TEST_KEY) -> None:
        self.key = key
        self.made: list[MemFiles] = []

    def new(self) -> MemFiles:
        files = MemFiles(key=self.key)
        self.made.append(files)
        return files

    def saved(self, files: ArtifactFiles) -> MemFiles:
        assert isinstance(files, MemFiles)
        files.finish()
        return files.reader()

    def cleanup(self) -> None:
        for files in self.made:
            files.cleanup()


class StoreFilesFactory:
    """The engine's own files over a real on-disk store (chunks, packs, LMDB index)."""

    def __init__(self, root: Path) -> None:
        from engine import Store

        self.store = Store.open(root, chunk_size=64 << 10)
        self._readers: list[Any] = []

    def new(self) -> ArtifactFiles:
        from engine.storage.files import WriteFiles

        return WriteFiles(self.store.ledger.chunks.session(), self.store.ledger.secret)

    def saved(self, files: ArtifactFiles) -> ArtifactFiles:
        from engine.storage.files import ReadFiles, WriteFiles

        assert isinstance(files, WriteFiles)
        files.finish()
        # Index the written chunks durably (a commit with no events), then read
        # everything back through the chunk index, verified.
        self.store.ledger.commit(lambda txn: [], [files._session])
        reader = ReadFiles(
            self.store.ledger.chunks,
            self.store.ledger.secret,
            dict(files.entries),
            dict(files.state),
            "t",
        )
        self._readers.append(reader)
        return reader

    def cleanup(self) -> None:
        for r in self._readers:
            r.cleanup()
        self.store.close()


@pytest.fixture(name="files_factory", params=["memory", "store"])
def files_factory_fixture(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FilesFactory]:
    """Materializer round trips run on in-memory files and on the real store."""
    factory: Any
    if request.param == "memory":
        factory = MemFilesFactory()
    else:
        factory = StoreFilesFactory(tmp_path_factory.mktemp("mat-store"))
    yield factory
    factory.cleanup()
