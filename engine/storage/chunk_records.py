"""What the engine records about stored files and chunks.

:class:`FileEntry` is one file of an artifact's manifest; :class:`ChunkRecord`
is the chunk index's record for one digest (codec, lengths, where its payload
is). Both are msgpack lists whose layout never changes meaning.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgpack
import xxhash

from engine.errors import IntegrityError
from engine.storage.blobs import Location
from engine.storage.damage import DECODE_ERRORS

LAYOUT_KEYS = {"cut": str, "itemsize": int}
"""What a manifest entry's layout may say: how the file was cut into chunks
(``"cdc"``: content-defined; absent: fixed-size) and the element size of the
numbers it holds (absent: none; a hint for the shuffle codec)."""


@dataclass
class FileEntry:
    """One file of an artifact: its name, size, unseeded xxh3-128, chunk digests
    and (for files written since layouts were recorded, when not all defaults)
    its layout, see :data:`LAYOUT_KEYS`. The record is the 4-element list of old
    stores when the layout is empty, else those four plus the layout dict."""

    name: str
    size: int
    hash: str
    chunks: list[bytes]
    layout: dict[str, Any] | None = None

    def to_record(self) -> list[Any]:
        if self.layout:
            return [self.name, self.size, self.hash, self.chunks, self.layout]
        return [self.name, self.size, self.hash, self.chunks]

    @classmethod
    def from_record(cls, rec: list[Any]) -> FileEntry:
        layout = rec[4] if len(rec) > 4 else None
        return cls(rec[0], rec[1], rec[2], list(rec[3]), layout or None)

    @property
    def cut(self) -> str:
        """``"cdc"`` for content-defined chunks, ``"fixed"`` otherwise."""
        return str((self.layout or {}).get("cut", "fixed"))

    @property
    def itemsize(self) -> int:
        """The element-size hint its chunks were encoded with (0: none)."""
        return int((self.layout or {}).get("itemsize", 0))


def check_layout(layout: Any) -> str | None:
    """What is wrong with an untrusted layout record, or None."""
    if not isinstance(layout, dict):
        return "its layout is not a map"
    for key, value in layout.items():
        kind = LAYOUT_KEYS.get(key) if isinstance(key, str) else None
        if kind is None or not isinstance(value, kind) or isinstance(value, bool):
            return f"its layout has an unknown or malformed field {key!r:.40}"
    if layout.get("cut", "cdc") not in ("cdc", "fixed"):
        return f"its layout names an unknown chunking {layout['cut']!r:.40}"
    if not 0 <= layout.get("itemsize", 0) <= 64:
        return "its layout has an absurd element size"
    return None


def content_hash(files: list[FileEntry]) -> str:
    """The portable identity of an artifact's data: xxh3-128 (unseeded) over
    the sorted (name, size, file hash) triples."""
    triples = sorted((f.name, f.size, f.hash) for f in files)
    return xxhash.xxh3_128(msgpack.packb(triples, use_bin_type=True)).hexdigest()


@dataclass
class ChunkRecord:
    """What the chunk index keeps for one digest."""

    codec: int
    raw_len: int
    loc: Location | None
    inline: bytes | None = None

    @property
    def stored_len(self) -> int:
        return len(self.inline) if self.inline is not None else self.loc.length  # type: ignore[union-attr]

    def pack(self) -> bytes:
        return msgpack.packb([self.codec, self.raw_len, self.loc, self.inline], use_bin_type=True)  # type: ignore[no-any-return]

    @classmethod
    def unpack(cls, raw: bytes) -> ChunkRecord:
        try:
            codec, raw_len, loc, inline = msgpack.unpackb(raw, raw=False)
        except DECODE_ERRORS as e:
            raise IntegrityError(
                f"a chunk index record is damaged ({type(e).__name__}: {e}); run `artledger verify`"
            ) from e
        return cls(codec, raw_len, None if loc is None else Location.from_record(loc), inline)
