"""artledger: an event-sourced storage engine for ML pipeline artifacts.

``import engine`` is cheap: the store, the pipeline API and numpy are loaded
on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engine.errors import (
    ArtifactNotFoundError,
    ArtledgerError,
    ImportValidationError,
    IntegrityError,
    InvalidArgumentError,
    LedgerDamagedError,
    LedgerMissingError,
    MaterializerError,
    PipelineError,
    ReadOnlyStoreError,
    RunNotFoundError,
    StoreError,
    StoreFormatError,
    StoreSecretError,
    UnhashableParameterError,
    UntrustedArtifactError,
)

# Imported eagerly (it is light).
from engine.pipelines.definition import pipeline, step

if TYPE_CHECKING:
    from engine.api import active_store, load_artifact, save_artifact, use_store
    from engine.query.lineage import LineageGraph
    from engine.query.models import ArtifactVersion, Run, StepRun
    from engine.storage.log import Event
    from engine.store import Store

__version__ = "0.1.0"

_LAZY = {
    "Store": "engine.store",
    "ArtifactVersion": "engine.query.models",
    "Run": "engine.query.models",
    "StepRun": "engine.query.models",
    "Event": "engine.storage.log",
    "LineageGraph": "engine.query.lineage",
    "save_artifact": "engine.api",
    "load_artifact": "engine.api",
    "use_store": "engine.api",
    "active_store": "engine.api",
}

__all__ = [
    "ArtifactNotFoundError",
    "ArtifactVersion",
    "ArtledgerError",
    "Event",
    "ImportValidationError",
    "IntegrityError",
    "InvalidArgumentError",
    "LedgerDamagedError",
    "LedgerMissingError",
    "LineageGraph",
    "MaterializerError",
    "PipelineError",
    "ReadOnlyStoreError",
    "Run",
    "RunNotFoundError",
    "StepRun",
    "Store",
    "StoreError",
    "StoreFormatError",
    "StoreSecretError",
    "UnhashableParameterError",
    "UntrustedArtifactError",
    "active_store",
    "load_artifact",
    "pipeline",
    "save_artifact",
    "step",
    "use_store",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'engine' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
