"""Chunk codecs: how a chunk's bytes are stored, by the codec id its index record keeps.

A codec is a small frozen dataclass with an ``id`` (kept in every chunk index
record and pack record header, so ids never change meaning), a ``name`` and a
reversible pair ``encode``/``decode``. :data:`CODECS` is the registry by id;
:func:`codec` looks one up. ``identity`` marks the codec whose stored payload
is the chunk itself, so a reader may copy it straight from the blob store.

Decoding damaged bytes raises :class:`CodecError` (not an ``ArtledgerError``:
the chunk store turns it into an ``IntegrityError`` naming the artifact).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import zstandard

CODEC_RAW = 0
CODEC_ZSTD = 1
SAMPLE = 32 << 10
MIN_SAVING = 0.9  # store raw when compressed/raw is above this


class CodecError(Exception):
    """A payload that does not decode under its codec (damage, or an unknown id)."""


@dataclass(frozen=True)
class Codec:
    """One stored form of a chunk. Subclasses override :meth:`encode` and :meth:`decode_into`."""

    id: int
    name: str
    identity: bool = False

    def encode(self, data: Any, level: int) -> bytes | Any:
        """The payload to store for ``data`` (a bytes-like object)."""
        raise NotImplementedError

    def decode_into(self, payload: Any, out: memoryview) -> int:
        """Decode ``payload`` into ``out``; the number of bytes written (short
        when the payload holds fewer than ``len(out)``)."""
        raise NotImplementedError

    def decode(self, payload: bytes, raw_len: int) -> bytes:
        """The chunk of exactly ``raw_len`` bytes ``payload`` holds, or ``CodecError``."""
        out = bytearray(raw_len)
        if self.decode_into(payload, memoryview(out)) != raw_len:
            raise CodecError(f"{self.name} payload does not hold {raw_len} bytes")
        return bytes(out)


@dataclass(frozen=True)
class RawCodec(Codec):
    """The chunk as it is (incompressible data, or compression off)."""

    def encode(self, data: Any, level: int) -> Any:
        return data

    def decode_into(self, payload: Any, out: memoryview) -> int:
        if len(payload) != len(out):
            raise CodecError(f"raw payload holds {len(payload)} bytes, not {len(out)}")
        out[:] = payload
        return len(out)

    def decode(self, payload: bytes, raw_len: int) -> bytes:
        if len(payload) != raw_len:
            raise CodecError(f"raw payload holds {len(payload)} bytes, not {raw_len}")
        return payload


_tls = threading.local()


def _cctx(level: int) -> zstandard.ZstdCompressor:
    key = f"c{level}"
    c = getattr(_tls, key, None)
    if c is None:
        c = zstandard.ZstdCompressor(level=level)
        setattr(_tls, key, c)
    return c


def _dctx() -> zstandard.ZstdDecompressor:
    d = getattr(_tls, "d", None)
    if d is None:
        d = _tls.d = zstandard.ZstdDecompressor()
    return d


@dataclass(frozen=True)
class ZstdCodec(Codec):
    """A zstd frame; ``level`` is the compression level (one context per thread and level)."""

    def encode(self, data: Any, level: int) -> bytes:
        return _cctx(level).compress(data)

    def decode_into(self, payload: Any, out: memoryview) -> int:
        try:
            reader = _dctx().stream_reader(payload)
            got = 0
            while got < len(out):
                n = reader.readinto(out[got:])
                if not n:
                    break
                got += n
        except zstandard.ZstdError as e:
            raise CodecError(f"cannot decompress: {e}") from e
        return got

    def decode(self, payload: bytes, raw_len: int) -> bytes:
        try:
            out = _dctx().decompress(payload, max_output_size=raw_len)
        except zstandard.ZstdError as e:
            raise CodecError(f"cannot decompress: {e}") from e
        if len(out) != raw_len:
            raise CodecError(f"zstd payload holds {len(out)} bytes, not {raw_len}")
        return out


RAW = RawCodec(CODEC_RAW, "raw", identity=True)
ZSTD = ZstdCodec(CODEC_ZSTD, "zstd")
CODECS: dict[int, Codec] = {c.id: c for c in (RAW, ZSTD)}
"""Every codec by id."""


def codec(codec_id: int) -> Codec:
    """The codec with ``codec_id``, or ``CodecError`` for an id no codec has."""
    found = CODECS.get(codec_id)
    if found is None:
        raise CodecError(f"unknown codec id {codec_id!r}")
    return found


def worth_compressing(chunk: memoryview) -> bool:
    """Whether zstd is likely to save at least ~10%, judged from three samples."""
    n = len(chunk)
    if n <= 3 * SAMPLE:
        sample = bytes(chunk)
    else:
        mid = n // 2
        sample = b"".join((chunk[:SAMPLE], chunk[mid : mid + SAMPLE], chunk[n - SAMPLE :]))
    packed = ZSTD.encode(sample, 1)
    return len(packed) < len(sample) * MIN_SAVING
