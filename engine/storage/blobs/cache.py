"""A local disk cache of chunk payloads fetched from a remote blob store.

One file per chunk, ``<root>/<first 2 hex>/<name>``, holding the 8-byte
xxh3-64 of the payload and then the payload; a file whose check fails is
deleted and reported as a miss, so a damaged cache costs a refetch, never a
wrong read. Files appear atomically (temporary name, then rename), so
several processes may share one cache directory. The total size is tracked
in memory; when it passes the bound, a scan of the directory evicts the
least recently used files (a hit touches its file's mtime) down to 90% of
the bound, which keeps scans rare and corrects for other processes' writes.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import threading
import time
from pathlib import Path

import xxhash

CHECK_SIZE = 8
LOW_WATER = 0.9  # evict down to this fraction of the bound
STALE_TMP = 3600.0  # seconds after which a leftover temporary file is removed


class ChunkCache:
    """Verified chunk payloads on local disk, least recently used evicted first."""

    def __init__(self, root: Path, limit: int) -> None:
        self.root = root
        self.limit = limit
        self._lock = threading.Lock()
        root.mkdir(parents=True, exist_ok=True)
        self._total = sum(size for _, size, _ in self._files())

    @property
    def total(self) -> int:
        """Bytes of cache files this process knows of (a scan corrects it)."""
        return self._total

    def path(self, name: str) -> Path:
        return self.root / name[:2] / name

    def get(self, name: str, length: int) -> bytearray | None:
        """The cached payload ``name`` of ``length`` bytes, or None (absent or damaged)."""
        payload = bytearray(length)
        return payload if self.readinto(name, memoryview(payload)) else None

    def readinto(self, name: str, buf: memoryview) -> bool:
        """Read the cached payload ``name`` straight into ``buf`` (exactly its
        length); False when it is absent or damaged (then ``buf`` is garbage)."""
        path = self.path(name)
        try:
            with open(path, "rb", buffering=0) as f:
                check = f.read(CHECK_SIZE)
                got = f.readinto(buf)
                extra = f.read(1)
        except OSError:
            return False
        if got == len(buf) and not extra and xxhash.xxh3_64_digest(buf) == check:
            with contextlib.suppress(OSError):
                os.utime(path)
            return True
        self.discard(name)
        return False

    def has(self, name: str) -> bool:
        """Whether a file for ``name`` is there (not checked)."""
        return self.path(name).exists()

    def put(self, name: str, payload: bytes | memoryview) -> None:
        """Cache ``payload`` under ``name`` (best effort: a full disk is not an error)."""
        size = CHECK_SIZE + len(payload)
        if size > self.limit:
            return
        path = self.path(name)
        tmp = path.parent / f".{name}.{secrets.token_hex(4)}.tmp"
        try:
            path.parent.mkdir(exist_ok=True)
            with open(tmp, "wb") as f:
                f.write(xxhash.xxh3_64_digest(payload))
                f.write(payload)
            tmp.replace(path)
        except OSError:
            with contextlib.suppress(OSError):
                tmp.unlink()
            return
        with self._lock:
            self._total += size
            if self._total > self.limit:
                self._evict()

    def discard(self, name: str) -> None:
        """Forget ``name`` (deleted or damaged)."""
        path = self.path(name)
        try:
            size = path.stat().st_size
            path.unlink()
        except OSError:
            return
        with self._lock:
            self._total = max(0, self._total - size)

    def _files(self) -> list[tuple[float, int, Path]]:
        """(mtime, size, path) of every cache file; removes stale temporary files."""
        out: list[tuple[float, int, Path]] = []
        now = time.time()
        with contextlib.suppress(OSError):
            for sub in os.scandir(self.root):
                if not sub.is_dir(follow_symlinks=False):
                    continue
                with contextlib.suppress(OSError):
                    for entry in os.scandir(sub.path):
                        with contextlib.suppress(OSError):
                            st = entry.stat(follow_symlinks=False)
                            if not entry.name.startswith("."):
                                out.append((st.st_mtime, st.st_size, Path(entry.path)))
                            elif now - st.st_mtime > STALE_TMP:
                                Path(entry.path).unlink()
        return out

    def _evict(self) -> None:
        """Delete the least recently used files down to the low-water mark (lock held)."""
        files = sorted(self._files(), key=lambda f: f[0])
        total = sum(size for _, size, _ in files)
        target = int(self.limit * LOW_WATER)
        for _, size, path in files:
            if total <= target:
                break
            with contextlib.suppress(OSError):
                path.unlink()
                total -= size
        self._total = total
