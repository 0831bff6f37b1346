"""The chunk codec registry (engine.storage.codecs)."""

from __future__ import annotations

import dataclasses
import os

import pytest

from engine.storage.codecs import CODEC_RAW, CODEC_ZSTD, CODECS, CodecError, codec


@pytest.mark.parametrize("codec_id", sorted(CODECS))
def test_each_codec_round_trips(codec_id: int) -> None:
    c = codec(codec_id)
    data = os.urandom(1000) + bytes(5000)
    payload = bytes(c.encode(memoryview(data), 3))
    assert c.decode(payload, len(data)) == data
    out = bytearray(len(data))
    assert c.decode_into(payload, memoryview(out)) == len(data)
    assert out == data
    with pytest.raises(CodecError):
        c.decode(payload, len(data) + 1)


def test_the_ids_are_fixed_and_codecs_frozen() -> None:
    assert (codec(CODEC_RAW).name, codec(CODEC_ZSTD).name) == ("raw", "zstd")
    assert (CODEC_RAW, CODEC_ZSTD) == (0, 1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        codec(CODEC_RAW).id = 5  # type: ignore[misc]


def test_damage_and_unknown_ids_are_codec_errors() -> None:
    with pytest.raises(CodecError, match="unknown codec"):
        codec(7)
    with pytest.raises(CodecError):
        codec(CODEC_ZSTD).decode(b"not a zstd frame", 10)
