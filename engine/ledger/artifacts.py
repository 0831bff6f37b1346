"""Artifact writes: materialize into chunks, then number and commit.

:func:`prepare` runs the materializer outside any transaction (its chunks
are hashed, compressed and written by the chunk store's workers);
:func:`commit_artifacts` gives the prepared versions their numbers inside the
commit transaction, gapless per name, and commits them with the events the
caller adds.
"""

from __future__ import annotations

import concurrent.futures
import copy
import secrets
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import xxhash

from engine.errors import (
    ArtledgerError,
    InvalidArgumentError,
    MaterializerError,
    StoreSecretError,
)
from engine.events import ARTIFACT_WRITTEN
from engine.projections.fold import next_version
from engine.projections.keys import MAX_VERSION, normalise_version, version_key
from engine.storage.chunks import WriteSession, content_hash
from engine.storage.files import WriteFiles
from engine.storage.kv import Txn

if TYPE_CHECKING:
    from engine.ledger.core import Ledger


def plain(value: Any, *, where: str = "metadata") -> Any:
    """``value`` as msgpack-able plain data (numpy scalars to Python; tuples to lists)."""
    if value is None or isinstance(value, (bool, int, float, str, bytes)):
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 1 << 63:
            return str(value)
        return value
    if isinstance(value, Mapping):
        return {str(k): plain(v, where=where) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v, where=where) for v in value]
    item = getattr(value, "item", None)
    if callable(item) and type(value).__module__ == "numpy":
        return plain(item(), where=where)
    if isinstance(value, (set, frozenset)):
        return sorted((plain(v, where=where) for v in value), key=repr)
    raise InvalidArgumentError(
        f"{where} value {value!r} of type {type(value).__qualname__} cannot be stored; "
        "use str, int, float, bool, None, lists and dicts of those"
    )


@dataclass
class Prepared:
    """An artifact version whose bytes are written but not yet committed."""

    data: dict[str, Any]
    session: WriteSession
    requested_version: int | str | None = None


