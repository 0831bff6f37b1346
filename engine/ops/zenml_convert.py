"""Read one ZenML artifact version's files, and convert it where artledger has an equivalent.

- ``NumpyMaterializer`` (``data.npy``): loaded with ``allow_pickle=False``
  and saved by artledger's numpy materializer. An object array (which only a
  pickle can hold) is kept as its files instead, like any pickle.
- ``BuiltInMaterializer`` / ``BuiltInContainerMaterializer`` with a
  ``data.json``, and ``BytesMaterializer`` (``data.txt``): parsed and saved by
  artledger's builtins materializer (tuples, sets and dicts restored as ZenML
  restores them). A container ZenML stored element by element is kept as files.
- ``PandasMaterializer`` (``df.parquet.gzip``, or ``df.csv``): read with pandas
  and saved by artledger's pandas materializer (Parquet parts).
- everything else is kept as its files, byte for byte, with ZenML's
  materializer recorded. ZenML's ``CloudpickleMaterializer`` writes
  ``artifact.pkl``, the file artledger's own cloudpickle materializer reads:
  it is recorded under that materializer, unsigned (so refused on load)
  unless the operator trusts the pickles. The pickle's opcodes are walked
  (never executed) to find a truncated or damaged file.

Where ZenML recorded a content hash (built-ins: MD5 over the materializer's
class name and the sorted JSON; bytes: over the name and the bytes; pickles:
SHA-256 of ``artifact.pkl``), it is checked; numpy and pandas files have none,
and are checked by parsing them whole.

A file that cannot be read or parsed is an :class:`ImportValidationError`
naming the file and the ZenML artifact.
"""

from __future__ import annotations

import hashlib
import json
import pickletools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import ImportValidationError
from engine.ops.zenml_db import ZArtifact, dashed

_ZM = "zenml.materializers.built_in_materializer:"
NUMPY = "zenml.integrations.numpy.materializers.numpy_materializer:NumpyMaterializer"
PANDAS = "zenml.integrations.pandas.materializers.pandas_materializer:PandasMaterializer"
BUILTIN = _ZM + "BuiltInMaterializer"
CONTAINER = _ZM + "BuiltInContainerMaterializer"
BYTES = _ZM + "BytesMaterializer"
PICKLE = "zenml.materializers.cloudpickle_materializer:CloudpickleMaterializer"
ARTLEDGER_PICKLE = "materializers.cloudpickle_materializer:CloudpickleMaterializer"
PICKLE_FILE = "artifact.pkl"


@dataclass
class Converted:
    """A ZenML artifact version read: an object to save with artledger's
    materializers (``converted``), or its files to keep as they are."""

    converted: bool
    obj: Any = None
    files: list[tuple[str, Path]] = field(default_factory=list)
    pickle: Path | None = None
    python: str | None = None


def label(a: ZArtifact) -> str:
    """How errors name a ZenML artifact version."""
    return f"ZenML artifact {a.name}:{a.version} (id {dashed(a.id)})"


def _bad(path: Path, a: ZArtifact, problem: str) -> ImportValidationError:
    return ImportValidationError(f"{path}: cannot read {label(a)}: {problem}; nothing was imported")


def read_artifact(a: ZArtifact) -> Converted:
    """``a``'s files read (and converted where artledger has an equivalent)."""
    if a.path is None:
        raise ImportValidationError(
            f"{label(a)} is not in a local artifact store (uri {a.uri}); nothing was imported"
        )
    d = a.path
    if not d.is_dir():
        raise ImportValidationError(
            f"{d}: the files of {label(a)} are missing (recorded uri {a.uri}); nothing was "
            "imported. Pass --artifact-store if the artifact store is elsewhere"
        )
    try:
        return _read(d, a)
    except OSError as e:
        raise _bad(Path(e.filename or d), a, e.strerror or str(e)) from None


def _read(d: Path, a: ZArtifact) -> Converted:
    topic, m = a.data_type, a.materializer
    if m == NUMPY and (d / "data.npy").is_file():
        return _numpy(d / "data.npy", a) or _files(d, a)
    if m in (BUILTIN, CONTAINER) and (d / "data.json").is_file():
        return Converted(True, _builtin(d / "data.json", topic, a))
    if m == BYTES and (d / "data.txt").is_file():
        raw = (d / "data.txt").read_bytes()
        _check_hash(d / "data.txt", a, "md5", m.split(":")[1].encode() + raw)
        return Converted(True, raw)
    if m == PANDAS and topic in ("pandas:DataFrame", "pandas:Series"):
        return Converted(True, _pandas(d, topic, a))
    return _files(d, a)


