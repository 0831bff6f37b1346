"""``BaseMaterializer``: how one Python type becomes files and back.

A materializer sees only an :class:`~materializers.files.ArtifactFiles`: it
writes named files with :meth:`BaseMaterializer.open` (streamed into chunks by
the engine) or, for libraries that insist on a path, into the real directory
:attr:`BaseMaterializer.uri`.
"""

from __future__ import annotations

import io
from typing import IO, Any, ClassVar, Literal, overload

from engine.errors import MaterializerError
from materializers import registry
from materializers.files import ArtifactFiles

VISUALIZATION_KINDS = frozenset({"html", "markdown", "csv", "json", "image"})
"""The kinds a ``save_visualizations`` result may name."""


class BaseMaterializer:
    """Saves and loads objects of its ``ASSOCIATED_TYPES`` as artifact files.

    Subclasses register themselves for ``ASSOCIATED_TYPES`` when defined (set
    ``SKIP_REGISTRATION = True`` in the class body to opt out). ``VERSION`` is
    part of step cache keys: bump it when the file format changes.
    """

    ASSOCIATED_TYPES: ClassVar[tuple[type, ...]] = ()
    ASSOCIATED_ARTIFACT_TYPE: ClassVar[str] = "data"
    VERSION: ClassVar[int] = 1
    SKIP_REGISTRATION: ClassVar[bool] = False

    def __init__(self, files: ArtifactFiles) -> None:
        self.files = files
        self.metadata: dict[str, Any] | None = None
        """What :meth:`extract_metadata` returned for this artifact, set by the
        engine before :meth:`save_visualizations` (so it need not recompute)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        registry._register_subclass(cls)

    @classmethod
    def can_handle_type(cls, data_type: type) -> bool:
        """Whether this materializer can save ``data_type`` (a subclass of one
        of its ``ASSOCIATED_TYPES``) and load it back as that exact type. The
        registry skips a materializer that says no and keeps walking the MRO."""
        return True

    @property
    def uri(self) -> str:
        """A real directory for libraries that need a path: on save, files
        written there are ingested after ``save()`` returns; on load, it holds
        every file of the artifact. Prefer :meth:`open`, which streams."""
        return self.files.local_dir()

    @overload
    def open(
        self,
        name: str,
        mode: Literal["r", "w"] = "r",
        *,
        itemsize: int = 0,
        chunking: str | None = None,
    ) -> IO[str]: ...
    @overload
    def open(
        self,
        name: str,
        mode: Literal["rb", "wb"],
        *,
        itemsize: int = 0,
        chunking: str | None = None,
    ) -> IO[bytes]: ...
    def open(
        self, name: str, mode: str = "r", *, itemsize: int = 0, chunking: str | None = None
    ) -> IO[Any]:
        """Open the artifact file ``name`` like the built-in ``open``.

        Modes: "r", "w" (UTF-8 text; "\\n" is written as is, reading accepts
        any newline) and "rb", "wb". ``name`` is relative and may contain "/".
        Text writes are buffered (so are the engine's binary ones): the file is
        complete once closed. Two hints for writes, which file implementations
        other than the engine's ignore: ``itemsize``, the file holds numbers of
        that many bytes, aligned on multiples of it in the file (a numpy
        dtype's ``itemsize``), so the engine may byte-shuffle its chunks before
        compressing them; ``chunking``, ``"cdc"`` to cut it into
        content-defined chunks (an insertion or deletion changes only the
        chunks around it) or ``"fixed"``; None leaves it to the store.
        """
        # The engine's file-handle module loads the chunk machinery: import it only
        # once a file is opened, so ``import materializers`` stays cheap.
        from engine.storage.files import WriteFiles, check_name

        check_name(name)
        files = self.files
        if isinstance(files, WriteFiles) and (itemsize > 1 or chunking is not None):
            if mode == "wb":
                return files.open_write(name, itemsize=itemsize, chunking=chunking)
            if mode in ("w", "wt"):
                raw = files.open_write(name, chunking=chunking)
                return io.TextIOWrapper(raw, encoding="utf-8", newline="\n")
        if mode in ("rb", "wb"):
            return self.files.open_read(name) if mode == "rb" else self.files.open_write(name)
        if mode in ("r", "rt"):
            return io.TextIOWrapper(self.files.open_read(name), encoding="utf-8")
        if mode in ("w", "wt"):
            return io.TextIOWrapper(
                self.files.open_write(name),
                encoding="utf-8",
                newline="\n",
            )
        raise MaterializerError(
            f"Unsupported mode {mode!r} for {name!r}; use 'r', 'rb', 'w' or 'wb'."
        )

    def save(self, data: Any) -> None:
        """Write ``data`` as files of this artifact."""
        raise NotImplementedError(f"{registry.identity(type(self))} does not implement save().")

    def load(self, data_type: type) -> Any:
        """Read the artifact's files back as an object of ``data_type``."""
        raise NotImplementedError(f"{registry.identity(type(self))} does not implement load().")

    def extract_metadata(self, data: Any) -> dict[str, Any]:
        """Small msgpack-able facts about ``data`` (shape, length, ...) to
        record with the artifact version. Called after :meth:`save`."""
        return {}

    def save_visualizations(self, data: Any) -> dict[str, str]:
        """Write visualization files with :meth:`open` and return
        ``{file name: kind}``, kind one of "html", "markdown", "csv", "json",
        "image". The engine calls it on a separate ``ArtifactFiles``, so these
        files are not part of the artifact's content."""
        return {}
