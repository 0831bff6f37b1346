"""The ``BlobStore`` seam: where chunk payloads live.

A backend stores opaque payloads and hands back a :class:`Location`. The
chunk index in the ledger maps digests to locations; hashing, compression
and verification live in ``engine.storage.chunks``. Nothing outside a
backend's own module looks inside a location except through its three
named fields, and nothing asks which backend it has: open, verify and gc
call the hooks below and read the capability flags.

Capabilities (class attributes):

``persistent``
    Payloads outlive the process.
``supports_deletes``
    gc deletes each dead location (:meth:`BlobStore.delete`) after the index
    commit that dropped it (one object per chunk, or a dict).
``supports_compaction``
    Payloads share *containers* (pack segments): gc rewrites mostly dead
    containers and deletes empty ones through :meth:`containers`,
    :meth:`claimed`, :meth:`seal`, :meth:`delete_container`,
    :meth:`free_space` and :meth:`cleanup`.

State: :meth:`flush` returns a small ``{container: high-water mark}`` map that
the ledger records in the same transaction as the chunks it makes durable
(never lowering a mark); :meth:`recover` (on open and ``verify --fix``) and
:meth:`check_containers` (verify) are given it back.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from engine.errors import IntegrityError

ContainerState = dict[str, int]


class Location(NamedTuple):
    """Where one payload is: ``container`` (a pack segment, an object key
    prefix, ``"mem"``), ``offset`` in it and ``length`` in bytes. Stored in
    the chunk index as a three-element list."""

    container: str
    offset: int
    length: int

    @classmethod
    def from_record(cls, raw: Any) -> Location:
        """A location read back from the chunk index; ``IntegrityError`` if malformed."""
        try:
            container, offset, length = raw
            if not (isinstance(offset, int) and isinstance(length, int)):
                raise TypeError("offset and length must be integers")
            return cls(str(container), offset, length)
        except (TypeError, ValueError) as e:
            raise IntegrityError(
                f"a chunk index record holds a malformed location {raw!r} ({e}); "
                "run `artledger verify`"
            ) from None


@dataclass
class ContainerCheck:
    """What :meth:`BlobStore.check_containers` found: damage and remarks."""

    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    checked: int = 0


class BlobStore(ABC):
    """Opaque payload storage. ``put`` is not durable until ``flush``."""

    persistent: bool = False
    supports_deletes: bool = False
    supports_compaction: bool = False

    @abstractmethod
    def put(self, digest: bytes, codec: int, raw_len: int, payload: Any) -> Location:
        """Store ``payload`` (bytes-like); its location."""

    @abstractmethod
    def get(self, loc: Location) -> bytes:
        """The payload at ``loc``; ``IntegrityError`` when it is gone or short."""

    @abstractmethod
    def flush(self, held: Iterable[Location]) -> ContainerState:
        """Make every ``put`` so far durable. Returns the state the commit that
        references ``held`` (locations ``put`` returned) must record in the
        same transaction: for packs, the committed end of each segment."""

    def readinto(self, loc: Location, buf: memoryview) -> None:
        """Copy the payload at ``loc`` into ``buf`` (exactly its length)."""
        buf[:] = self.get(loc)

    def get_many(self, locs: Iterable[Location]) -> list[bytes]:
        """The payloads at ``locs``, in order (a backend may fetch them concurrently)."""
        return [self.get(loc) for loc in locs]

    def prefetch(self, locs: list[Location]) -> None:  # noqa: B027 - optional hook
        """The next reads will be of ``locs``: a remote backend may fetch them
        now, several at once (a bounded number stay held until read)."""

    def release(self, held: Iterable[Location]) -> None:  # noqa: B027 - optional hook
        """The commit that referenced ``held`` has returned (committed or not),
        or its writes were abandoned: the backend may now let other processes
        truncate or collect what it kept for them. Every location ``put``
        returns must be released exactly once."""

    def confirm(self, held: Iterable[Location]) -> list[Location]:
        """Of ``held``, the locations whose ``put`` found the payload already
        stored (content addressed) and which are gone now: a concurrent gc
        collected them, so the commit must not reference them. Called under
        the ledger's write lock, after :meth:`flush`. Backends that always
        write their own copy have nothing to confirm."""
        return []

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release files and connections."""

    # -- open and verify ---------------------------------------------------------
    def recover(
        self, committed: Callable[[], Mapping[str, int]], hint: Mapping[str, int]
    ) -> list[str]:
        """Undo writes no commit recorded (bytes past a container's recorded
        mark), never below a mark ``committed()`` (a fresh read of the
        ledger) returns; ``hint`` is an earlier read, to pick candidates
        cheaply. What was repaired, one line each."""
        return []

    def check(self, loc: Location, digest: bytes, codec: int, raw_len: int) -> str | None:
        """A problem line when the stored record at ``loc`` does not match the
        index entry (digest, codec, lengths); None when it does or the
        backend keeps no such record. May raise ``ArtledgerError`` when the
        record cannot be read at all."""
        return None

    def check_containers(
        self, state: Mapping[str, int], referenced: Callable[[str], bool]
    ) -> ContainerCheck | None:
        """Compare the containers with the recorded ``state``
        (``referenced(container)``: does the index still use it?); None when
        the backend has no containers."""
        return None

    # -- gc ------------------------------------------------------------------------
    def delete(self, loc: Location) -> None:
        """Delete one payload (only when ``supports_deletes``)."""
        raise NotImplementedError(f"{type(self).__name__} does not delete single payloads")

    def unindexed(self, indexed: Callable[[bytes], bool], before: float) -> list[Location]:
        """Payloads stored before ``before`` (epoch s) whose digest
        ``indexed(digest)`` denies: uploads no commit referenced (only for a
        backend with one object per chunk; default none)."""
        return []

    def containers(self) -> list[str]:
        """Every container present (only when ``supports_compaction``)."""
        return []

    @contextlib.contextmanager
    def claimed(self, names: Iterable[str]) -> Iterator[list[str]]:
        """Hold, for the block, each of ``names`` no live writer holds; yield
        those held. Once claimed, a container's recorded mark and members,
        read in a fresh ledger transaction, are final."""
        yield []

    def seal(self) -> None:  # noqa: B027 - optional hook
        """Stop appending to the current container (its end is committed)."""

    def delete_container(self, name: str) -> None:
        """Delete a claimed container nothing references any more."""
        raise NotImplementedError(f"{type(self).__name__} has no containers")

    def free_space(self) -> tuple[str, int] | None:
        """(where, free bytes) of the device compaction writes to; None if unknown."""
        return None

    def cleanup(self, older_than: float) -> None:  # noqa: B027 - optional hook
        """Remove leftovers of writers that died half-way, older than ``older_than`` s."""
