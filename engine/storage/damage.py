"""What reading a damaged record raises, for every reader to catch at its boundary."""

from __future__ import annotations

import struct

import msgpack

# What decoding or reading a damaged record raises.
DECODE_ERRORS: tuple[type[Exception], ...] = (
    ValueError,  # msgpack's errors, UnicodeDecodeError
    msgpack.UnpackException,
    KeyError,
    TypeError,
    IndexError,
    AttributeError,
    struct.error,
)
