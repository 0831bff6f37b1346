"""A damaged ledger (``ledger/data.mdb``): refused or reported, never silently
replaced, never a crash or a raw driver error.

Each kind of damage is caused through a back door (the data file's bytes, raw
LMDB records, the file system) on a store holding a multi-chunk array in a
pack, small values kept inline in the chunk index, and a pickle. Opens of
truncated files run in a subprocess, so a SIGBUS would show as a signal
instead of killing the test run.
"""

from __future__ import annotations

import contextlib
import fractions
import hashlib
import os
import stat
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engine import (
    ArtledgerError,
    IntegrityError,
    LedgerDamagedError,
    LedgerMissingError,
    Store,
    StoreError,
)
from engine.projections import STORE_DATABASES
from engine.storage.kv import LmdbKV, Txn
from engine.storage.lmdb_file import inspect

ARRAY = np.random.default_rng(3).random(40_000)  # 320 KB: five 64 KiB chunks in a pack
CFG = {"lr": 0.1, "layers": [3, 4]}  # inline in the chunk index
PICKLED = fractions.Fraction(22, 7)


def fill(path: Path) -> None:
    with Store.open(path, chunk_size=64 << 10) as s:
        s.save_artifact(ARRAY, "array", tags=["best"])
        s.save_artifact(CFG, "cfg")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the cloudpickle fallback warns
            s.save_artifact(PICKLED, "pick")
        for i in range(40):  # enough records for a ledger of several pages
            s.save_artifact({"i": i, "pad": "x" * 300}, f"small{i}")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "s"
    fill(path)
    return path


def data_file(root: Path) -> Path:
    return root / "ledger" / "data.mdb"


def tree_digest(path: Path) -> dict[str, str]:
    """Every file under ``path`` with the hash of its bytes."""
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file() and p.name != "lock.mdb"
    }


OPEN_IN_CHILD = """
import sys
from engine import ArtledgerError, Store
try:
    with Store.open(sys.argv[1]) as s:
        print("opened", len(s.list_artifacts()))
except ArtledgerError as e:
    print(type(e).__name__, e)
"""


def open_in_child(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", OPEN_IN_CHILD, str(root)],
        capture_output=True,
        text=True,
        timeout=120,
    )


# -- a missing or empty ledger ------------------------------------------------------------


@pytest.mark.parametrize("how", ["deleted", "emptied", "ledger-dir-deleted"])
def test_lost_ledger_is_refused_and_nothing_is_touched(root: Path, how: str) -> None:
    if how == "deleted":
        data_file(root).unlink()
    elif how == "emptied":
        data_file(root).write_bytes(b"")
    else:
        for p in (root / "ledger").iterdir():
            p.unlink()
        (root / "ledger").rmdir()
    before = tree_digest(root)
    with pytest.raises(LedgerMissingError) as e:
        Store.open(root)
    msg = str(e.value)
    assert str(data_file(root)) in msg and "artledger recover" in msg and "pack file" in msg
    assert isinstance(e.value, StoreError)
    # No new ledger was made, and no pack lost a byte.
    assert tree_digest(root) == before
    assert not data_file(root).exists() or data_file(root).stat().st_size == 0


def test_lost_ledger_without_packs_is_refused_by_its_identity(tmp_path: Path) -> None:
    root = tmp_path / "s"
    with Store.open(root) as s:
        s.save_artifact(CFG, "cfg")  # inline: no pack file
    assert not list((root / "packs").glob("*.pack"))
    data_file(root).unlink()
    with pytest.raises(LedgerMissingError, match="identity"):
        Store.open(root)
    (root / "identity").unlink()  # a store from before identity files: the secret tells
    with pytest.raises(LedgerMissingError, match="secret"):
        Store.open(root)


def test_a_new_store_and_an_interrupted_creation_open(tmp_path: Path) -> None:
    with Store.open(tmp_path / "new") as s:
        s.save_artifact(1, "x")
    assert (tmp_path / "new" / "identity").exists()
    assert not (tmp_path / "new" / ".creating").exists()
    # A creation killed after the secret was written (the marker is still there).
    half = tmp_path / "half"
    half.mkdir()
    (half / ".creating").touch()
    (half / "secret").write_bytes(os.urandom(32))
    (half / "ledger").mkdir()
    (half / "ledger" / "lock.mdb").write_bytes(b"")
    with Store.open(half) as s:
        s.save_artifact(1, "x")
        assert s.verify().ok
    assert not (half / ".creating").exists()