def _numpy(path: Path, a: ZArtifact) -> Converted | None:
    import numpy as np

    try:
        with open(path, "rb") as f:
            arr = np.load(f, allow_pickle=False)
            if f.read(1):
                raise ValueError("trailing bytes after the array")
    except ValueError as e:
        if "allow_pickle" in str(e):  # an object array: keep its (pickled) file
            return None
        raise _bad(path, a, f"not a valid .npy file ({e})") from None
    except EOFError as e:
        raise _bad(path, a, f"truncated .npy file ({e})") from None
    return Converted(True, arr)


def _builtin(path: Path, topic: str, a: ZArtifact) -> Any:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise _bad(path, a, f"not valid JSON ({e})") from None
    if topic != "builtins:set":  # ZenML hashes a set in its own order
        name = a.materializer.split(":")[1]
        _check_hash(path, a, "md5", (name + json.dumps(value, sort_keys=True)).encode())
    if topic == "builtins:dict" and not isinstance(value, dict):
        if not (isinstance(value, list) and len(value) == 2):
            raise _bad(path, a, "a dict stored as neither an object nor [keys, values]")
        keys, values = value
        return {_hashable(k): v for k, v in zip(keys, values, strict=True)}
    if topic == "builtins:tuple" and isinstance(value, list):
        return tuple(value)
    if topic == "builtins:set" and isinstance(value, list):
        return {_hashable(v) for v in value}
    return value


def _hashable(v: Any) -> Any:
    return tuple(_hashable(x) for x in v) if isinstance(v, list) else v


def _pandas(d: Path, topic: str, a: ZArtifact) -> Any:
    try:
        import pandas as pd  # type: ignore[import-untyped]
        import pyarrow  # type: ignore[import-untyped]  # noqa: F401  (the pandas materializer's)
    except ImportError as e:
        raise ImportValidationError(
            f"{label(a)} is a pandas {topic.partition(':')[2]}: converting it needs pandas and "
            f"pyarrow (pip install 'artledger[pandas]'; {e}); nothing was imported"
        ) from None

    parquet, csv = d / "df.parquet.gzip", d / "df.csv"
    try:
        if parquet.is_file():
            path = parquet
            df = pd.read_parquet(parquet)
        elif csv.is_file():
            path = csv
            df = pd.read_csv(csv, index_col=0, parse_dates=True)
        else:
            raise _bad(d, a, "neither df.parquet.gzip nor df.csv is there")
    except (OSError, ValueError, TypeError) as e:
        if isinstance(e, OSError) and e.filename:
            raise
        raise _bad(path, a, f"{type(e).__name__}: {e}") from None
    except Exception as e:  # pyarrow's own errors (ArrowInvalid is a ValueError; others not)
        raise _bad(path, a, f"{type(e).__name__}: {e}") from None
    if topic == "pandas:Series":
        if len(df.columns) != 1:
            raise _bad(path, a, f"a Series stored with {len(df.columns)} columns")
        return df[df.columns[0]]
    return df


def _files(d: Path, a: ZArtifact) -> Converted:
    files = sorted((p.relative_to(d).as_posix(), p) for p in d.rglob("*") if p.is_file())
    if not files:
        raise _bad(d, a, "the artifact's directory is empty")
    out = Converted(False, files=files)
    if a.materializer == PICKLE and (d / PICKLE_FILE).is_file():
        out.pickle = d / PICKLE_FILE
        _check_hash(out.pickle, a, "sha256", out.pickle.read_bytes())
        _check_pickle(out.pickle, a)
        version = d / "python_version.txt"
        if version.is_file():
            text = version.read_text(encoding="utf-8", errors="replace").strip()
            out.python = ".".join(text.split(".")[:2]) or None
    return out


def _check_hash(path: Path, a: ZArtifact, algorithm: str, payload: bytes) -> None:
    """Compare with the content hash ZenML recorded (built-ins, bytes and
    pickles have one), when it did."""
    if not a.content_hash:
        return
    if hashlib.new(algorithm, payload, usedforsecurity=False).hexdigest() != a.content_hash:
        raise _bad(path, a, f"its content does not match the {algorithm} ZenML recorded")


def _check_pickle(path: Path, a: ZArtifact) -> None:
    """Walk the pickle's opcodes without running any: a truncated or damaged
    pickle fails here, not when someone trusts and loads it."""
    try:
        with open(path, "rb") as f:
            names = [op.name for op, _, _ in pickletools.genops(f)]
            if not names or names[-1] != "STOP":
                raise ValueError("no STOP opcode")
            if f.read(1):
                raise ValueError("trailing bytes after STOP")
    except (ValueError, EOFError) as e:
        raise _bad(path, a, f"not a complete pickle ({e})") from None