def prepare(
    ledger: Ledger,
    obj: Any,
    name: str,
    *,
    version: int | str | None = None,
    tags: Iterable[str] = (),
    metadata: Mapping[str, Any] | None = None,
    materializer: type | None = None,
    producer: str | None = None,
    run: str | None = None,
    session: WriteSession | None = None,
    artifact_type: str | None = None,
    warn: Callable[[str], None] | None = None,
) -> Prepared:
    """Materialize ``obj`` into chunks (durable after the next commit); ``artifact_type``
    replaces the materializer's ``ASSOCIATED_ARTIFACT_TYPE``; ``warn`` gives the
    warnings of a failed metadata extraction or visualization (default: a
    ``UserWarning`` at the caller of ``prepare``'s caller)."""
    from materializers import registry
    from materializers.base import visualization_names

    ledger.check_writable(f"save artifact {name!r}")
    check_artifact_name(name)
    version = normalise_version(version)
    tags = check_tags(tags)
    if metadata is not None and not isinstance(metadata, Mapping):
        raise InvalidArgumentError("metadata must be a mapping of str to plain values")
    user_meta = plain(dict(metadata or {}), where="metadata")
    cls = materializer or registry.materializer_for_value(obj)
    ident = registry.identity(cls)
    session = session or ledger.chunks.session()
    files = WriteFiles(session, ledger.secret, secret_problem=ledger.secret_problem)
    meta_job: Future[Any] | None = None
    beside: _Beside | None = None
    try:
        m = cls(files)
        reuse = _reuse_key(m, obj)
        if getattr(obj, "nbytes", 0) >= _OVERLAP_METADATA:
            # Large arrays: compute statistics while the bytes are hashed and
            # written; when they may be reused, only once a chunk proves the
            # content new (bytes the store holds cost only their hashing).
            if reuse is None:
                meta_job = _side_pool().submit(m.extract_metadata, obj)
            else:
                beside = _Beside(m, obj)
                session.watch_new(beside.start)
        m.save(obj)
        files.finish()
    except StoreSecretError as e:
        files.discard()
        raise StoreSecretError(f"artifact {name!r}: {e}") from None
    except ArtledgerError:
        files.discard()
        session.release()
        raise
    except Exception as e:
        files.discard()
        session.release()
        raise MaterializerError(
            f"materializer {ident} failed to save a {type(obj).__qualname__} "
            f"as artifact {name!r}: {e}"
        ) from e
    finally:
        if beside is not None:
            session.unwatch_new(beside.start)  # the session may outlive this save
            meta_job = beside.close()
        if meta_job is not None:
            concurrent.futures.wait([meta_job])
    entries = list(files.entries.values())
    chash = content_hash(entries)
    size = sum(f.size for f in entries)
    memo_key = None
    if reuse is not None:
        chunks = b"".join(c for f in entries for c in f.chunks)  # seeded digests
        memo_key = (ident, getattr(cls, "VERSION", 1), chash, xxhash.xxh3_128_digest(chunks), reuse)
    extracted = _extracted_metadata(m, obj, meta_job, memo_key, f"{ident}.extract_metadata", warn)
    meta = plain(extracted or {}, where=f"metadata extracted by {ident}")
    meta.update({"size": size, "content_hash": chash, "materializer": ident})
    vis: list[list[Any]] = []
    vfiles = WriteFiles(session, ledger.secret, secret_problem=ledger.secret_problem)
    vm = cls(vfiles)
    vm.metadata = extracted if isinstance(extracted, dict) else None
    kinds = visualization_names(
        _safe_call(vm.save_visualizations, obj, f"{ident}.save_visualizations", warn),
        vfiles.local_dir,
    )
    vfiles.finish()
    for vname, kind in kinds.items():
        entry = vfiles.entries.get(vname)
        if entry is not None:
            vis.append([vname, str(kind), entry.to_record()])
    data = {
        "id": secrets.token_hex(8),
        "name": name,
        "version": version,
        "content_hash": chash,
        "data_type": registry.topic_of(type(obj)),
        "materializer": ident,
        "materializer_version": int(getattr(cls, "VERSION", 1)),
        "artifact_type": artifact_type or str(getattr(cls, "ASSOCIATED_ARTIFACT_TYPE", "data")),
        "files": [f.to_record() for f in entries],
        "visualizations": vis,
        "state": plain(files.state, where="materializer state"),
        "metadata": meta,
        "user_metadata": user_meta,
        "tags": tags,
        "producer": producer,
        "run": run,
        "size": size,
    }
    return Prepared(data, session, version)


def assign_versions(txn: Txn, prepared: list[Prepared]) -> list[dict[str, Any]]:
    """Fill in version numbers inside the commit transaction (gapless per name)."""
    nexts: dict[str, int] = {}
    taken: set[tuple[str, int | str]] = set()  # versions given earlier in this batch
    out = []
    for p in prepared:
        d = dict(p.data)
        name = d["name"]
        nxt = nexts.get(name) or next_version(txn, name)
        v = p.requested_version
        if v is None:
            v = nxt
            if v > MAX_VERSION:
                raise InvalidArgumentError(
                    f"artifact {name!r} has used up its integer versions (the last is "
                    f"{v - 1}); give this one a string version"
                )
        elif (name, v) in taken or txn.get("versions", version_key(name, v)) is not None:
            raise InvalidArgumentError(
                f"artifact {name!r} already has version {v!r}; pick another or omit version="
            )
        if isinstance(v, int) and v >= nxt:
            nxt = v + 1
        nexts[name] = nxt
        taken.add((name, v))
        d["version"] = v
        out.append(d)
    return out


def commit_artifacts(
    ledger: Ledger,
    prepared: list[Prepared],
    extra: Callable[[list[dict[str, Any]]], list[tuple[str, dict[str, Any]]]] | None = None,
) -> list[dict[str, Any]]:
    """Commit prepared artifacts (plus ``extra`` events built from their
    final records) in one durable transaction; their final records."""
    datas: list[dict[str, Any]] = []

    def build(txn: Txn) -> list[tuple[str, dict[str, Any]]]:
        datas[:] = assign_versions(txn, prepared)
        records = [(ARTIFACT_WRITTEN, d) for d in datas]
        if extra is not None:
            records += extra(datas)
        return records

    sessions = {id(p.session): p.session for p in prepared}.values()
    ledger.commit(build, sessions)
    return datas


