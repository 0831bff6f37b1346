"""``BaseMaterializer``: how one Python type becomes files and back.

A materializer sees only an :class:`~materializers.files.ArtifactFiles`: it
writes named files with :meth:`BaseMaterializer.open` (streamed into chunks by
the engine) or, for libraries that insist on a path, into the real directory
:attr:`BaseMaterializer.uri`.
"""

from __future__ import annotations

import io
import os
import shutil
import warnings
from collections.abc import Callable, Hashable, Iterator, Mapping
from pathlib import Path
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

    def __init__(
        self,
        files: ArtifactFiles | None = None,
        artifact_store: object = None,
        *,
        uri: ArtifactFiles | None = None,
    ) -> None:
        """The engine passes ``files``. A ported ZenML materializer whose
        ``__init__(self, uri, artifact_store=None)`` calls
        ``super().__init__(uri, artifact_store)`` (or by keyword) works as it is:
        what it receives as ``uri`` is the files; ``artifact_store`` is ignored
        (:attr:`artifact_store` serves that role)."""
        files = files if files is not None else uri
        if files is None:
            raise MaterializerError(f"{registry.identity(type(self))} was made without its files")
        self.files = files
        self.metadata: dict[str, Any] | None = None
        """What :meth:`extract_metadata` returned for this artifact, set by the
        engine before :meth:`save_visualizations` (so it need not recompute)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__module__ == "__main__":
            warnings.warn(
                f"materializer {cls.__qualname__} is defined in __main__: artifacts it saves "
                "load only in this process (another one cannot import it). Define it in a "
                "module and import it from there",
                UserWarning,
                stacklevel=2,
            )
        registry._register_subclass(cls)

    @property
    def artifact_store(self) -> LocalArtifactStore:
        """ZenML's ``self.artifact_store`` for ported code: ``open``, ``exists``,
        ``makedirs``, ``listdir`` ... over paths inside :attr:`uri` (a real
        directory, so it costs what :attr:`uri` costs; prefer :meth:`open`)."""
        return LocalArtifactStore(self.uri)

    def _metadata_reuse_key(self, data: Any) -> Hashable | None:
        """What :meth:`extract_metadata` of ``data`` depends on besides the bytes
        of the files :meth:`save` wrote, when it depends on nothing else: the
        engine then reuses the metadata it extracted from an object saved with
        the same content and key instead of extracting it again. None (the
        default): extracted on every save."""
        return None

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


class LocalArtifactStore:
    """The part of ZenML's artifact-store API ported materializers use
    (``self.artifact_store.open(os.path.join(self.uri, name), mode)`` and the
    ``fileio`` functions), over the real directory :attr:`BaseMaterializer.uri`.
    Paths outside it are refused."""

    def __init__(self, root: str) -> None:
        self.root = Path(root).resolve()

    def _path(self, path: str | os.PathLike[str]) -> Path:
        full = (self.root / path).resolve()
        if full != self.root and self.root not in full.parents:
            raise MaterializerError(
                f"{os.fspath(path)!r} is outside this artifact's directory (self.uri)"
            )
        return full

    def open(self, path: str | os.PathLike[str], mode: str = "r") -> IO[Any]:
        full = self._path(path)
        if any(c in mode for c in "wax"):
            full.parent.mkdir(parents=True, exist_ok=True)
        return full.open(mode)

    def exists(self, path: str | os.PathLike[str]) -> bool:
        return self._path(path).exists()

    def isdir(self, path: str | os.PathLike[str]) -> bool:
        return self._path(path).is_dir()

    def listdir(self, path: str | os.PathLike[str]) -> list[str]:
        return sorted(p.name for p in self._path(path).iterdir())

    def makedirs(self, path: str | os.PathLike[str]) -> None:
        self._path(path).mkdir(parents=True, exist_ok=True)

    mkdir = makedirs

    def remove(self, path: str | os.PathLike[str]) -> None:
        self._path(path).unlink()

    def rmtree(self, path: str | os.PathLike[str]) -> None:
        shutil.rmtree(self._path(path))

    def copyfile(
        self, src: str | os.PathLike[str], dst: str | os.PathLike[str], overwrite: bool = False
    ) -> None:
        target = self._path(dst)
        if target.exists() and not overwrite:
            raise FileExistsError(target)
        shutil.copyfile(self._path(src), target)

    def size(self, path: str | os.PathLike[str]) -> int:
        return self._path(path).stat().st_size

    def walk(self, top: str | os.PathLike[str]) -> Iterator[tuple[str, list[str], list[str]]]:
        return os.walk(self._path(top))


def visualization_names(result: Any, root: Callable[[], str]) -> dict[str, str]:
    """``save_visualizations``' result as ``{file name: kind}``: ZenML's
    ``{full path: VisualizationType.HTML}`` is accepted too (paths inside the
    real directory ``root()`` become names, enum kinds their value)."""
    if not isinstance(result, Mapping):
        return {}
    out: dict[str, str] = {}
    for key, kind in result.items():
        name = os.fspath(key)
        if Path(name).is_absolute():
            base = Path(root()).resolve()
            full = Path(name).resolve()
            if base not in full.parents:
                continue
            name = full.relative_to(base).as_posix()
        out[name] = str(getattr(kind, "value", kind)).lower()
    return out
