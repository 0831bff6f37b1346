"""Export and import: a portable, versioned, checksummed stream of events and chunks.

Stream format, version 1 (all integers big-endian)::

    magic   b"ALEXPORT"            8 bytes
    version u16 = 1, flags u16 = 0
    frames  kind u8 | length u32 | payload (length bytes) | check (16 bytes)

``check`` is xxh3-128 over ``kind | length | payload``. Frames, in order:

- ``H`` (exactly one, first): msgpack map ``{format, store_id, created (ns),
  scope ("store" | "names"), names, upto (last source seq exported)}``.
- ``C`` chunk: a 16-byte key, then the chunk's raw (decompressed) bytes. The
  key is the *unseeded* xxh3-128 of the bytes, so it is store-independent;
  a chunk appears once however many manifests use it.
- ``A`` absent chunk: a 16-byte placeholder key for a chunk the source no
  longer holds (collected by ``gc``); only artifact versions deleted within
  the stream may reference one (``replay --into`` also allows live ones).
- ``E`` event: msgpack map ``{type, v, ts, data}`` (the stored envelope
  without its chain hash). Manifests in ``artifact.written`` name chunks by
  stream key, never by the source's seeded digest.
- ``T`` (exactly one, last, then end of file): msgpack map ``{events, chunks,
  absent, chunk_bytes, hash}``; ``hash`` is the hex xxh3-128 over the 12-byte
  preamble and the ``check`` of every frame before the trailer.

Import validates everything before anything is visible, and before any
chunk is written (``engine.ops.stream_scan``, one streaming pass): preamble and
version, every frame checksum, the trailer, each event's schema (known type,
required fields and their types; integer versions within int64; timestamps no
more than ``MAX_CLOCK_SKEW_NS``, five minutes, past this machine's clock),
manifest file names (relative, no ``..``, no NUL, no file that is also the
directory of another), sizes (a manifest's declared sizes against its
chunks, caps against absurd values), every chunk's key and every file's hash
recomputed (each distinct file once, within a hashing budget proportional to
the stream's size), references between events. Then the files are written
through the destination's chunk store (re-addressed under its seed and chunk
size, deduplicated against what it holds; each distinct chunk read, hashed
and written once however often it is referenced) and the events are read
again, appended after its head (re-chained) and folded in batches, in one
transaction: all or nothing. Memory holds ids, names and the chunk index,
never the events.

Identity: the ids of artifacts, runs and step runs travel with the stream.
Importing a stream whose ids are all present already is a no-op (reported as
``already_imported``); a stream sharing only some ids with the destination is
refused. Integer versions of a name the destination already has are shifted
past its versions; a clashing string label is refused. Timestamps are kept,
but never older than the destination's last event (the log's timestamps never
decrease, see ``engine.storage.log``). The source's ``store.created`` event is not
imported.

Pickles and classes: a signature made under the source store's secret does
not hold in the destination. Imported artifact versions are marked
``untrusted`` — their pickles refuse to load, and loading them imports no
module they name (``materializers.registry``: only classes already known or
allowed) — unless ``trust_pickles``, in which case every pickle is signed
again with the destination's secret and the versions load like local ones.

The stream is checksummed, not signed: it detects damage and truncation,
and everything in it is validated as untrusted input.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from engine.errors import StoreError
from engine.ops.export import ExportReport, export_stream
from engine.ops.importing import ImportReport, StreamFiles, import_stream
from engine.ops.stream import Progress

if TYPE_CHECKING:
    from engine.store import Store

__all__ = [
    "ExportReport",
    "ImportReport",
    "StreamFiles",
    "copy_history",
    "export_stream",
    "import_into",
    "import_stream",
]


def import_into(
    store_cls: type[Store],
    path: str | os.PathLike[str],
    root: Path,
    *,
    trust_pickles: bool = False,
    progress: Progress | None = None,
) -> ImportReport:
    """``Store.import_`` into the store at ``root``, created when missing. When
    the import is refused, a store it created is removed again: a refused
    import leaves nothing behind."""
    missing = not root.exists()
    top = root  # the outermost directory this import would create
    while missing and top.parent != top and not top.parent.exists():
        top = top.parent
    empty = not missing and root.is_dir() and not any(root.iterdir())
    try:
        with store_cls.open(root) as store:
            store.ledger.check_writable("import")
            return import_stream(store, path, trust_pickles=trust_pickles, progress=progress)
    except BaseException:
        if missing:
            shutil.rmtree(top, ignore_errors=True)
        elif empty:
            for child in root.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)
        raise


def copy_history(
    store: Store,
    into: str | os.PathLike[str],
    *,
    upto: int | None = None,
    progress: Progress | None = None,
) -> tuple[Store, ImportReport]:
    """A new store at ``into`` holding this store's history up to event ``upto``
    (default: all): events re-chained in order (the same sequence numbers, the
    new store's own ``store.created`` standing in for the source's), chunks
    re-addressed under the new store's seed. The new store shares this store's
    secret (copied, mode 0600), so signed pickles stay loadable and untrusted
    ones stay untrusted. Returns the opened new store and the import report."""
    dest = Path(into)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise StoreError(f"{dest} exists and is not empty; `--into` creates a new store")
    if store.path is None:
        raise StoreError("replay --into needs an on-disk source store")
    dest.mkdir(mode=0o700, parents=True, exist_ok=True)
    secret = store.path / "secret"
    if secret.exists():
        fd = os.open(dest / "secret", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, secret.read_bytes())
            os.fsync(fd)
        finally:
            os.close(fd)
    tmp = dest / ".replay-stream"
    try:
        export_stream(store, tmp, upto=upto, progress=progress)
        new = type(store).open(
            dest, chunk_size=store.ledger.chunks.chunk_size, level=store.ledger.chunks.level
        )
        try:
            report = import_stream(
                new, tmp, preserve_trust=True, allow_absent=True, progress=progress
            )
        except BaseException:
            new.close()
            raise
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    return new, report
