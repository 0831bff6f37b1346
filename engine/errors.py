"""Every error artledger raises on purpose.

Each error inherits from :class:`ArtledgerError` and, where one fits, from the
matching builtin, so ``except KeyError`` keeps working for lookups. Messages
name the thing that is wrong and the fix. Driver errors (``lmdb.Error``,
``OSError`` from pack files) are translated at one boundary in ``engine.storage.kv`` and
``engine.storage.blobs``; nothing else in the package lets them escape.
"""

from __future__ import annotations


class ArtledgerError(Exception):
    """Base class of every error the library raises on purpose."""


class ArtifactNotFoundError(ArtledgerError, KeyError):
    """No artifact version matches the name, version or id asked for."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class RunNotFoundError(ArtledgerError, KeyError):
    """No run or step run has the id asked for."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class IntegrityError(ArtledgerError):
    """Stored bytes or events do not match their hashes (damage or tampering)."""


class UntrustedArtifactError(ArtledgerError):
    """A pickle whose signature is missing or does not hold under this store's secret."""


class MaterializerError(ArtledgerError):
    """A materializer is missing, cannot be imported, or failed to save or load."""


class UnhashableParameterError(ArtledgerError, TypeError):
    """A step parameter cannot be encoded canonically, so no cache key can be made."""


class StoreError(ArtledgerError):
    """The store cannot be opened or used: bad path, newer format, closed, read-only."""


class ConcurrentGcError(StoreError):
    """A chunk a write was about to reference was collected by a ``gc`` running
    in another process; nothing was committed and the write can be retried."""


class StoreSecretError(StoreError):
    """The store's secret (the key that signs pickles) is missing, truncated or
    replaced, so a pickle can be neither signed nor verified until it is restored."""


class SharedStoreUnavailableError(StoreError):
    """A shared store's log server or object store cannot be reached (or gave
    up within its timeout); nothing was written. Reads of the local replica
    still work."""


class ChunkStoreUnavailableError(SharedStoreUnavailableError):
    """The object store holding chunk payloads cannot be reached or refused a
    request (network, timeout, credentials); nothing that needed it was
    committed, and the operation can be retried once it answers."""


class LogServerUnavailableError(SharedStoreUnavailableError):
    """The server holding a shared store's log (PostgreSQL) cannot be reached, or
    the connection dropped during a transaction; the message says whether
    anything may have been written."""


class StoreFormatError(StoreError):
    """The store was written by a newer (or unknown) on-disk format version."""


class ReadOnlyStoreError(StoreError):
    """A write was attempted on a store opened read-only (``Store.open(path,
    readonly=True)``, a read-only filesystem, or a store this user cannot write)."""


class LedgerMissingError(StoreError):
    """The store was used (it has pack files, an identity or a secret) but its
    ledger (``ledger/data.mdb``) is missing or empty; ``artledger recover`` rebuilds it."""


class LedgerDamagedError(IntegrityError, StoreError):
    """The ledger's data file is damaged (truncated, no valid meta page, or a
    ledger that committed but holds no store format); ``artledger recover`` rebuilds it."""


class ImportValidationError(ArtledgerError, ValueError):
    """An export stream failed validation; nothing from it was imported."""


class PipelineError(ArtledgerError):
    """A pipeline or step is defined or called incorrectly."""


class InvalidArgumentError(ArtledgerError, ValueError):
    """An argument has the wrong type or value."""
