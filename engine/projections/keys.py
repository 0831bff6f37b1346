"""Key builders for the projection databases, and the one u64 encoding.

Every projection key is built here: a prefix scan elsewhere uses the same
functions with the trailing part left out (``name_prefix``, ...), never by
slicing a built key.
"""

from __future__ import annotations

import struct

import msgpack

from engine.errors import InvalidArgumentError

Q = struct.Struct(">Q")

# Integer versions: int64, with room for the next one in ``name_meta``.
MIN_VERSION = -(2**63)
MAX_VERSION = 2**63 - 2


def u64(n: int) -> bytes:
    """An unsigned 64-bit integer as 8 big-endian bytes (sorts numerically)."""
    return Q.pack(n)


def from_u64(raw: bytes) -> int:
    """The integer :func:`u64` encoded."""
    return int(Q.unpack(raw)[0])


_PACK = msgpack.Packer(use_bin_type=True).pack  # one packer: ``packb`` builds one per call


def _pack(obj: object) -> bytes:
    return _PACK(obj)  # type: ignore[no-any-return]


def name_prefix(name: str) -> bytes:
    """Prefix of every ``names`` and ``versions`` key of one artifact name."""
    return name.encode() + b"\x00"


def version_key(name: str, version: int | str) -> bytes:
    return name_prefix(name) + _pack(version)


def name_key(name: str, seq: int) -> bytes:
    return name_prefix(name) + u64(seq)


def tag_prefix(tag: str) -> bytes:
    return tag.encode() + b"\x00"


def tag_key(tag: str, artifact_id: str) -> bytes:
    return tag_prefix(tag) + artifact_id.encode()


def id_after_prefix(key: bytes) -> str:
    """The id after the NUL of a ``prefix NUL id`` key (tags, consumers)."""
    return key.split(b"\x00", 1)[1].decode()


def content_key(content_hash: str, artifact_id: str) -> bytes:
    return bytes.fromhex(content_hash) + artifact_id.encode()


def content_prefix(content_hash: str) -> bytes:
    return bytes.fromhex(content_hash)


def content_id(key: bytes) -> str:
    """The artifact id of a ``content`` key."""
    return key[16:].decode()


ALL_RUNS = b"\x01"


def run_index_key(pipeline: str | None, seq: int) -> bytes:
    return run_index_prefix(pipeline) + u64(seq)


def run_index_prefix(pipeline: str | None) -> bytes:
    return ALL_RUNS if pipeline is None else pipeline.encode() + b"\x00"


def cache_index_key(cache_key: str, seq: int) -> bytes:
    return cache_key.encode() + b"\x00" + u64(seq)


def cache_prefix(cache_key: str) -> bytes:
    return cache_key.encode() + b"\x00"


def history_key(step: str, seq: int) -> bytes:
    return history_prefix(step) + u64(seq)


def history_prefix(step: str) -> bytes:
    return step.encode() + b"\x00"


def slot_name(pipeline: str, invocation: str) -> str:
    """The ``step_history`` name of an invocation's place in a pipeline."""
    return f"{pipeline}\x1f{invocation}"


def consumer_key(artifact_id: str, step_run_id: str) -> bytes:
    return consumer_prefix(artifact_id) + step_run_id.encode()


def consumer_prefix(artifact_id: str) -> bytes:
    return artifact_id.encode() + b"\x00"


def run_step_key(run_id: str, seq: int) -> bytes:
    return run_step_prefix(run_id) + u64(seq)


def run_step_prefix(run_id: str) -> bytes:
    return run_id.encode() + b"\x00"


def normalise_version(version: int | str | None) -> int | str | None:
    """Versions are ints or labels; a label of digits means that integer."""
    if isinstance(version, str) and version.isdigit():
        version = int(version)
    if version is None or (isinstance(version, str) and version):
        return version
    if isinstance(version, int) and not isinstance(version, bool):
        if not MIN_VERSION <= version <= MAX_VERSION:
            raise InvalidArgumentError(
                f"version {version} is out of range: integer versions lie between "
                f"{MIN_VERSION} and {MAX_VERSION}; use a smaller number or a string label"
            )
        return version
    raise InvalidArgumentError(
        f"invalid version {version!r}: use an int, a non-empty string, or None for the latest"
    )
