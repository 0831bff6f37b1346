"""Materializers: how Python objects become artifact files and back.

``import materializers`` is cheap: it registers the built-in materializers for
Python's own types and the cloudpickle fallback; the numpy materializer is
imported the first time a numpy type is looked up.
"""

from __future__ import annotations

from typing import Any

from materializers.base import BaseMaterializer
from materializers.builtins import BuiltinsMaterializer
from materializers.cloudpickle_materializer import CloudpickleMaterializer, resign_pickles
from materializers.files import ArtifactFiles
from materializers.registry import (
    allow,
    identity,
    import_topic,
    materializer_for,
    register,
    register_alias,
    registered,
    resolve,
    topic_of,
)

__all__ = [
    "ArtifactFiles",
    "BaseMaterializer",
    "BuiltinsMaterializer",
    "CloudpickleMaterializer",
    "NumpyMaterializer",
    "allow",
    "identity",
    "import_topic",
    "materializer_for",
    "register",
    "register_alias",
    "registered",
    "resign_pickles",
    "resolve",
    "topic_of",
]


def __getattr__(name: str) -> Any:
    if name == "NumpyMaterializer":  # imports numpy, so only on demand
        from materializers.numpy import NumpyMaterializer

        return NumpyMaterializer
    raise AttributeError(f"module 'materializers' has no attribute {name!r}")
