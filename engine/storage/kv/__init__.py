"""Ordered key-value transactions: the one seam between the engine and LMDB.

Everything the engine keeps outside pack files (the event log, the chunk
index, the projections, store metadata) lives in named databases of a
:class:`KV`. Two backends pass the same contract suite
(``engine.testing.kv``): :class:`LmdbKV`, the embedded default, and
:class:`MemoryKV`, the executable spec and the fold target of
``Store.as_of``. LMDB errors are translated in :mod:`engine.storage.kv.lmdb`
and nowhere else.
"""

from engine.storage.kv.base import KV, Txn
from engine.storage.kv.lmdb import MAX_READERS, NEARLY_FULL, LmdbKV, free_space, is_open_here
from engine.storage.kv.memory import MemoryKV

__all__ = [
    "KV",
    "MAX_READERS",
    "NEARLY_FULL",
    "LmdbKV",
    "MemoryKV",
    "Txn",
    "free_space",
    "is_open_here",
]
