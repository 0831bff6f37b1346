"""The chunk codec registry (engine.storage.codecs)."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import pytest

from engine.storage.codecs import (
    CODEC_RAW,
    CODEC_ZSTD,
    CODECS,
    SHUFFLES,
    CodecError,
    choose,
    codec,
)


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


# -- shuffle+zstd ----------------------------------------------------------------------------

np = pytest.importorskip("numpy")


def _kinds() -> dict[str, Any]:
    rng = np.random.default_rng(7)
    n = 1 << 18
    weights = (rng.standard_normal(n).astype(np.float32).view(np.uint32) & 0xFFFF0000).view(
        np.float32
    )
    sensor = (2048 + rng.normal(0, 20, n)).clip(0, 4095).astype(np.uint16)
    smooth = np.sin(np.arange(n) / 1e4) * 100 + np.cumsum(rng.normal(0, 1e-3, n))
    decimals = np.round(rng.normal(50, 10, n), 2)
    noise = rng.standard_normal(n)
    return {
        "weights": weights,
        "sensor": sensor,
        "smooth": smooth,
        "decimals": decimals,
        "noise": noise,
    }


@pytest.mark.parametrize("itemsize", sorted(SHUFFLES))
def test_shuffle_round_trips_with_a_ragged_tail(itemsize: int) -> None:
    c = SHUFFLES[itemsize]
    assert codec(itemsize) is c and c.id == itemsize
    data = bytes(range(256)) * 40 + b"tail!"  # not a whole number of elements
    payload = c.encode(memoryview(data), 3)
    assert c.decode(payload, len(data)) == data
    out = bytearray(len(data))
    assert c.decode_into(payload, memoryview(out)) == len(data)
    assert out == data
    with pytest.raises(CodecError):
        c.decode(payload[:-3], len(data))


def test_the_sample_test_picks_the_codec_from_the_data() -> None:
    kinds = _kinds()
    picked = {k: choose(memoryview(a.tobytes()), a.itemsize).name for k, a in kinds.items()}
    assert picked == {
        "weights": "shuffle4+zstd",
        "sensor": "shuffle2+zstd",
        "smooth": "shuffle8+zstd",
        "decimals": "zstd",  # zstd alone catches the repeated decimal patterns
        "noise": "raw",
    }
    # without a hint, nothing is shuffled
    assert choose(memoryview(kinds["weights"].tobytes())).name == "zstd"
    assert choose(memoryview(b"text " * 50000), 4).name == "zstd"


def test_small_chunks_are_not_shuffled() -> None:
    smooth = np.sin(np.arange(1 << 15) / 1e3).astype(np.float32)
    assert choose(memoryview(smooth.tobytes()), 4).name == "shuffle4+zstd"  # 128 KiB
    assert not choose(memoryview(smooth[:-1].tobytes()), 4).name.startswith("shuffle")
