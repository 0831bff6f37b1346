"""Chunk payloads in pack segment files: the on-disk ``BlobStore``.

``PackBlobStore`` appends payloads to pack segment files, one active segment
per writer, each record framed by a 32-byte header (magic, digest, codec,
payload and raw lengths) so packs can be checked against the index. The
committed length of every segment is recorded in the ledger in the same
transaction that references its chunks; bytes past it are a torn or
abandoned tail and are truncated when no live writer holds the segment.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import secrets
import shutil
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from engine import failpoints
from engine.errors import IntegrityError, StoreError
from engine.storage.blobs.base import BlobStore, ContainerCheck, ContainerState, Location

HEADER = struct.Struct(">4s16sB3xII")  # magic, digest, codec, payload length, raw length
MAGIC = b"ALC1"
SEGMENT_LIMIT = 1 << 30


class _Segment:
    def __init__(self, name: str, path: Path, fd: int, end: int) -> None:
        self.name = name
        self.path = path
        self.fd = fd
        self.end = end
        self.dirty = False
        self.pins = 0  # records put here whose commit has not returned yet


class PackBlobStore(BlobStore):
    """Chunk payloads appended to pack segment files under ``<store>/packs``."""

    persistent = True
    supports_compaction = True

    def __init__(self, root: Path) -> None:
        self.root = root
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"cannot create the pack directory {root}: {e}") from e
        self._active: _Segment | None = None
        self._lock = threading.Lock()
        self._readers: dict[str, int] = {}
        self._readers_lock = threading.Lock()
        # Segments closed for writing (rollover, rotate) whose end the ledger does
        # not record yet: their files stay open and locked until it does, so no
        # other process's recovery truncates them.
        self._retired: dict[str, _Segment] = {}
        self._new_files = False  # a segment file was created since the last flush

    # -- writing ---------------------------------------------------------------
    def _new_segment(self) -> _Segment:
        """A new segment, locked before it appears under its ``.pack`` name, so no
        other process can ever see it unlocked while this writer lives."""
        name = secrets.token_hex(8)
        path = self.root / f"{name}.pack"
        tmp = self.root / f".{name}.new"
        try:
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        except OSError as e:
            raise StoreError(f"cannot create pack segment {path}: {e}") from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            tmp.rename(path)
        except OSError as e:
            os.close(fd)
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise StoreError(f"cannot create pack segment {path}: {e}") from e
        return _Segment(name, path, fd, 0)

    def put(self, digest: bytes, codec: int, raw_len: int, payload: Any) -> Location:
        n = len(payload)
        header = HEADER.pack(MAGIC, digest, codec, n, raw_len)
        with self._lock:
            seg = self._active
            if seg is None or (seg.end + n + HEADER.size > SEGMENT_LIMIT and seg.end > 0):
                if seg is not None:
                    self._sync(seg)
                    self._active = None
                    self._retire(seg)
                seg = self._active = self._new_segment()
                self._new_files = True
            try:
                failpoints.hit("blob.before_write")
                written = os.writev(seg.fd, [header, payload])
                if written != HEADER.size + n:
                    # A short write (e.g. the disk just filled): write the rest,
                    # which raises the real cause (ENOSPC) if it persists.
                    rest = memoryview(header + bytes(payload))[written:]
                    while rest:
                        k = os.write(seg.fd, rest)
                        if k <= 0:
                            raise OSError(errno.EIO, f"short write to {seg.path}")
                        rest = rest[k:]
            except OSError as e:
                # Leave no partial record behind in the active segment.
                with contextlib.suppress(OSError):
                    os.ftruncate(seg.fd, seg.end)
                if e.errno == errno.ENOSPC:
                    raise StoreError(
                        f"no space left on the device holding {self.root}: free some space "
                        "(or run `artledger gc`) and retry; nothing was committed"
                    ) from e
                raise StoreError(f"cannot write pack segment {seg.path}: {e}") from e
            offset = seg.end + HEADER.size
            seg.end += HEADER.size + n
            seg.dirty = True
            seg.pins += 1
            failpoints.hit("blob.after_write")
            return Location(seg.name, offset, n)

    def _sync(self, seg: _Segment) -> None:
        if seg.dirty:
            try:
                os.fsync(seg.fd)
            except OSError as e:
                raise StoreError(f"cannot fsync pack segment {seg.path}: {e}") from e
            seg.dirty = False

    def _retire(self, seg: _Segment) -> None:
        """Close a segment for writing. Its file stays open and locked while
        a record put in it may still be committed (so no other process's
        recovery truncates it and no gc deletes it): until every location in
        it has been released."""
        self._retired[seg.name] = seg
        self._close_if_done(seg)

    def _close_if_done(self, seg: _Segment) -> None:
        if seg is self._active or seg.pins:  # still needed
            return
        if self._retired.pop(seg.name, None) is not None:
            with contextlib.suppress(OSError):
                os.close(seg.fd)

    def release(self, held: Iterable[Location]) -> None:
        counts: dict[str, int] = {}
        for loc in held:
            counts[loc.container] = counts.get(loc.container, 0) + 1
        with self._lock:
            for name, n in counts.items():
                seg = self._retired.get(name)
                if seg is None and self._active is not None and self._active.name == name:
                    seg = self._active
                if seg is not None:
                    seg.pins -= n
                    self._close_if_done(seg)

    def flush(self, held: Iterable[Location]) -> ContainerState:
        ends: ContainerState = {}
        for name, offset, n in held:
            ends[name] = max(ends.get(name, 0), offset + n)
        with self._lock:
            seg = self._active
            if seg is not None and seg.dirty:
                self._sync(seg)
                failpoints.hit("blob.after_fsync")
            if self._new_files:
                self._new_files = False
                with contextlib.suppress(OSError):
                    dfd = os.open(self.root, os.O_RDONLY)
                    try:
                        os.fsync(dfd)
                    finally:
                        os.close(dfd)
            return ends

    def seal(self) -> None:
        """Close the active segment (its end is committed); the next put starts a new one."""
        with self._lock:
            seg = self._active
            if seg is not None:
                self._sync(seg)
                self._active = None
                self._retire(seg)

    # -- reading ---------------------------------------------------------------
    def _reader(self, name: str) -> int:
        with self._readers_lock:
            fd = self._readers.get(name)
            if fd is None:
                path = self.root / f"{name}.pack"
                try:
                    fd = os.open(path, os.O_RDONLY)
                except FileNotFoundError:
                    raise IntegrityError(f"pack segment {path.name} is missing") from None
                except OSError as e:
                    raise StoreError(f"cannot open pack segment {path}: {e}") from e
                self._readers[name] = fd
            return fd

    def get(self, loc: Location) -> bytes:
        name, offset, n = loc
        fd = self._reader(name)
        data = os.pread(fd, n, offset)
        if len(data) != n:
            raise IntegrityError(
                f"pack segment {name}.pack is truncated: chunk at offset {offset} is short"
            )
        return data

    def readinto(self, loc: Location, buf: memoryview) -> None:
        name, offset, n = loc
        fd = self._reader(name)
        got = os.preadv(fd, [buf[:n]], offset)
        if got != n:
            raise IntegrityError(
                f"pack segment {name}.pack is truncated: chunk at offset {offset} is short"
            )

    def read_header(self, name: str, offset: int) -> tuple[bytes, bytes, int, int, int]:
        """The record header in front of the payload at ``offset``."""
        fd = self._reader(name)
        raw = os.pread(fd, HEADER.size, offset - HEADER.size)
        if len(raw) != HEADER.size:
            raise IntegrityError(f"pack segment {name}.pack: header at {offset} is cut off")
        magic, digest, codec, n, raw_len = HEADER.unpack(raw)
        return magic, digest, codec, n, raw_len

    def check(self, loc: Location, digest: bytes, codec: int, raw_len: int) -> str | None:
        magic, hdigest, hcodec, plen, rlen = self.read_header(loc.container, loc.offset)
        if (magic, hdigest, hcodec, plen, rlen) != (MAGIC, digest, codec, loc.length, raw_len):
            return (
                f"pack segment {loc.container}.pack: header of chunk {digest.hex()} "
                f"at offset {loc.offset} does not match the index"
            )
        return None

    def check_containers(
        self, state: Mapping[str, int], referenced: Callable[[str], bool]
    ) -> ContainerCheck:
        """Pack files against the segment table: missing, truncated, a tail
        past the committed end, and orphans (unknown to the ledger)."""
        out = ContainerCheck(checked=len(state))
        for name, end in state.items():
            size = self.segment_size(name)
            if size < 0:
                if referenced(name):
                    out.problems.append(f"pack segment {name}.pack is missing")
            elif size < end:
                out.problems.append(
                    f"pack segment {name}.pack is truncated: {size} bytes, {end} committed"
                )
            elif size > end:
                out.notes.append(
                    f"pack segment {name}.pack has {size - end} bytes past its committed "
                    "end (an unfinished write; `verify --fix` truncates it)"
                )
        for name in self.orphans(state):
            size = self.segment_size(name)
            out.notes.append(
                f"pack segment {name}.pack ({size} bytes) is unknown to the ledger: left by "
                "a writer that stopped before its first commit; nothing references it "
                "(`artledger gc` deletes it)"
            )
        return out

    def containers(self) -> list[str]:
        return self.segment_names()

    def delete_container(self, name: str) -> None:
        self.delete_segment(name)

    def free_space(self) -> tuple[str, int]:
        return str(self.root), shutil.disk_usage(self.root).free

    def cleanup(self, older_than: float) -> None:
        for path in self.stale_new_files(older_than):
            with contextlib.suppress(OSError):
                path.unlink()

    def segment_names(self) -> list[str]:
        return sorted(p.stem for p in self.root.glob("*.pack"))

    def segment_size(self, name: str) -> int:
        try:
            return (self.root / f"{name}.pack").stat().st_size
        except FileNotFoundError:
            return -1

    def drop_reader(self, name: str) -> None:
        with self._readers_lock:
            fd = self._readers.pop(name, None)
        if fd is not None:
            os.close(fd)

    # -- recovery and deletion ---------------------------------------------------
    @contextlib.contextmanager
    def claimed(self, names: Iterable[str]) -> Iterator[list[str]]:
        """Lock, for the duration of the block, each of ``names`` that no live
        writer holds (in this process or another); yield the names locked.

        A writer holds its segment's lock from before the file appears until
        every commit that may reference its bytes has returned, and a segment
        is never written again once its lock is released. So once claimed, a
        segment's committed end and members, read in a *fresh* ledger
        transaction, are final: recovery and gc read them only then."""
        held: dict[str, int] = {}
        try:
            for name in names:
                if name in held:
                    continue
                try:
                    fd = os.open(self.root / f"{name}.pack", os.O_RDONLY)
                except OSError:
                    continue  # gone: deleted by another gc
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    os.close(fd)  # a live writer holds it
                    continue
                held[name] = fd
            yield list(held)
        finally:
            for fd in held.values():
                with contextlib.suppress(OSError):
                    os.close(fd)

    def recover(
        self, committed: Callable[[], Mapping[str, int]], hint: Mapping[str, int]
    ) -> list[str]:
        """Truncate torn tails: bytes past a segment's committed end, in segments
        no live writer holds. ``hint`` (ends from an earlier snapshot) picks the
        candidates cheaply; ``committed()`` is called after they are locked and
        must read the ends in a fresh transaction. A segment the ledger does not
        know is never truncated (see :meth:`orphans`). What was truncated."""
        candidates = [
            n for n in self.segment_names() if n in hint and self.segment_size(n) > hint[n]
        ]
        if not candidates:
            return []
        fixed: list[str] = []
        with self.claimed(candidates) as held:
            if not held:
                return []
            ends = committed()
            for name in held:
                end = ends.get(name)
                size = self.segment_size(name)
                if end is None or size <= end:
                    continue
                path = self.root / f"{name}.pack"
                try:
                    os.truncate(path, end)
                    fd = os.open(path, os.O_RDONLY)
                    try:
                        os.fsync(fd)
                    finally:
                        os.close(fd)
                except OSError as e:
                    raise StoreError(f"cannot truncate the torn tail of {path}: {e}") from e
                fixed.append(f"{name}.pack: truncated {size - end} bytes past the committed end")
        return fixed

    def orphans(self, known: Iterable[str]) -> list[str]:
        """Segments the ledger does not know (``known``: the ledger's segment
        table) and no live writer holds: left by a writer that died before its
        first commit. Their bytes are referenced by nothing."""
        known = set(known)
        names = [n for n in self.segment_names() if n not in known]
        with self.claimed(names) as held:
            return held

    def stale_new_files(self, older_than: float) -> list[Path]:
        """Half-created segment files (``.NAME.new``) of writers that died
        between creating and naming a segment, unchanged for ``older_than`` s."""
        now = time.time()
        out = []
        for p in self.root.glob(".*.new"):
            with contextlib.suppress(OSError):
                if now - p.stat().st_mtime > older_than:
                    out.append(p)
        return out

    def delete_segment(self, name: str) -> None:
        self.drop_reader(name)
        with contextlib.suppress(FileNotFoundError):
            (self.root / f"{name}.pack").unlink()

    def close(self) -> None:
        with self._lock:
            segments = list(self._retired.values())
            if self._active is not None:
                segments.append(self._active)
            for seg in segments:
                with contextlib.suppress(OSError):
                    os.close(seg.fd)
            self._active = None
            self._retired.clear()
        with self._readers_lock:
            for fd in self._readers.values():
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._readers.clear()
