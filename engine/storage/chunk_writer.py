"""Writing one file into chunks: :class:`ChunkWriter`, and where the files
written lately were cut (:class:`RecentCuts`).

Content-defined cutting is the one cost of a save beyond hashing that grows
with the bytes. A chunk's cut is a function of its own bytes only (FastCDC
restarts at every boundary), so once a file's first chunk matches the first
chunk of a file cut lately, the writer takes that file's next boundaries as a
plan and only hashes: a planned chunk whose seeded digest is the one planned
holds the same bytes, hence ends where cutting would end it. At the first
chunk that differs, the writer cuts again from that chunk's start; the
chunks it records are the same either way.
"""

from __future__ import annotations

import io
import threading
from array import array
from bisect import bisect_left
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

import xxhash

from engine.storage.cdc import CDC, STRATEGIES, Cutter, sizes
from engine.storage.chunk_records import FileEntry

if TYPE_CHECKING:
    from engine.storage.chunks import WriteSession

INLINE_POOL_MAX = 64 << 10  # chunks this small are encoded in the writing thread
HASH_IN_POOL = 1 << 20  # content-defined writes this large hash the file in the pool
DIGEST_LEN = 16


class Plan:
    """Where one file's content-defined chunks start, their lengths and digests
    (its last chunk left out: the file's end cut it, not its content)."""

    __slots__ = ("digests", "lengths", "starts")

    def __init__(self, lengths: list[int], digests: list[bytes]) -> None:
        self.lengths = array("Q", lengths)
        self.starts = array("Q")
        position = 0
        for n in lengths:
            self.starts.append(position)
            position += n
        self.digests = b"".join(digests)

    def __len__(self) -> int:
        return len(self.lengths)

    def index_at(self, offset: int) -> int | None:
        """The chunk that starts at ``offset``, if one does."""
        i = bisect_left(self.starts, offset)
        return i if i < len(self.starts) and self.starts[i] == offset else None

    def digest(self, i: int) -> bytes:
        return self.digests[i * DIGEST_LEN : (i + 1) * DIGEST_LEN]


class RecentCuts:
    """The plans of the last :data:`MAX_FILES` content-defined files written
    (of :data:`MIN_CHUNKS` to :data:`MAX_CHUNKS` chunks), by their first chunk
    (digest and length) and element size; least recently used dropped first."""

    MAX_FILES = 16
    MIN_CHUNKS = 4
    MAX_CHUNKS = 1 << 15

    def __init__(self) -> None:
        self._plans: OrderedDict[tuple[bytes, int, int], Plan] = OrderedDict()
        self._lock = threading.Lock()

    def remember(self, align: int, lengths: list[int], digests: list[bytes]) -> None:
        if not self.MIN_CHUNKS <= len(lengths) <= self.MAX_CHUNKS:
            return
        plan = Plan(lengths[:-1], digests[:-1])
        with self._lock:
            key = (digests[0], lengths[0], align)
            self._plans[key] = plan
            self._plans.move_to_end(key)
            while len(self._plans) > self.MAX_FILES:
                self._plans.popitem(last=False)

    def find(self, align: int, first_length: int, first_digest: bytes) -> Plan | None:
        with self._lock:
            key = (first_digest, first_length, align)
            plan = self._plans.get(key)
            if plan is not None:
                self._plans.move_to_end(key)
            return plan


