"""bench/object_clients.py at tiny size against the session's SeaweedFS, so the
client comparison cannot rot (timing not asserted)."""

from __future__ import annotations

import math

from servers_s3 import S3Server, s3_server  # noqa: F401 - the fixture, by name

from bench import object_clients


def test_object_clients_bench_runs_every_installed_client(s3_server: S3Server) -> None:  # noqa: F811
    rows = object_clients.run(s3_server.env, s3_server.bucket, objects=2, small=3, concurrency=2)
    assert [r.client for r in rows] == object_clients.available()
    assert {"obstore", "boto3"} <= set(object_clients.available())
    for r in rows:
        values = [r.put_mib_s, r.get_mib_s, *r.small_put_ms, *r.small_get_ms]
        values += [r.put_cpu_ms_per_mib, r.get_cpu_ms_per_mib]
        assert all(math.isfinite(v) and v >= 0 for v in values), r
    info = {"server": "x", "started_in": 1.0, "objects": 2, "small": 3, "concurrency": 2}
    text = object_clients.report(rows, info, "python -m bench.object_clients --objects 2")
    assert "| obstore |" in text and "| boto3 |" in text
