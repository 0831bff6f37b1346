"""``BlobStoreContract``: what every :class:`~engine.storage.blobs.BlobStore` must do.

Subclass it with a ``make_blobs(tmp_path)`` returning a new, empty blob
store; for a ``persistent`` backend, calling it again with the same
``tmp_path`` (after the first one is closed) must reopen the same payloads.
The capability flags decide which hooks are exercised: a backend that says
``supports_deletes`` must delete single payloads, one that says
``supports_compaction`` must list, claim and delete containers.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from engine.errors import ArtledgerError, IntegrityError
from engine.storage.blobs import BlobStore, ContainerCheck, Location


def _payload(i: int, n: int = 1000) -> bytes:
    return bytes((i * 7 + k) % 251 for k in range(n))


class BlobStoreContract(ABC):
    """The BlobStore contract as pytest tests; subclass per backend."""

    @abstractmethod
    def make_blobs(self, tmp_path: Path) -> BlobStore:
        """A new blob store (empty on the first call for ``tmp_path``)."""

    def open_blobs(self, tmp_path: Path) -> BlobStore:
        """:meth:`make_blobs`, closed again after the test."""
        blobs = self.make_blobs(tmp_path)
        self.__dict__.setdefault("_opened", []).append(blobs)
        return blobs

    def teardown_method(self, method: Any) -> None:
        for blobs in reversed(self.__dict__.pop("_opened", [])):
            blobs.close()

    def _put(self, blobs: BlobStore, i: int, n: int = 1000) -> Location:
        return blobs.put(os.urandom(16), 1, n, _payload(i, n))

    # -- put / get ---------------------------------------------------------------
    def test_put_returns_a_typed_location(self, tmp_path: Path) -> None:
        blobs = self.open_blobs(tmp_path)
        loc = self._put(blobs, 1, 321)
        assert isinstance(loc, Location)
        assert isinstance(loc.container, str) and loc.length == 321
        blobs.release([loc])

    def test_get_readinto_get_many_return_what_was_put(self, tmp_path: Path) -> None:
        blobs = self.open_blobs(tmp_path)
        locs = [self._put(blobs, i, 100 + i) for i in range(20)]
        blobs.flush(locs)
        for i, loc in enumerate(locs):
            assert blobs.get(loc) == _payload(i, 100 + i)
            buf = bytearray(loc.length)
            blobs.readinto(loc, memoryview(buf))
            assert bytes(buf) == _payload(i, 100 + i)
        assert blobs.get_many(locs[::-1]) == [_payload(i, 100 + i) for i in range(19, -1, -1)]
        blobs.release(locs)

    def test_empty_payload(self, tmp_path: Path) -> None:
        blobs = self.open_blobs(tmp_path)
        loc = blobs.put(os.urandom(16), 0, 0, b"")
        blobs.flush([loc])
        assert blobs.get(loc) == b""
        blobs.release([loc])

    def test_a_location_survives_its_record_form(self, tmp_path: Path) -> None:
        """The chunk index stores a location as a list; it reads back equal."""
        blobs = self.open_blobs(tmp_path)
        loc = self._put(blobs, 3)
        blobs.flush([loc])
        again = Location.from_record(list(loc))
        assert again == loc and blobs.get(again) == _payload(3)
        blobs.release([loc])

    def test_a_location_never_put_is_an_integrity_error(self, tmp_path: Path) -> None:
        blobs = self.open_blobs(tmp_path)
        loc = self._put(blobs, 1)
        blobs.flush([loc])
        bogus = Location(loc.container, loc.offset + 10_000_000, 10)
        try:
            blobs.get(bogus)
        except IntegrityError:
            pass
        else:
            raise AssertionError("reading a location never put must raise IntegrityError")
        blobs.release([loc])

    def test_flush_state_covers_what_it_made_durable(self, tmp_path: Path) -> None:
        """``flush`` returns {container: mark}; each mark covers the held locations in it."""
        blobs = self.open_blobs(tmp_path)
        locs = [self._put(blobs, i) for i in range(5)]
        state = blobs.flush(locs)
        assert isinstance(state, dict)
        for loc in locs:
            if loc.container in state:
                assert state[loc.container] >= loc.offset + loc.length
        blobs.release(locs)

    def test_release_is_allowed_after_a_failed_commit(self, tmp_path: Path) -> None:
        blobs = self.open_blobs(tmp_path)
        loc = self._put(blobs, 1)
        blobs.release([loc])  # never flushed: the commit did not happen
        later = self._put(blobs, 2)
        blobs.flush([later])
        assert blobs.get(later) == _payload(2)
        blobs.release([later])

    def test_persistent_payloads_survive_reopening(self, tmp_path: Path) -> None:
        blobs = self.make_blobs(tmp_path)
        if not blobs.persistent:
            blobs.close()
            return
        loc = self._put(blobs, 9)
        blobs.flush([loc])
        blobs.release([loc])
        blobs.close()
        again = self.open_blobs(tmp_path)
        assert again.get(loc) == _payload(9)

    # -- verify hooks ----------------------------------------------------------------
    def test_check_accepts_what_was_put(self, tmp_path: Path) -> None:
        blobs = self.open_blobs(tmp_path)
        digest = os.urandom(16)
        loc = blobs.put(digest, 1, 5000, _payload(4, 700))
        blobs.flush([loc])
        assert blobs.check(loc, digest, 1, 5000) is None
        problem = blobs.check(loc, os.urandom(16), 1, 5000)
        assert problem is None or isinstance(problem, str)
        blobs.release([loc])

    def test_check_containers_against_the_recorded_state(self, tmp_path: Path) -> None:
        blobs = self.open_blobs(tmp_path)
        loc = self._put(blobs, 1)
        state = blobs.flush([loc])
        blobs.release([loc])
        found = blobs.check_containers(state, lambda name: True)
        assert found is None or (isinstance(found, ContainerCheck) and not found.problems)

    def test_recover_never_cuts_below_a_committed_mark(self, tmp_path: Path) -> None:
        blobs = self.open_blobs(tmp_path)
        locs = [self._put(blobs, i) for i in range(3)]
        state = blobs.flush(locs)
        blobs.release(locs)
        blobs.seal()
        assert isinstance(blobs.recover(lambda: state, state), list)
        assert [blobs.get(loc) for loc in locs] == [_payload(i) for i in range(3)]

    # -- gc hooks -------------------------------------------------------------------
    def test_delete_when_supported(self, tmp_path: Path) -> None:
        blobs = self.open_blobs(tmp_path)
        keep, gone = self._put(blobs, 1), self._put(blobs, 2)
        blobs.flush([keep, gone])
        blobs.release([keep, gone])
        if not blobs.supports_deletes:
            return
        blobs.delete(gone)
        assert blobs.get(keep) == _payload(1)
        try:
            blobs.get(gone)
        except ArtledgerError:
            pass
        else:
            raise AssertionError("a deleted payload must not read back")

    def test_containers_claim_and_delete_when_compacting(self, tmp_path: Path) -> None:
        blobs = self.open_blobs(tmp_path)
        if not blobs.supports_compaction:
            return
        loc = self._put(blobs, 1)
        blobs.flush([loc])
        with blobs.claimed([loc.container]) as held:
            assert held == []  # a live writer (this one) still holds it
        blobs.release([loc])
        blobs.seal()
        assert loc.container in blobs.containers()
        with blobs.claimed([loc.container, "no-such-container"]) as held:
            assert held == [loc.container]
            blobs.delete_container(loc.container)
        assert loc.container not in blobs.containers()
        room = blobs.free_space()
        assert room is None or room[1] >= 0
        blobs.cleanup(older_than=0)