class ChunkWriter(io.RawIOBase):
    """A writable binary file that streams into chunks; ``close`` finishes it."""

    def __init__(
        self,
        session: WriteSession,
        name: str,
        on_close: Callable[[FileEntry], None],
        *,
        itemsize: int = 0,
        chunking: str | None = None,
    ):
        super().__init__()
        self._s = session
        self._itemsize = itemsize
        chunking = chunking or session.store.chunking
        if chunking not in STRATEGIES:
            raise ValueError(f"unknown chunking {chunking!r}; use one of {STRATEGIES}")
        self._cdc = chunking == CDC
        self._cutter: Cutter | None = None  # made when a content-defined file needs cutting
        self._min_cut, _, self._max_cut = sizes(session.store.chunk_size)
        self.name = name
        self._on_close = on_close
        self._cs = session.store.chunk_size
        self._buf = bytearray()
        self._hash = xxhash.xxh3_128()
        self._size = 0
        self._digests: list[bytes] = []
        self._inflight: deque[Future[tuple[bytes, int, Any, int]]] = deque()
        self._window = max(2, session.store.workers * 2)
        self.entry: FileEntry | None = None
        self._lengths: list[int] = []  # content-defined chunks' lengths, in order
        self._cut_at = 0  # where the bytes not yet in a chunk start
        self._first: tuple[int, bytes] | None = None  # (length, digest) of chunk 0
        self._plan: Plan | None = None
        self._plan_i = 0  # the planned chunk starting at ``_cut_at``
        self._planned = False  # a plan was looked for

    def writable(self) -> bool:
        return True

    def _cutter_made(self) -> Cutter:
        if self._cutter is None:
            self._cutter = Cutter(self._s.store.chunk_size, self._itemsize)
        return self._cutter

    def _submit(self, chunk: memoryview) -> None:
        self._cut_at += len(chunk)
        if self._cdc:
            if self._first is None and self._cutter is not None:
                self._first = (len(chunk), self._s.store.digest(chunk))
            self._lengths.append(len(chunk))
        if not self._inflight and len(chunk) <= INLINE_POOL_MAX:
            # Small chunks: a thread hop costs more than the work.
            self._digests.append(self._s._store(self._s._encode(chunk, self._itemsize)))
            return
        while len(self._inflight) >= self._window:
            self._digests.append(self._s._store(self._inflight.popleft().result()))
        self._inflight.append(self._s.store.pool.submit(self._s._encode, chunk, self._itemsize))

    def _drain(self) -> None:
        while self._inflight:
            self._digests.append(self._s._store(self._inflight.popleft().result()))

    def write(self, b: Any) -> int:
        if self.closed:
            raise ValueError("write to a closed artifact file")
        mv = memoryview(b)
        if not mv.contiguous:
            mv = memoryview(mv.tobytes())
        mv = mv.cast("B")
        n = len(mv)
        if not n:
            return 0
        self._size += n
        if self._cdc:
            # The file's hash runs in the pool while the main thread cuts (both
            # release the GIL); it is done before the caller gets its buffer back.
            big = n >= HASH_IN_POOL
            job = self._s.store.pool.submit(self._hash.update, mv) if big else None
            if job is None:
                self._hash.update(mv)
            try:
                self._write_content(mv)
            finally:
                if job is not None:
                    job.result()
            return n
        self._hash.update(mv)
        cs = self._cs
        pos = 0
        if self._buf:
            take = min(cs - len(self._buf), n)
            self._buf += mv[:take]
            pos = take
            if len(self._buf) == cs:
                chunk, self._buf = self._buf, bytearray()
                self._submit(memoryview(chunk))
        if n - pos >= cs:
            # Large write: chunk the caller's buffer in place, and finish with it
            # before returning (the caller may reuse it afterwards).
            full = pos + (n - pos) // cs * cs
            for off in range(pos, full, cs):
                self._submit(mv[off : off + cs])
            self._drain()
            pos = full
        if pos < n:
            self._buf += mv[pos:]
        return n

    def _find_plan(self) -> None:
        """Take the cuts of a file written lately whose first chunk is this one's."""
        self._planned = True
        assert self._first is not None
        plan = self._s.store.recent.find(self._itemsize, *self._first)
        i = None if plan is None else plan.index_at(self._cut_at)
        if plan is not None and i is not None:
            self._drain()  # the planned chunks' digests follow these
            self._plan, self._plan_i = plan, i

    def _write_content(self, mv: memoryview) -> None:
        """Cut ``mv`` into content-defined chunks, or follow a plan once the
        first chunk (cut from the first bytes of a large write) finds one."""
        window = 2 * self._max_cut
        if self._first is None and len(mv) > 2 * window:
            self._write_cdc(mv[:window])
            mv = mv[window:]
        if not self._planned and self._first is not None:
            self._find_plan()
        if self._plan is not None:
            self._write_planned(mv)
        else:
            self._write_cdc(mv)

    def _write_planned(self, mv: memoryview) -> None:
        """Encode the planned chunks ``mv`` completes (in the pool), checking each
        against the plan; from the first that differs on (or past the plan's
        end), cut."""
        plan = self._plan
        assert plan is not None
        n, i = len(mv), self._plan_i
        # (chunk, where it starts: in the carried bytes if in_carried, else in mv)
        pieces: list[tuple[memoryview, bool, int]] = []
        carried, self._buf = self._buf, bytearray()
        held, cpos, pos = len(carried), 0, 0
        while i < len(plan) and cpos < held:
            length = plan.lengths[i]
            if held - cpos >= length:
                pieces.append((memoryview(carried)[cpos : cpos + length], True, cpos))
            elif held - cpos + n >= length:
                pos = length - (held - cpos)
                joined = carried[cpos:] + mv[:pos]
                pieces.append((memoryview(joined), True, cpos))
            else:
                break
            cpos += length
            i += 1
        if cpos < held:  # the carried bytes do not complete the next planned chunk
            self._buf = carried[cpos:] + mv if i < len(plan) else carried[cpos:]
            pos = n if i < len(plan) else 0
        while i < len(plan) and not self._buf and pos + plan.lengths[i] <= n:
            pieces.append((mv[pos : pos + plan.lengths[i]], False, pos))
            pos += plan.lengths[i]
            i += 1
        miss = self._check_planned([p[0] for p in pieces], self._plan_i)
        if miss is None:
            self._plan_i = i
            rest = mv[pos:]
            if i < len(plan):
                self._buf += rest
                return
            self._plan = None
        else:
            self._plan = None
            _, in_carried, start = pieces[miss]
            if in_carried:
                self._buf = carried[start:]
                rest = mv
            else:
                self._buf = bytearray()
                rest = mv[start:]
        if len(rest):
            self._write_cdc(rest)

    def _check_planned(self, pieces: list[memoryview], first: int) -> int | None:
        """Encode the planned chunks ``pieces`` (plan indexes from ``first``) while
        their digests are the plan's; the index in ``pieces`` of the first that
        is not (every job is done when this returns), or None."""
        plan, session = self._plan, self._s
        assert plan is not None
        jobs: deque[Future[tuple[bytes, int, Any, int] | None]] = deque()
        miss: int | None = None
        done = 0

        def collect() -> None:
            nonlocal miss, done
            result = jobs.popleft().result()
            if miss is None and result is None:
                miss = done
            if miss is None:
                assert result is not None
                self._digests.append(session._store(result))
                self._lengths.append(len(pieces[done]))
                self._cut_at += len(pieces[done])
            done += 1

        for k, chunk in enumerate(pieces):
            if miss is not None:
                break
            while len(jobs) >= self._window:
                collect()
            digest = plan.digest(first + k)
            jobs.append(
                session.store.pool.submit(session._encode_expected, chunk, self._itemsize, digest)
            )
        while jobs:
            collect()
        return miss

    def _write_cdc(self, mv: memoryview) -> None:
        """Content-defined chunks: bytes are gathered (at most two maximum chunks)
        until the cutter finds boundaries; a large write is cut in place, and
        the piece after its last boundary is carried to the next write."""
        top = self._max_cut
        window = 2 * top
        pos, n = 0, len(mv)
        while pos < n:
            if not self._buf and n - pos >= window:
                view = mv[pos:]
                start = self._cut(self._cutter_made(), view, final=False)
                self._drain()  # the caller may reuse its buffer once this returns
                self._buf = bytearray(view[start:])
                return
            # Before a large write is cut in place, the piece carried from the
            # last write needs only enough bytes to end (a maximum chunk).
            target = top + 1 if n - pos >= window else window
            take = min(n - pos, max(0, target - len(self._buf)))
            self._buf += mv[pos : pos + take]
            pos += take
            if len(self._buf) < target:
                return
            buf, self._buf = self._buf, bytearray()
            start = self._cut(self._cutter_made(), memoryview(buf), final=False)
            back = len(buf) - start
            if back <= take:
                pos -= back  # the unfinished piece is the caller's: re-read it in place
            else:
                self._buf = buf[start:]

    def _cut(self, cutter: Cutter, view: memoryview, final: bool) -> int:
        """Submit the chunks ``cutter`` finds in ``view``; where the rest begins."""
        start = 0
        for end in cutter.cuts(view, final):
            self._submit(view[start:end])
            start = end
        return start

    def close(self) -> None:
        if self.closed:
            return
        try:
            self._plan = None  # the rest is cut: the file's end may come early
            if self._buf and self._cdc and self._cutter is None and len(self._buf) <= self._min_cut:
                # A file this small is one chunk, however it would be cut.
                self._submit(memoryview(bytes(self._buf)))
                self._buf = bytearray()
            elif self._buf and self._cdc:
                self._cut(self._cutter_made(), memoryview(bytes(self._buf)), final=True)
                self._buf = bytearray()
            elif self._buf:
                self._submit(memoryview(bytes(self._buf)))
                self._buf = bytearray()
            self._drain()
            layout: dict[str, Any] = {"itemsize": self._itemsize} if self._itemsize > 1 else {}
            if self._cdc:
                layout["cut"] = CDC
            self.entry = FileEntry(
                self.name, self._size, self._hash.hexdigest(), self._digests, layout or None
            )
            if self._cdc:
                self._s.store.recent.remember(self._itemsize, self._lengths, self._digests)
            self._on_close(self.entry)
        finally:
            super().close()
