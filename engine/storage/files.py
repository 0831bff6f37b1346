"""The engine's implementation of ``materializers.files.ArtifactFiles``.

:class:`WriteFiles` streams what a materializer writes into chunks and keeps
the manifest; :class:`ReadFiles` serves the stored files back, verified.
Both stage a real directory on demand for materializers that need a path
(``self.uri``): on save its files are ingested after ``save()`` returns; on
load it is filled with every file, byte-exact, and removed afterwards.
"""

from __future__ import annotations

import bisect
import hashlib
import hmac
import io
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

from engine.errors import MaterializerError, StoreSecretError
from engine.storage.chunks import ChunkStore, FileEntry, WriteSession

COPY_BLOCK = 4 << 20
WRITE_BUFFER = 256 << 10
"""Bytes a write handle gathers before handing them to the chunk writer: small
writes (a CSV row, a pickle opcode) cost a memcpy, not a Python-level call."""


def check_name(name: str) -> str:
    """Return ``name`` if it is a safe artifact file name, else raise :class:`MaterializerError`.

    Safe means a non-empty relative POSIX path that stays inside its artifact:
    no leading '/', no backslash, no NUL, no empty, '.' or '..' part. The one
    check for materializers (``BaseMaterializer.open``), the engine's file
    handles and the validation of imported streams.
    """
    if not isinstance(name, str) or not name:
        raise MaterializerError(f"File name {name!r} is empty or not a string.")
    if name.startswith("/") or "\\" in name or "\x00" in name:
        raise MaterializerError(
            f"File name {name!r} must be a relative POSIX path such as 'model/weights.bin' "
            "(no leading '/', no backslashes, no NUL)."
        )
    if any(part in ("", ".", "..") for part in name.split("/")):
        raise MaterializerError(
            f"File name {name!r} has an empty, '.' or '..' part; files stay inside their "
            "artifact, e.g. 'model/weights.bin'."
        )
    return name


def tree_clash(names: Iterable[str]) -> tuple[str, str] | None:
    """A file name that is also a directory of another file (``a`` and ``a/b``),
    as ``(file, file under it)``, or None. Such files cannot be laid out as a
    directory tree (``export_files``, ``self.uri``)."""
    files = set(names)
    clashes = []
    for name in files:
        cut = name.find("/")
        while cut > 0:
            if name[:cut] in files:
                clashes.append((name[:cut], name))
                break
            cut = name.find("/", cut + 1)
    return min(clashes) if clashes else None


def check_tree(names: Iterable[str]) -> None:
    """Raise ``MaterializerError`` when one file name is a directory of another."""
    clash = tree_clash(names)
    if clash is not None:
        raise MaterializerError(
            f"artifact file {clash[0]!r} is also the directory of {clash[1]!r}; files cannot "
            f"be both. Rename one (e.g. write {clash[0]!r} as '{clash[0]}.bin')"
        )


class Signer:
    """Signs and checks pickle payloads with the store's secret (HMAC-SHA256).

    While the secret is damaged or missing (``secret_problem``), signing is
    refused: a signature under a throwaway key could never be verified later.
    ``refusal`` is that error's message, ``{problem}`` standing for the problem.
    """

    refusal = (
        "refusing to sign a pickle: {problem}. A pickle signed now could never load; "
        "nothing was committed"
    )

    def __init__(self, secret: bytes, secret_problem: str | None = None) -> None:
        self._secret = secret
        self._secret_problem = secret_problem

    def sign(self, payload: bytes) -> str:
        if self._secret_problem is not None:
            raise StoreSecretError(self.refusal.format(problem=self._secret_problem))
        return hmac.new(self._secret, payload, hashlib.sha256).hexdigest()

    def verify(self, payload: bytes, signature: str) -> bool:
        if not isinstance(signature, str):
            return False
        return hmac.compare_digest(self.sign(payload), signature)