def check_artifact_name(name: Any) -> None:
    if not isinstance(name, str) or not name or "\x00" in name or len(name) > 512:
        raise InvalidArgumentError(
            f"artifact name must be a non-empty string without NUL (at most 512 chars), "
            f"not {name!r}"
        )


def check_tags(tags: Iterable[str]) -> list[str]:
    if isinstance(tags, str):
        tags = [tags]
    out = []
    for t in tags:
        if not isinstance(t, str) or not t or "\x00" in t:
            raise InvalidArgumentError(f"tags must be non-empty strings, not {t!r}")
        out.append(t)
    return sorted(set(out))


_OVERLAP_METADATA = 8 << 20
_side: ThreadPoolExecutor | None = None
_side_lock = threading.Lock()


def _side_pool() -> ThreadPoolExecutor:
    """One thread for work that overlaps a save (metadata of large arrays)."""
    global _side
    with _side_lock:
        if _side is None:
            _side = ThreadPoolExecutor(1, thread_name_prefix="artledger-meta")
        return _side


def _reuse_key(m: Any, obj: Any) -> Any:
    """The materializer's metadata reuse key for ``obj`` (None if it has none
    or it is not hashable)."""
    try:
        key = m._metadata_reuse_key(obj)
        hash(key)
    except Exception:
        return None
    return key


class _Beside:
    """Extracts an object's metadata on the side thread once its save stores a
    chunk the store did not hold (content it holds may have it memoized)."""

    def __init__(self, m: Any, obj: Any) -> None:
        self._m, self._obj = m, obj
        self._lock = threading.Lock()
        self._job: Future[Any] | None = None
        self._closed = False

    def start(self) -> None:
        with self._lock:
            if not self._closed and self._job is None:
                self._job = _side_pool().submit(self._m.extract_metadata, self._obj)

    def close(self) -> Future[Any] | None:
        """The extraction started, if one did; none starts after this."""
        with self._lock:
            self._closed = True
            return self._job


def _extracted_metadata(
    m: Any,
    obj: Any,
    job: Future[Any] | None,
    key: Hashable | None,
    what: str,
    warn: Callable[[str], None] | None,
) -> Any:
    """What ``m.extract_metadata(obj)`` returns: the side ``job``'s result, else
    the memo's under ``key``, else computed now (and memoized under ``key``)."""
    if job is not None:
        extracted = _safe_call(lambda _: job.result(), obj, what, warn)
    else:
        extracted = None if key is None else _memo_get(key)
        if extracted is not None:
            return extracted
        extracted = _safe_call(m.extract_metadata, obj, what, warn)
    if key is not None and isinstance(extracted, dict):
        _memo_put(key, extracted)
    return extracted


_MEMO_MAX = 128
_memo: OrderedDict[Hashable, dict[str, Any]] = OrderedDict()
_memo_lock = threading.Lock()


def _memo_get(key: Hashable) -> dict[str, Any] | None:
    """A copy of the metadata memoized under ``key`` (content hash, chunk
    digests, materializer and its reuse key), or None."""
    with _memo_lock:
        found = _memo.get(key)
        if found is None:
            return None
        _memo.move_to_end(key)
    return copy.deepcopy(found)


def _memo_put(key: Hashable, extracted: dict[str, Any]) -> None:
    """Memoize a copy of ``extracted``; the least recently used entry beyond
    :data:`_MEMO_MAX` is dropped."""
    value = copy.deepcopy(extracted)
    with _memo_lock:
        _memo[key] = value
        _memo.move_to_end(key)
        while len(_memo) > _MEMO_MAX:
            _memo.popitem(last=False)


def _safe_call(
    fn: Callable[[Any], Any], obj: Any, what: str, warn: Callable[[str], None] | None
) -> Any:
    try:
        return fn(obj)
    except ArtledgerError:
        raise
    except Exception as e:
        message = f"{what} failed ({type(e).__name__}: {e}); skipped"
        if warn is not None:
            warn(message)
        else:
            warnings.warn(message, UserWarning, stacklevel=3)
        return None
