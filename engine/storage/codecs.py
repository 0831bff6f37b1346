"""Chunk codecs: how a chunk's bytes are stored, by the codec id its index record keeps.

A codec is a small frozen dataclass with an ``id`` (kept in every chunk index
record and pack record header, so ids never change meaning), a ``name`` and a
reversible pair ``encode``/``decode``. :data:`CODECS` is the registry by id;
:func:`codec` looks one up. ``identity`` marks the codec whose stored payload
is the chunk itself, so a reader may copy it straight from the blob store.

Codecs: ``raw`` (0), ``zstd`` (1), and ``shuffle+zstd`` for numeric arrays,
one id per element size (2, 4, 8, 16 bytes: the id *is* the element size):
the chunk's bytes are regrouped by significance (every element's first byte,
then every second byte, ...) before zstd, which makes the slowly varying high
bytes of numbers into long runs. :func:`choose` picks one per chunk from a
small sample.

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
SHUFFLE_MIN_CHUNK = 128 << 10
"""Chunks smaller than this are never shuffled: judging them costs a second
compression of the whole chunk, for a saving of a few KiB at most."""
SHUFFLE_MIN_SAVING = 0.8
"""Shuffle only when the sample shrinks below this: a shuffled chunk loads
through a scratch buffer (not straight into the array), which a saving of
10-20% on noise-like floats does not pay for."""


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


def _shuffled(data: Any, k: int) -> bytes:
    """``data``'s whole elements regrouped by byte significance, then its tail as is."""
    import numpy as np  # only once a numeric array is stored: opening a store stays light

    mv = memoryview(data).cast("B")
    body = len(mv) - len(mv) % k
    grouped = np.frombuffer(mv[:body], np.uint8).reshape(-1, k).T.tobytes()
    return grouped + bytes(mv[body:]) if body < len(mv) else grouped


@dataclass(frozen=True)
class ShuffleZstdCodec(ZstdCodec):
    """Bytes grouped by significance for elements of ``itemsize`` bytes, then zstd.

    Decoding needs one chunk-sized scratch buffer (zstd decodes into it, the
    unshuffle writes the caller's buffer), so it is not zero-copy.
    """

    itemsize: int = 1

    def encode(self, data: Any, level: int) -> bytes:
        return _cctx(level).compress(_shuffled(data, self.itemsize))

    def decode_into(self, payload: Any, out: memoryview) -> int:
        scratch = bytearray(len(out))
        got = super().decode_into(payload, memoryview(scratch))
        if got != len(out):
            return got
        import numpy as np

        k = self.itemsize
        body = got - got % k
        target = np.frombuffer(out, np.uint8)
        source = np.frombuffer(scratch, np.uint8)
        # One byte plane at a time: 3.4 GB/s, where one transposed copy ran at
        # 0.6 (2-byte elements) to 1.9 GB/s (8-byte).
        rows, planes = target[:body].reshape(-1, k), source[:body].reshape(k, -1)
        for j in range(k):
            rows[:, j] = planes[j]
        target[body:] = source[body:]
        return got

    def decode(self, payload: bytes, raw_len: int) -> bytes:
        out = bytearray(raw_len)
        if self.decode_into(payload, memoryview(out)) != raw_len:
            raise CodecError(f"{self.name} payload does not hold {raw_len} bytes")
        return bytes(out)


RAW = RawCodec(CODEC_RAW, "raw", identity=True)
ZSTD = ZstdCodec(CODEC_ZSTD, "zstd")
SHUFFLES: dict[int, ShuffleZstdCodec] = {
    k: ShuffleZstdCodec(k, f"shuffle{k}+zstd", itemsize=k) for k in (2, 4, 8, 16)
}
"""The shuffle codecs by element size (each one's id is its element size)."""
CODECS: dict[int, Codec] = {c.id: c for c in (RAW, ZSTD, *SHUFFLES.values())}
"""Every codec by id."""


def codec(codec_id: int) -> Codec:
    """The codec with ``codec_id``, or ``CodecError`` for an id no codec has."""
    found = CODECS.get(codec_id)
    if found is None:
        raise CodecError(f"unknown codec id {codec_id!r}")
    return found


def _sample(chunk: memoryview, align: int = 1) -> bytes:
    """Three 32 KiB slices of ``chunk`` (start, middle, end), each starting on a
    multiple of ``align``; the whole chunk when it is small."""
    n = len(chunk)
    if n <= 3 * SAMPLE:
        return bytes(chunk)
    mid = n // 2 - n // 2 % align
    end = n - n % align
    return b"".join((chunk[:SAMPLE], chunk[mid : mid + SAMPLE], chunk[end - SAMPLE : end]))


def worth_compressing(chunk: memoryview) -> bool:
    """Whether zstd is likely to save at least ~10%, judged from three samples."""
    sample = _sample(chunk)
    packed = ZSTD.encode(sample, 1)
    return len(packed) < len(sample) * MIN_SAVING


def choose(chunk: memoryview, itemsize: int = 0) -> Codec:
    """The codec likely to store ``chunk`` best, judged from three samples at
    zstd level 1: ``raw`` when neither zstd nor (for an ``itemsize`` with a
    shuffle codec) shuffle+zstd saves ~10%, else the smaller of the two.

    Shuffling must also beat :data:`SHUFFLE_MIN_SAVING`, on a chunk of at
    least :data:`SHUFFLE_MIN_CHUNK`. Costs one level-1
    compression of 96 KiB per candidate, a few percent of compressing a 4 MiB
    chunk. Shuffling loses to plain zstd on numbers with repeated byte
    patterns (floats rounded to decimals), which is why it is judged, not
    assumed."""
    shuffle = SHUFFLES.get(itemsize) if len(chunk) >= SHUFFLE_MIN_CHUNK else None
    sample = _sample(chunk, itemsize if shuffle is not None else 1)
    best: Codec = ZSTD
    size = len(ZSTD.encode(sample, 1))
    if shuffle is not None:
        shuffled = len(shuffle.encode(sample, 1))
        if shuffled < size and shuffled < len(sample) * SHUFFLE_MIN_SAVING:
            best, size = shuffle, shuffled
    return best if size < len(sample) * MIN_SAVING else RAW
