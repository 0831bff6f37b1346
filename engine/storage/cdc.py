"""Content-defined chunk boundaries (FastCDC 2020, through ``pyfastcdc``).

A boundary falls where a rolling (gear) hash of the bytes before it meets a
condition, so it moves with the content: an insertion or a deletion changes
only the chunks around it, and the chunks after it are the same bytes as
before (the same digests), unlike fixed-size chunks where every chunk after
the edit shifts. Sizes follow the store's ``chunk_size`` as the maximum:
FastCDC's average parameter a quarter of it, and the minimum the same (4 MiB:
1 MiB minimum, chunks of 1.5 MiB on average, 4 MiB at most): the gear hash
skips the first minimum of every chunk, so this cuts ~2.8x faster than a
sixteenth (6.5 vs 2.4 GB/s on one core) for chunks only 1.2x larger
(docs/design.md, "Chunks and packs").

``pyfastcdc`` is imported when the first content-defined file is cut, so
opening a store stays light.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

CDC = "cdc"
FIXED = "fixed"
STRATEGIES = (FIXED, CDC)


def sizes(chunk_size: int) -> tuple[int, int, int]:
    """(min, avg, max) content-defined chunk sizes for a store's ``chunk_size``,
    within what FastCDC accepts."""
    top = max(1024, min(chunk_size, 16 << 20))
    avg = max(256, min(top // 4, 4 << 20))
    low = max(64, min(avg, 1 << 20))
    return low, avg, top


class Cutter:
    """Finds content-defined boundaries in a buffer; one per writer (not thread-safe)."""

    def __init__(self, chunk_size: int, align: int = 1) -> None:
        import pyfastcdc

        low, avg, top = sizes(chunk_size)
        self.max_size = top
        self.align = max(1, align)
        self._cdc: Any = pyfastcdc.FastCDC(avg, min_size=low, max_size=top)

    def cuts(self, buf: memoryview, final: bool) -> Iterator[int]:
        """The ends of the chunks ``buf`` holds, from its start. Unless ``final``
        (the file ends with ``buf``), the last piece is left out: its end was
        forced by the end of the buffer, not found in the content. Ends are
        rounded down to multiples of ``align`` (a numeric file's element
        size), so a chunk holds whole elements, as shuffling needs. Lazy: a
        caller hands each chunk on before the next is cut."""
        start, n, align = 0, len(buf), self.align
        while start < n:
            length = next(iter(self._cdc.cut_buf(buf[start:]))).length
            end = start + length
            if end >= n:
                if final:
                    yield n
                break
            if align > 1 and length > align:
                end -= length % align
            yield end
            start = end
