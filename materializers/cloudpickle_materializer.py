"""The fallback: cloudpickle, signed with the store's secret.

Unpickling runs code, so a pickle artifact loads only when its HMAC signature
(``files.sign`` over the exact payload, kept in ``files.state`` and so in the
``artifact.written`` event, not in the payload) holds under the store's
secret. The check happens before a single byte is unpickled. The Python and
cloudpickle versions that wrote it are recorded too; a mismatch is a warning
naming both, and a failure inside unpickling is a :class:`MaterializerError`.
"""

from __future__ import annotations

import pickle
import sys
import warnings
from typing import Any, ClassVar, Final

from engine.errors import MaterializerError, UntrustedArtifactError
from materializers import registry
from materializers.base import BaseMaterializer
from materializers.files import ArtifactFiles

PICKLE_FILE: Final = "artifact.pkl"
PROTOCOL: Final = 5


def python_version() -> str:
    """The running Python's ``major.minor``, as recorded with a pickle."""
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def _cloudpickle_version() -> str:
    import cloudpickle

    version: str = cloudpickle.__version__
    return version


def dumps(data: Any) -> bytes:
    """Pickle ``data`` into memory with cloudpickle, or raise
    :class:`MaterializerError` naming its type (nothing is written)."""
    import cloudpickle

    try:
        payload: bytes = cloudpickle.dumps(data, protocol=PROTOCOL)
    except Exception as exc:  # pickling errors come as TypeError, PicklingError, ...
        name = type(data).__qualname__
        raise MaterializerError(
            f"Cannot pickle an object of type `{name}` ({registry.identity(type(data))}): "
            f"{exc}. Write a materializer for it (a BaseMaterializer subclass with "
            f"ASSOCIATED_TYPES = ({name},), registered with `@register`) or pass "
            "`output_materializers=`."
        ) from exc
    return payload


class CloudpickleMaterializer(BaseMaterializer):
    """Any picklable object as ``artifact.pkl`` (cloudpickle, protocol 5).

    ``files.state`` gets ``signature`` (``files.sign(payload)``), ``python``
    ("3.11") and ``cloudpickle`` (its version). Not registered for any type:
    the registry falls back to it with a warning.
    """

    ASSOCIATED_TYPES: ClassVar[tuple[type, ...]] = ()
    ASSOCIATED_ARTIFACT_TYPE: ClassVar[str] = "data"
    VERSION: ClassVar[int] = 1

    def save(self, data: Any) -> None:
        payload = dumps(data)
        with self.open(PICKLE_FILE, "wb") as f:
            view = memoryview(payload)
            for start in range(0, len(view), 1 << 22):
                f.write(view[start : start + (1 << 22)])
        self.files.state["signature"] = self.files.sign(payload)
        self.files.state["python"] = python_version()
        self.files.state["cloudpickle"] = _cloudpickle_version()

    def load(self, data_type: type) -> Any:
        payload = self._verified_payload()
        written_by = self.files.state.get("python")
        if written_by != python_version():
            warnings.warn(
                f"{PICKLE_FILE} was pickled under Python {written_by} and is being loaded "
                f"under Python {python_version()}; pickles may not load, or may load "
                "differently, across Python versions. Re-save the artifact under "
                f"Python {python_version()} or give its type a materializer.",
                UserWarning,
                stacklevel=2,
            )
        try:
            return pickle.loads(payload)  # the signature was verified above
        except Exception as exc:
            raise MaterializerError(
                f"Cannot unpickle {PICKLE_FILE} (a `{data_type.__qualname__}` pickled by "
                f"Python {written_by}, cloudpickle {self.files.state.get('cloudpickle')}; "
                f"running Python {python_version()}, cloudpickle {_cloudpickle_version()}): "
                f"{exc}. Make the classes it needs importable, use matching versions, or "
                "give the type a materializer."
            ) from exc

    def _verified_payload(self) -> bytes:
        with self.open(PICKLE_FILE, "rb") as f:
            chunks = []
            while chunk := f.read(1 << 22):
                chunks.append(chunk)
        payload = b"".join(chunks)
        signature = self.files.state.get("signature")
        fix = (
            "Pickles run code when loaded, so only signed ones load. If you trust where it "
            "came from, save it again in this store, or import it with "
            "Store.import_(..., trust_pickles=True)."
        )
        if not isinstance(signature, str) or not signature:
            raise UntrustedArtifactError(
                f"Refusing to unpickle {PICKLE_FILE}: it has no signature. {fix}"
            )
        if not self.files.verify(payload, signature):
            raise UntrustedArtifactError(
                f"Refusing to unpickle {PICKLE_FILE}: its signature does not match this "
                f"store's secret (the payload was changed, or signed by another store). {fix}"
            )
        return payload


def resign_pickles(files: ArtifactFiles) -> int:
    """Sign again, under ``files``' (this store's) secret, every pickle the
    built-in materializers wrote in this artifact (and every other file they
    signed, named by ``state["signed_file"]``), elements of containers
    included, updating ``files.state`` in place. For
    ``Store.import_(..., trust_pickles=True)``: the caller vouches for the
    bytes. Returns how many pickles were signed."""
    signed = 0
    state = files.state
    name = state.get("signed_file", PICKLE_FILE)
    if "signature" in state and isinstance(name, str) and name in files.names():
        with files.open_read(name) as f:
            chunks = []
            while chunk := f.read(1 << 22):
                chunks.append(chunk)
        state["signature"] = files.sign(b"".join(chunks))
        signed += 1
    for at, element_state in state.get("elements", {}).items():
        sub = files.sub(at)
        sub.state = element_state  # the same dict: updated in place
        signed += resign_pickles(sub)
    return signed
