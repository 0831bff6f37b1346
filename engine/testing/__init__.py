"""Contract test suites shipped with artledger, one per seam.

Each suite is a plain class of ``test_*`` methods with one factory hook; a
backend's test module subclasses it (its name starting with ``Test``) and
pytest collects the tests::

    from engine.projections import STORE_DATABASES
    from engine.storage.kv import MemoryKV
    from engine.testing.kv import KVContract

    class TestMemoryKV(KVContract):
        def make_kv(self, tmp_path):
            return MemoryKV(STORE_DATABASES)

- :mod:`engine.testing.kv`: ``KVContract``, for a :class:`~engine.storage.kv.KV`.
- :mod:`engine.testing.log`: ``LogContract``, the event log over a KV backend.
- :mod:`engine.testing.blobs`: ``BlobStoreContract``, for a
  :class:`~engine.storage.blobs.BlobStore` (hooks exercised by capability flag).

The suites use pytest's ``tmp_path`` fixture and import pytest only inside
the tests that need it, so importing them does not need pytest installed.
Nothing in ``engine`` imports this package.
"""
