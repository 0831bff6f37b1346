"""The ``artledger`` command (``engine.cli:main``; also ``python -m engine.cli``)."""

from __future__ import annotations

from engine.cli.main import main

__all__ = ["main"]
