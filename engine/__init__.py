"""artledger: an event-sourced storage engine for ML pipeline artifacts.

``import engine`` is cheap: the store, the pipeline API and numpy are loaded
on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

# Imported eagerly (they are light); engine.api installs the active store
# that a called pipeline runs on.
from engine import api as _api  # noqa: F401
from engine.errors import (
    ArtifactNotFoundError,
    ArtledgerError,
    ChunkStoreUnavailableError,
    ConcurrentGcError,
    ImportValidationError,
    IntegrityError,
    InvalidArgumentError,
    LedgerDamagedError,
    LedgerMissingError,
    LogServerUnavailableError,
    MaterializerError,
    PipelineError,
    ReadOnlyStoreError,
    RunNotFoundError,
    SharedStoreUnavailableError,
    StoreError,
    StoreFormatError,
    StoreSecretError,
    UnhashableParameterError,
    UntrustedArtifactError,
)
from engine.pipelines.definition import pipeline, step
from engine.pipelines.external import ExternalArtifact, external
from engine.pipelines.outputs import ArtifactConfig

if TYPE_CHECKING:
    from engine.api import active_store, load_artifact, save_artifact, use_store
    from engine.ops.maintenance import GcReport, VerifyReport
    from engine.ops.recover import RecoverReport
    from engine.ops.transfer import ExportReport, ImportReport
    from engine.ops.zenml_import import ZenMLImportReport
    from engine.pipelines.context import StepContext, get_step_context
    from engine.query.history import HistoricalView
    from engine.query.lineage import LineageGraph
    from engine.query.models import ArtifactVersion, Run, StepRun
    from engine.storage.log import Event, register_upcaster
    from engine.store import Store

__version__ = "0.1.0"

_LAZY = {
    "Store": "engine.store",
    "ArtifactVersion": "engine.query.models",
    "Run": "engine.query.models",
    "StepRun": "engine.query.models",
    "Event": "engine.storage.log",
    "LineageGraph": "engine.query.lineage",
    "HistoricalView": "engine.query.history",
    "VerifyReport": "engine.ops.maintenance",
    "GcReport": "engine.ops.maintenance",
    "ExportReport": "engine.ops.transfer",
    "ImportReport": "engine.ops.transfer",
    "RecoverReport": "engine.ops.recover",
    "ZenMLImportReport": "engine.ops.zenml_import",
    "register_upcaster": "engine.storage.log",
    "save_artifact": "engine.api",
    "load_artifact": "engine.api",
    "use_store": "engine.api",
    "active_store": "engine.api",
    "get_step_context": "engine.pipelines.context",
    "StepContext": "engine.pipelines.context",
}

__all__ = [
    "ArtifactConfig",
    "ArtifactNotFoundError",
    "ArtifactVersion",
    "ArtledgerError",
    "ChunkStoreUnavailableError",
    "ConcurrentGcError",
    "Event",
    "ExportReport",
    "ExternalArtifact",
    "GcReport",
    "HistoricalView",
    "ImportReport",
    "ImportValidationError",
    "IntegrityError",
    "InvalidArgumentError",
    "LedgerDamagedError",
    "LedgerMissingError",
    "LineageGraph",
    "LogServerUnavailableError",
    "MaterializerError",
    "PipelineError",
    "ReadOnlyStoreError",
    "RecoverReport",
    "Run",
    "RunNotFoundError",
    "SharedStoreUnavailableError",
    "StepContext",
    "StepRun",
    "Store",
    "StoreError",
    "StoreFormatError",
    "StoreSecretError",
    "UnhashableParameterError",
    "UntrustedArtifactError",
    "VerifyReport",
    "ZenMLImportReport",
    "active_store",
    "external",
    "get_step_context",
    "load_artifact",
    "pipeline",
    "register_upcaster",
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
