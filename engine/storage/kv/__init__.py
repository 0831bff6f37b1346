"""Ordered key-value transactions: the one seam between the engine and LMDB.

Everything the engine keeps outside pack files (the event log, the chunk
index, the projections, store metadata) lives in named databases of a
:class:`KV`. Two backends pass the same contract suite
(``engine.testing.kv``): :class:`LmdbKV`, the embedded default,
:class:`MemoryKV`, the executable spec and the fold target of
``Store.as_of``, and :class:`PostgresKV`, a PostgreSQL table shared by many
processes and machines (psycopg is imported only when one is built). LMDB
errors are translated in :mod:`engine.storage.kv.lmdb`, PostgreSQL's in
:mod:`engine.storage.kv.postgres`, and nowhere else.
"""

from engine.storage.kv.base import KV, Txn
from engine.storage.kv.lmdb import MAX_READERS, NEARLY_FULL, LmdbKV, free_space, is_open_here
from engine.storage.kv.memory import MemoryKV
from engine.storage.kv.postgres import PostgresKV

__all__ = [
    "KV",
    "MAX_READERS",
    "NEARLY_FULL",
    "LmdbKV",
    "MemoryKV",
    "PostgresKV",
    "Txn",
    "free_space",
    "is_open_here",
]