def test_creation_killed_after_lmdb_made_its_databases_is_finished(tmp_path: Path) -> None:
    """LMDB commits once per database it creates, before the store's first
    commit: a creation killed there leaves a committed ledger with no format,
    and its ``.creating`` marker; the next open finishes it."""
    root = tmp_path / "s"
    root.mkdir(mode=0o700)
    (root / ".creating").touch()
    (root / "secret").write_bytes(os.urandom(32))
    LmdbKV(root / "ledger", STORE_DATABASES).close()
    assert inspect(data_file(root)).committed
    with Store.open(root) as s:
        s.save_artifact(1, "x")
        assert s.verify().ok
    assert not (root / ".creating").exists() and (root / "identity").exists()


def test_committed_ledger_without_a_format_is_refused_not_reinitialised(root: Path) -> None:
    with Store.open(root) as s:
        s.ledger.kv.write(lambda txn: txn.delete("meta", b"format"))
    before = data_file(root).read_bytes()
    with pytest.raises(LedgerDamagedError, match="no store format record") as e:
        Store.open(root)
    assert "artledger recover" in str(e.value)
    assert data_file(root).read_bytes() == before  # no seed, store id or event written


# -- a truncated or garbled data file -----------------------------------------------------


def _truncations(size: int) -> list[int]:
    return [8192, 8192 + 100, size // 3, size // 2, size - 4096, size - 1]


def test_truncated_data_file_is_refused_cleanly_never_a_signal(root: Path) -> None:
    data = data_file(root)
    size = data.stat().st_size
    assert size >= 16 * 4096
    original = data.read_bytes()
    for cut in _truncations(size):
        data.write_bytes(original[:cut])
        proc = open_in_child(root)
        assert proc.returncode == 0, (cut, proc.returncode, proc.stderr[-2000:])
        out = proc.stdout
        assert out.startswith("LedgerDamagedError"), (cut, out, proc.stderr[-2000:])
        assert "truncated" in out and str(data) in out and f"{cut} bytes" in out
        assert "artledger recover" in out
        assert data.stat().st_size == cut  # refused, not "repaired"


@pytest.mark.parametrize("which", ["both", "first", "second"])
def test_damaged_meta_pages_are_refused(root: Path, which: str) -> None:
    data = data_file(root)
    with open(data, "r+b") as f:
        for page in {"both": (0, 1), "first": (0,), "second": (1,)}[which]:
            f.seek(page * 4096 + 16)
            f.write(b"\xff" * 64)  # the magic, version and sizes
    proc = open_in_child(root)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("LedgerDamagedError"), proc.stdout
    assert "meta page" in proc.stdout and "artledger recover" in proc.stdout


def test_ledger_that_is_a_file(root: Path) -> None:
    ledger = root / "ledger"
    for p in ledger.iterdir():
        p.unlink()
    ledger.rmdir()
    ledger.write_text("not a ledger")
    with pytest.raises(StoreError, match="is a file, not the ledger directory") as e:
        Store.open(root)
    assert "artledger recover" in str(e.value)
    assert ledger.read_text() == "not a ledger"


def _leaf_pages(data: Path, marker: bytes) -> list[int]:
    """Pages of the data file holding ``marker`` (a record's bytes)."""
    raw = data.read_bytes()
    return sorted({i // 4096 for i in _find_all(raw, marker) if i >= 8192})


def _find_all(raw: bytes, needle: bytes) -> Iterator[int]:
    i = raw.find(needle)
    while i >= 0:
        yield i
        i = raw.find(needle, i + 1)


def _reads(store: Store) -> list[Any]:
    """Every kind of read; each either answers or raises an ArtledgerError."""
    out: list[Any] = []
    calls = [
        lambda: len(store.list_artifacts()),
        lambda: [a.load() is not None for a in store.list_artifacts()],
        lambda: len(list(store.events())),
        lambda: store.stats(),
        lambda: len(store.as_of(store.head).list_artifacts()),
        lambda: store.get_artifact("array").load().shape,
        lambda: store.lineage(store.get_artifact("cfg")).nodes,
    ]
    for call in calls:
        try:
            out.append(call())
        except ArtledgerError as e:
            out.append(e)
    return out


GARBAGE_IN_CHILD = """
import sys
from engine import ArtledgerError, Store
sys.path.insert(0, sys.argv[2])
from test_ledger_damage import _reads
try:
    s = Store.open(sys.argv[1])
except ArtledgerError as e:  # damage met while opening: refused cleanly
    print("errors 1")
    print("integrity", int(type(e).__name__ in ("IntegrityError", "LedgerDamagedError")))
    print("problems 1")
    sys.exit(0)
with s:
    results = _reads(s)
    report = s.verify()
print("errors", sum(isinstance(r, ArtledgerError) for r in results))
print("integrity", sum(type(r).__name__ == "IntegrityError" for r in results))
print("problems", len(report.problems))
"""


@pytest.mark.slow
def test_garbage_page_is_an_integrity_error_and_a_verify_problem(root: Path) -> None:
    """Pages holding artifact records overwritten with random bytes, one at a
    time. In a process that reads the damaged ledger, reads that meet the
    page raise IntegrityError (never a raw lmdb error) and verify lists it --
    unless LMDB itself kills the process (it trusts its pages: an assertion
    aborts it, a damaged size makes it read past the file). ``artledger
    verify`` reads the ledger in a child process first: it always reports the
    damage and exits 1, never dies. Some pages are stale copies LMDB no longer
    uses (nothing to see: exit 0)."""
    data = data_file(root)
    pages = _leaf_pages(data, b"materializer_version")
    assert pages
    original = data.read_bytes()
    rng = np.random.default_rng(7)
    outcomes = {"reported": 0, "killed": 0, "stale": 0}
    for page in pages:
        damaged = bytearray(original)
        damaged[page * 4096 : (page + 1) * 4096] = rng.bytes(4096)
        data.write_bytes(bytes(damaged))
        proc = subprocess.run(
            [sys.executable, "-c", GARBAGE_IN_CHILD, str(root), str(Path(__file__).parent)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert "Traceback" not in proc.stderr, (page, proc.stderr[-3000:])
        cli = subprocess.run(
            [sys.executable, "-m", "engine.cli", "--store", str(root), "verify"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert cli.returncode in (0, 1), (page, cli.returncode, cli.stderr[-3000:])
        if proc.returncode < 0:
            outcomes["killed"] += 1
            assert cli.returncode == 1 and "artledger recover" in cli.stdout, cli.stdout
            continue
        assert proc.returncode == 0, (page, proc.stderr[-3000:])
        counts = dict(line.split() for line in proc.stdout.splitlines())
        assert counts["errors"] == counts["integrity"], proc.stdout
        if int(counts["problems"]):
            outcomes["reported"] += 1
            assert cli.returncode == 1 and "problem" in cli.stdout, cli.stdout
        else:
            outcomes["stale"] += 1
            assert cli.returncode == 0, cli.stdout
    data.write_bytes(original)
    assert outcomes["reported"] + outcomes["killed"], outcomes


# -- damaged records: IntegrityError at the read boundary, problems in verify --------------


@pytest.fixture
def store(root: Path) -> Iterator[Store]:
    s = Store.open(root, chunk_size=64 << 10)
    try:
        yield s
    finally:
        s.close()


def _put(store: Store, db: str, key: bytes, value: bytes) -> None:
    def fn(txn: Txn) -> None:
        txn.put(db, key, value)

    store.ledger.kv.write(fn)


def _flip_string(raw: bytes, text: bytes) -> bytes:
    """``raw`` with the first byte of ``text`` made invalid UTF-8 (a flipped bit)."""
    i = raw.index(text)
    return raw[:i] + bytes([raw[i] | 0x80 | 0x40 | 0x20 | 0x10 | 0x08]) + raw[i + 1 :]


def test_flipped_bytes_in_an_artifact_record(store: Store) -> None:
    art = store.get_artifact("cfg")
    raw = store.ledger.kv.read()
    try:
        rec = raw.get("artifacts", art.id.encode())
    finally:
        store.ledger.kv.end_read(raw)
    assert rec is not None
    _put(store, "artifacts", art.id.encode(), _flip_string(rec, b"cfg"))
    for call in (
        lambda: store.list_artifacts(),
        lambda: store.get_artifact("cfg"),
        lambda: store.get_artifact_by_id(art.id),
        lambda: store.list_artifacts(tag="best") + store.list_artifacts("cfg"),
    ):
        with pytest.raises(IntegrityError, match="damaged") as e:
            call()
        assert "artledger verify" in str(e.value)
    report = store.verify()
    assert any("artifact record" in p and "damaged" in p for p in report.problems)
    assert any("projection 'artifacts' differs" in p for p in report.problems)
    # Projections fold from the log again: the fix is a rebuild.
    assert store.verify(fix=True).fixed
    assert store.load_artifact("cfg") == CFG
    assert store.verify().ok


def test_record_of_the_wrong_shape(store: Store) -> None:
    art = store.get_artifact("pick")
    _put(store, "artifacts", art.id.encode(), b"\x93\x01\x02\x03")  # a list, not a map
    with pytest.raises(IntegrityError, match="shape"):
        store.get_artifact_by_id(art.id)
    step_less = store.list_artifacts
    with pytest.raises(IntegrityError):
        step_less()
    assert not store.verify().ok


def test_flipped_bytes_in_an_index_value_and_a_chunk_record(store: Store) -> None:
    art = store.get_artifact("array")
    txn = store.ledger.kv.read()
    try:
        keys = [k for k, _ in txn.scan("names", prefix=b"array\x00")]
        digest = art.record()["files"][0][3][0]
        chunk = txn.get("chunks", digest)
    finally:
        store.ledger.kv.end_read(txn)
    _put(store, "names", keys[0], b"\xff\xfe" + art.id.encode()[2:])  # invalid UTF-8 id
    with pytest.raises(IntegrityError):
        store.get_artifact("array")
    assert chunk is not None
    _put(store, "chunks", digest, b"\xc1" + chunk[1:])
    with pytest.raises(IntegrityError, match="chunk index record is damaged"):
        store.get_artifact_by_id(art.id).load()
    report = store.verify()
    assert any("index record is damaged" in p for p in report.problems)


def test_verify_reports_every_stage_it_cannot_finish(store: Store) -> None:
    """Damage in several databases at once: verify still runs every stage."""
    _put(store, "events", (2).to_bytes(8, "big"), b"\xc1\xc1")
    art = store.get_artifact("cfg")
    _put(store, "artifacts", art.id.encode(), b"\xc1")
    _put(store, "segments", b"\xff\xfe", b"x")  # a segment name that does not decode
    report = store.verify()
    text = "\n".join(report.problems)
    assert "event 2" in text
    assert "artifact record" in text
    assert "could not finish check the pack files" in text
    assert "projection" in text  # the fold of the log still ran


# -- the disk fills during the LMDB commit ---------------------------------------------------


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir()
    try:
        proc = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
            capture_output=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError) as e:
        pytest.skip(f"cannot mount a tmpfs here: {e}")
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.decode(errors='replace')}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)


def test_full_disk_during_the_ledger_commit_names_the_cause(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "small", "4m") as mnt:
        path = mnt / "s"
        acked = 0
        with Store.open(path, map_size=1 << 20) as s:
            s.save_artifact("first", "first")
            free = os.statvfs(mnt).f_bavail * os.statvfs(mnt).f_frsize
            (mnt / "filler").write_bytes(b"\0" * max(0, free - (96 << 10)))
            with pytest.raises(StoreError) as e:
                for i in range(200):  # inline values: only the ledger grows
                    s.save_artifact({"i": i}, "grow", metadata={"pad": "y" * 20_000})
                    acked += 1
            msg = str(e.value)
            assert "no space left on the device holding" in msg, msg
            assert "free" in msg and "nothing was committed" in msg
            assert "Input/output error" not in msg
        (mnt / "filler").unlink()
        with Store.open(path) as s:
            assert [a.version for a in s.list_artifacts("grow")] == list(range(1, acked + 1))
            s.save_artifact("after", "after")
            assert s.verify().ok


# -- permissions ----------------------------------------------------------------------------


def test_new_store_is_private_under_umask_022(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        with Store.open(tmp_path / "s") as s:
            s.save_artifact(ARRAY, "array")
    finally:
        os.umask(old)
    root = tmp_path / "s"

    def mode(p: Path) -> int:
        return stat.S_IMODE(p.stat().st_mode)

    assert mode(root) == 0o700
    assert mode(root / "ledger") == 0o700
    for name in ("data.mdb", "lock.mdb"):
        assert mode(root / "ledger" / name) == 0o600, name
    assert mode(root / "secret") == 0o600
    assert mode(root / "identity") == 0o600
    for pack in (root / "packs").glob("*.pack"):
        assert mode(pack) == 0o600


# -- identity -------------------------------------------------------------------------------


def test_identity_file_is_written_and_checked(root: Path) -> None:
    ident = (root / "identity").read_text()
    with Store.open(root) as s:
        assert s.store_id in ident and str(s.ledger.chunks.seed) in ident
    (root / "identity").unlink()  # a store from before identity files
    with Store.open(root) as s:
        assert s.verify().ok
    assert (root / "identity").read_text() == ident
    other = root.parent / "other"
    Store.open(other).close()
    (root / "identity").unlink()
    (root / "identity").write_bytes((other / "identity").read_bytes())
    with Store.open(root) as s:
        report = s.verify()
    assert any("identity file" in p and "another store" in p for p in report.problems)


def test_inspect_reads_the_meta_pages_of_a_real_file(root: Path) -> None:
    """The layout this module assumes, checked against a file LMDB wrote."""
    df = inspect(data_file(root))
    assert df.state == "ok"
    newest = df.newest
    assert newest is not None
    assert newest.page_size == os.sysconf("SC_PAGE_SIZE")
    assert df.size == newest.needed
    with Store.open(root) as s:
        info = s.ledger.kv.env.info()  # type: ignore[attr-defined]
        assert newest.last_pgno == info["last_pgno"] and newest.txnid == info["last_txnid"]
