"""Re-addressing an imported stream's chunks under the destination's seed.

The destination cuts files at its own chunk size, so a destination chunk is a
run of byte ranges of stream chunks (its *spec*); when the chunk sizes agree
it is exactly one whole stream chunk. :class:`Rechunker` writes every
distinct spec once — its bytes read (and verified) once, hashed with the
destination's seed and compressed once, however many files and artifacts
name it — and composes each file's manifest from specs already written,
without touching its bytes again.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from engine.ops.stream import ChunkSource, bad
from engine.storage.chunks import FileEntry, WriteSession

Spec = bytes | tuple[tuple[bytes, int, int], ...]
"""A destination chunk: a whole stream chunk (its key), or byte ranges of some."""


class Rechunker:
    """Writes the destination chunks of imported files, each distinct one once."""

    def __init__(self, session: WriteSession, source: ChunkSource, chunk_size: int) -> None:
        self.session = session
        self.source = source
        self.chunk_size = chunk_size
        self.digests: dict[Spec, bytes] = {}  # spec -> destination digest
        self.itemsize: dict[Spec, int] = {}  # spec -> its file's element-size hint

    def specs(self, entry: FileEntry) -> Iterator[Spec]:
        """The destination chunks of ``entry``, in order (arithmetic only)."""
        if entry.cut == "cdc":  # content-defined chunks are kept as they were cut
            yield from entry.chunks
            return
        cs = self.chunk_size
        lengths = self.source.chunks
        pieces: list[tuple[bytes, int, int]] = []
        filled = 0
        for key in entry.chunks:
            n = lengths[key][1]
            if not pieces and n == cs:
                yield key
                continue
            lo = 0
            while lo < n:
                take = min(n - lo, cs - filled)
                pieces.append((key, lo, lo + take))
                filled += take
                lo += take
                if filled == cs:
                    yield _spec(pieces, lengths)
                    pieces, filled = [], 0
        if pieces:
            yield _spec(pieces, lengths)

    def write(self, entries: Iterable[FileEntry]) -> None:
        """Write every destination chunk of ``entries`` not written yet."""
        hint = self.itemsize.get
        for spec, digest in self.session.put_chunks(self._new(entries), lambda s: hint(s, 0)):
            self.digests[spec] = digest
            self.itemsize.pop(spec, None)

    def _new(self, entries: Iterable[FileEntry]) -> Iterator[tuple[Spec, Any]]:
        for entry in entries:
            for spec in self.specs(entry):
                if spec in self.digests:
                    continue
                self.digests[spec] = b""  # in flight; filled in by write()
                if entry.itemsize > 1:
                    self.itemsize[spec] = entry.itemsize
                yield spec, self._bytes(spec)

    def _bytes(self, spec: Spec) -> Any:
        get = self.source.get
        if isinstance(spec, bytes):
            return get(spec)
        if len(spec) == 1:
            key, lo, hi = spec[0]
            return memoryview(get(key))[lo:hi]
        return b"".join(memoryview(get(key))[lo:hi] for key, lo, hi in spec)

    def record(self, frec: list[Any]) -> list[Any]:
        """The destination's manifest record for a stream file record (its
        chunks written by :meth:`write`)."""
        entry = FileEntry.from_record(frec)
        out = []
        for spec in self.specs(entry):
            digest = self.digests.get(spec)
            if not digest:
                raise bad(self.source.path, f"file {entry.name!r} changed while being imported")
            out.append(digest)
        return FileEntry(entry.name, entry.size, entry.hash, out, entry.layout).to_record()


def _spec(pieces: list[tuple[bytes, int, int]], lengths: dict[bytes, tuple[int, int]]) -> Spec:
    if len(pieces) == 1:
        key, lo, hi = pieces[0]
        if lo == 0 and hi == lengths[key][1]:
            return key
    return tuple(pieces)
