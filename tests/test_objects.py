"""ObjectBlobStore beyond the contract: conditional puts, the local cache,
missing objects, an unreachable server, and the lazy import of obstore."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from servers_s3 import S3Server, s3_server  # noqa: F401 - the fixture, by name

from engine.errors import ChunkStoreUnavailableError, IntegrityError, InvalidArgumentError
from engine.storage.blobs import Location
from engine.storage.blobs.objects import ObjectBlobStore, safe_url


@pytest.fixture
def s3_url(
    s3_server: S3Server,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> str:
    """An ``s3://`` URL with a prefix of its own, the AWS environment set for the test."""
    for key, value in s3_server.env.items():
        monkeypatch.setenv(key, value)
    prefix = hashlib.sha1(str(tmp_path).encode()).hexdigest()[:12]
    return f"s3://{s3_server.bucket}/focused/{prefix}"


@pytest.fixture(params=["file", "s3"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "file":
        return f"file://{tmp_path}/objects"
    return str(request.getfixturevalue("s3_url"))


@pytest.fixture
def opened(tmp_path: Path) -> Iterator[list[ObjectBlobStore]]:
    stores: list[ObjectBlobStore] = []
    yield stores
    for s in stores:
        s.close()


def _open(
    opened: list[ObjectBlobStore], url: str, cache: Path | None, **kw: float
) -> ObjectBlobStore:
    store = ObjectBlobStore(url, cache_dir=cache, **kw)  # type: ignore[arg-type]
    opened.append(store)
    return store


def test_a_second_put_of_the_same_chunk_finds_it_and_confirm_catches_its_loss(
    url: str, tmp_path: Path, opened: list[ObjectBlobStore]
) -> None:
    first = _open(opened, url, tmp_path / "c1")
    second = _open(opened, url, tmp_path / "c2")
    digest = os.urandom(16)
    a = first.put(digest, 1, 4, b"data")
    first.flush([a])
    b = second.put(digest, 1, 4, b"data")
    second.flush([b])
    assert a == b == Location(digest.hex(), 0, 4)
    assert [name for name, _, _ in first.list_objects()] == [digest.hex()]
    assert second.confirm([b]) == []  # still there
    first.delete_digest(digest.hex())  # a concurrent gc collects it
    assert second.confirm([b]) == [b]
    assert first.confirm([a]) == []  # first wrote its own copy: nothing to confirm
    second.release([b])
    first.release([a])
    assert second.confirm([b]) == []  # released: no longer held


def test_list_objects_names_size_and_age(url: str, opened: list[ObjectBlobStore]) -> None:
    store = _open(opened, url, None)
    locs = [store.put(os.urandom(16), 0, n, b"x" * n) for n in (1, 100)]
    store.flush(locs)
    listed = sorted(store.list_objects())
    assert [(name, size) for name, size, _ in listed] == sorted(
        (loc.container, 32 + loc.length) for loc in locs
    )
    assert all(abs(when - time.time()) < 300 for _, _, when in listed)
    store.release(locs)


def test_a_corrupt_cache_file_is_refetched(
    url: str, tmp_path: Path, opened: list[ObjectBlobStore]
) -> None:
    store = _open(opened, url, tmp_path / "cache")
    payload = os.urandom(5000)
    loc = store.put(os.urandom(16), 0, len(payload), payload)
    store.flush([loc])
    assert store.get(loc) == payload  # fetched, now cached
    assert store.cache is not None
    cached = store.cache.path(loc.container)
    data = bytearray(cached.read_bytes())
    data[100] ^= 0xFF
    cached.write_bytes(bytes(data))
    assert store.get(loc) == payload
    assert cached.read_bytes()[8:] == payload  # rewritten from the object store
    store.release([loc])


def test_a_missing_object_names_the_chunk_and_its_key(
    url: str, tmp_path: Path, opened: list[ObjectBlobStore]
) -> None:
    store = _open(opened, url, tmp_path / "cache")
    loc = store.put(os.urandom(16), 0, 10, b"0123456789")
    store.flush([loc])
    store.release([loc])
    store.delete_digest(loc.container)
    with pytest.raises(IntegrityError) as e:
        store.get(loc)
    key = f"{loc.container[:2]}/{loc.container}"
    assert loc.container in str(e.value) and key in str(e.value)
    assert "is missing" in (store.check(loc, bytes.fromhex(loc.container), 0, 10) or "")


def test_check_names_a_header_that_does_not_match(url: str, opened: list[ObjectBlobStore]) -> None:
    store = _open(opened, url, None)
    digest = os.urandom(16)
    loc = store.put(digest, 1, 50, b"x" * 10)
    store.flush([loc])
    assert store.check(loc, digest, 1, 50) is None
    for problem in (store.check(loc, digest, 2, 50), store.check(loc, digest, 1, 51)):
        assert problem is not None and digest.hex() in problem
    store.release([loc])


def test_get_many_fetches_each_distinct_chunk(
    url: str, tmp_path: Path, opened: list[ObjectBlobStore]
) -> None:
    store = _open(opened, url, tmp_path / "cache")
    payloads = [os.urandom(1000 + i) for i in range(12)]
    locs = [store.put(os.urandom(16), 0, len(p), p) for p in payloads]
    store.flush(locs)
    assert store.get(locs[0]) == payloads[0]  # one cached, the rest fetched
    assert store.get_many(locs + locs[:3]) == payloads + payloads[:3]
    store.release(locs)


def test_the_cache_stays_under_its_bound(tmp_path: Path, opened: list[ObjectBlobStore]) -> None:
    bound = 64 << 10
    store = _open(opened, f"file://{tmp_path}/objects", tmp_path / "cache", cache_bytes=bound)
    payloads = [os.urandom(4000) for _ in range(60)]
    locs = [store.put(os.urandom(16), 0, 4000, p) for p in payloads]
    store.flush(locs)
    for loc, p in zip(locs, payloads, strict=True):
        assert store.get(loc) == p
        on_disk = sum(f.stat().st_size for f in (tmp_path / "cache").rglob("*") if f.is_file())
        assert on_disk <= bound
    assert store.cache is not None and 0 < store.cache.total <= bound
    assert store.get(locs[-1]) == payloads[-1]  # the most recent is still cached
    assert store.cache.get(locs[-1].container, 4000) == payloads[-1]
    store.release(locs)


def test_urls_never_show_credentials_and_unknown_schemes_are_refused() -> None:
    assert safe_url("s3://AKIA:hunter2@bucket/p?secret=x#y") == "s3://bucket/p"
    with pytest.raises(InvalidArgumentError) as e:
        ObjectBlobStore("ftp://user:hunter2@host/x", cache_dir=None)
    assert "hunter2" not in str(e.value) and "ftp://host/x" in str(e.value)


def test_a_stopped_server_fails_flush_within_the_timeout_and_recovers(
    s3_server: S3Server,  # noqa: F811
    s3_url: str,
    tmp_path: Path,
    opened: list[ObjectBlobStore],
) -> None:
    timeout = 3.0
    store = _open(opened, s3_url, tmp_path / "cache", timeout=timeout)
    kept = store.put(os.urandom(16), 0, 4, b"kept")
    store.flush([kept])
    store.release([kept])
    s3_server.stop()
    try:
        t0 = time.monotonic()
        loc = store.put(os.urandom(16), 0, 4, b"lost")
        with pytest.raises(ChunkStoreUnavailableError) as e:
            store.flush([loc])
        assert time.monotonic() - t0 < timeout + 2
        assert "127.0.0.1" in str(e.value) and s3_server.secret_key not in str(e.value)
        store.release([loc])
        t0 = time.monotonic()
        with pytest.raises(ChunkStoreUnavailableError):
            store.get(kept)
        assert time.monotonic() - t0 < timeout + 2
    finally:
        s3_server.start()
    again = store.put(os.urandom(16), 0, 5, b"again")
    store.flush([again])
    assert store.get(again) == b"again" and store.get(kept) == b"kept"
    store.release([again])


def test_a_hung_server_fails_within_the_timeout(
    s3_server: S3Server,  # noqa: F811
    s3_url: str,
    opened: list[ObjectBlobStore],
) -> None:
    """A server that accepts connections but never answers (SIGSTOP)."""
    timeout = 2.0
    store = _open(opened, s3_url, None, timeout=timeout)
    assert s3_server.pid is not None
    os.killpg(s3_server.pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        loc = store.put(os.urandom(16), 0, 4, b"hung")
        with pytest.raises(ChunkStoreUnavailableError):
            store.flush([loc])
        assert time.monotonic() - t0 < timeout + 2
        store.release([loc])
        t0 = time.monotonic()
        with pytest.raises(ChunkStoreUnavailableError):
            store.get(Location(os.urandom(16).hex(), 0, 4))
        assert time.monotonic() - t0 < timeout + 2
    finally:
        os.killpg(s3_server.pid, signal.SIGCONT)


def test_importing_engine_does_not_import_obstore() -> None:
    code = (
        "import sys, engine, engine.storage.blobs.objects; "
        "assert 'obstore' not in sys.modules, 'obstore imported'"
    )
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=60)


def test_one_store_putting_a_chunk_twice_uploads_it_once(
    tmp_path: Path, opened: list[ObjectBlobStore]
) -> None:
    store = _open(opened, f"file://{tmp_path}/objects", None, concurrency=2)
    digest = os.urandom(16)
    with ThreadPoolExecutor(4) as pool:
        locs = list(pool.map(lambda _: store.put(digest, 0, 3, b"abc"), range(8)))
    assert set(locs) == {Location(digest.hex(), 0, 3)}
    store.flush(locs)
    assert store.confirm(locs) == []  # this store created it
    store.release(locs[:7])
    assert store.get(locs[0]) == b"abc"
    store.release(locs[7:])
    assert [name for name, _, _ in store.list_objects()] == [digest.hex()]