class WriteFiles(Signer):
    """Files being written for one artifact version (or its visualizations)."""

    def __init__(
        self,
        session: WriteSession,
        secret: bytes,
        *,
        prefix: str = "",
        shared: dict[str, FileEntry] | None = None,
        state: dict[str, Any] | None = None,
        secret_problem: str | None = None,
    ) -> None:
        super().__init__(secret, secret_problem)
        self._session = session
        self._prefix = prefix
        self.entries: dict[str, FileEntry] = {} if shared is None else shared
        self.state: dict[str, Any] = {} if state is None else state
        self._stage: Path | None = None
        self._children: list[WriteFiles] = []

    def _full(self, name: str) -> str:
        return check_name(self._prefix + check_name(name))

    def open_write(self, name: str, *, itemsize: int = 0, chunking: str | None = None) -> IO[bytes]:
        """A buffered binary writer (``WRITE_BUFFER``); writes at least that large
        go straight to the chunk writer. Closing it ingests the file.

        ``itemsize`` (a hint, e.g. a numpy dtype's) says the file holds numbers
        of that many bytes at offsets that are multiples of it, so its chunks
        may be stored byte-shuffled when a sample says that pays. ``chunking``
        (``"fixed"`` or ``"cdc"``, None: the store's default) is how it is cut
        into chunks."""
        full = self._full(name)
        if full in self.entries:
            raise MaterializerError(f"artifact file {full!r} was written twice")

        def done(entry: FileEntry) -> None:
            self.entries[full] = entry

        raw = self._session.writer(full, done, itemsize=itemsize, chunking=chunking)
        return io.BufferedWriter(raw, WRITE_BUFFER)

    def open_read(self, name: str) -> IO[bytes]:
        full = self._full(name)
        if full not in self.entries:
            raise FileNotFoundError(full)
        return self._session.store.open_file(self.entries[full], full)  # type: ignore[return-value]

    def names(self) -> list[str]:
        n = len(self._prefix)
        return sorted(k[n:] for k in self.entries if k.startswith(self._prefix))

    def size(self, name: str) -> int:
        return self.entries[self._full(name)].size

    def sub(self, prefix: str) -> WriteFiles:
        child = WriteFiles(
            self._session,
            self._secret,
            prefix=self._full(prefix) + "/",
            shared=self.entries,
            state=self.state,
            secret_problem=self._secret_problem,
        )
        self._children.append(child)
        return child

    def local_dir(self) -> str:
        if self._stage is None:
            self._stage = Path(tempfile.mkdtemp(prefix="artledger-save-"))
        return str(self._stage)

    def finish(self) -> None:
        """Ingest files staged in :meth:`local_dir` (and in sub-views), then clean
        up; the whole artifact's names must form a tree (no file is another's
        directory)."""
        for child in self._children:
            child.finish()
        self._ingest()
        if not self._prefix:
            check_tree(self.entries)

    def _ingest(self) -> None:
        stage, self._stage = self._stage, None
        if stage is None:
            return
        try:
            for path in sorted(stage.rglob("*")):
                if path.is_symlink():
                    raise MaterializerError(
                        f"the materializer left a symlink {path.name!r} in self.uri; "
                        "write regular files"
                    )
                if not path.is_file():
                    continue
                rel = path.relative_to(stage).as_posix()
                with open(path, "rb") as src, self.open_write(rel) as dst:
                    while block := src.read(COPY_BLOCK):
                        dst.write(block)
        finally:
            shutil.rmtree(stage, ignore_errors=True)

    def discard(self) -> None:
        for child in self._children:
            child.discard()
        if self._stage is not None:
            shutil.rmtree(self._stage, ignore_errors=True)
            self._stage = None


class ReadFiles(Signer):
    """The stored files of one artifact version, read back verified."""

    def __init__(
        self,
        store: ChunkStore,
        secret: bytes,
        entries: dict[str, FileEntry],
        state: dict[str, Any],
        label: str,
        *,
        prefix: str = "",
        trusted: bool = True,
        sorted_names: list[str] | None = None,
    ) -> None:
        super().__init__(secret)
        self._store = store
        self.entries = entries
        # Stored files never change: one sorted list serves every sub-view's names().
        self._sorted = sorted(entries) if sorted_names is None else sorted_names
        self.state = state
        self.label = label
        self._prefix = prefix
        self._trusted = trusted
        self._stage: Path | None = None
        self._children: list[ReadFiles] = []

    def verify(self, payload: bytes, signature: str) -> bool:
        return self._trusted and super().verify(payload, signature)

    def _full(self, name: str) -> str:
        return check_name(self._prefix + check_name(name))

    def open_read(self, name: str) -> IO[bytes]:
        full = self._full(name)
        entry = self.entries.get(full)
        if entry is None:
            raise FileNotFoundError(f"{self.label} has no file {full!r}")
        return self._store.open_file(entry, f"{self.label} file {full!r}")  # type: ignore[return-value]

    def open_write(self, name: str) -> IO[bytes]:
        raise MaterializerError(f"{self.label} is stored and read-only; save a new version instead")

    def names(self) -> list[str]:
        prefix, names = self._prefix, self._sorted
        if not prefix:
            return list(names)
        lo = bisect.bisect_left(names, prefix)
        hi = bisect.bisect_left(names, prefix[:-1] + chr(ord(prefix[-1]) + 1))
        n = len(prefix)
        return [k[n:] for k in names[lo:hi]]

    def size(self, name: str) -> int:
        return self.entries[self._full(name)].size

    def sub(self, prefix: str) -> ReadFiles:
        child = ReadFiles(
            self._store,
            self._secret,
            self.entries,
            self.state,
            self.label,
            prefix=self._full(prefix) + "/",
            trusted=self._trusted,
            sorted_names=self._sorted,
        )
        self._children.append(child)
        return child

    def export(self, target: Path) -> list[Path]:
        """Write every file under this view into ``target``, byte-exact."""
        names = self.names()
        clash = tree_clash(names)
        if clash is not None:  # stored before save-time checks refused such names
            raise MaterializerError(
                f"{self.label} has a file {clash[0]!r} and a file {clash[1]!r} under it, so "
                "its files cannot be written as a directory tree; read them one by one "
                "(art.files, and the materializer's load)"
            )
        out = []
        for name in names:
            dest = target / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            with self.open_read(name) as src, open(dest, "wb") as dst:
                buf = bytearray(COPY_BLOCK)
                mv = memoryview(buf)
                while n := src.readinto(mv):  # type: ignore[attr-defined]
                    dst.write(mv[:n])
            out.append(dest)
        return out

    def local_dir(self) -> str:
        if self._stage is None:
            stage = Path(tempfile.mkdtemp(prefix="artledger-load-"))
            self.export(stage)
            self._stage = stage
        return str(self._stage)

    def cleanup(self) -> None:
        for child in self._children:
            child.cleanup()
        if self._stage is not None:
            shutil.rmtree(self._stage, ignore_errors=True)
            self._stage = None
