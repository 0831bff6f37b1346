"""Artifacts that already exist, passed into a pipeline as step inputs.

``engine.external("data")`` (the newest version when the run starts),
``engine.external("data", version=2)``, or an ``ArtifactVersion`` itself,
passed to a step inside a pipeline (directly or through a pipeline
parameter), is an **input** of that step, like another step's output: the
step receives the loaded object, its content hash enters the cache key and
lineage links the version to the step run. References are resolved on the
run's store when the run starts, before any event is recorded.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from engine.errors import ArtifactNotFoundError, InvalidArgumentError, PipelineError

if TYPE_CHECKING:
    from engine.query.models import ArtifactVersion
    from engine.store import Store

__all__ = ["ExternalArtifact", "as_external", "external"]


class ExternalArtifact:
    """A reference to a stored artifact version, resolved when a run starts:
    by ``id`` (an ``ArtifactVersion`` passed in), else by ``name`` and
    ``version`` (None: the newest version not deleted)."""

    __slots__ = ("id", "name", "version")

    def __init__(self, name: str, version: int | str | None = None, *, id: str | None = None):
        if not isinstance(name, str) or not name:
            raise InvalidArgumentError(f"artifact name must be a non-empty str, not {name!r}")
        if version is not None and (
            isinstance(version, bool) or not isinstance(version, int | str)
        ):
            raise InvalidArgumentError(f"version must be an int, a str or None, not {version!r}")
        self.name = name
        self.version = version
        self.id = id

    def resolve(self, store: Store) -> dict[str, Any]:
        """The artifact record this reference names on ``store``."""
        if self.id is not None:
            try:
                art = store.get_artifact_by_id(self.id)
            except ArtifactNotFoundError:
                raise PipelineError(
                    f"artifact {self.name}:{self.version} (id {self.id}) is not in the store at "
                    f"{store.path}; pass engine.external({self.name!r}) to use that store's "
                    "version"
                ) from None
            if art.deleted:
                raise PipelineError(f"artifact {self.name}:{self.version} was deleted")
        else:
            art = store.get_artifact(self.name, self.version)
        return art.record()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ExternalArtifact) and (self.name, self.version, self.id) == (
            other.name,
            other.version,
            other.id,
        )

    def __hash__(self) -> int:
        return hash((self.name, self.version, self.id))

    def __repr__(self) -> str:
        version = "" if self.version is None else f", version={self.version!r}"
        return f"external({self.name!r}{version})"


def external(name: str | ArtifactVersion, version: int | str | None = None) -> ExternalArtifact:
    """A stored artifact as a step input: ``train(data=engine.external("data"))``
    (the newest version when the run starts, unless ``version`` is given), or
    ``engine.external(artifact_version)``."""
    ext = as_external(name)
    if ext is not None:
        if version is not None:
            raise InvalidArgumentError("external(artifact_version) takes no version")
        return ext
    return ExternalArtifact(name, version)  # type: ignore[arg-type]


def as_external(value: Any) -> ExternalArtifact | None:
    """``value`` as an :class:`ExternalArtifact` when it is one or an ``ArtifactVersion``."""
    if isinstance(value, ExternalArtifact):
        return value
    models = sys.modules.get("engine.query.models")  # not imported: no ArtifactVersion exists
    if models is not None and isinstance(value, models.ArtifactVersion):
        return ExternalArtifact(value.name, value.version, id=value.id)
    return None
