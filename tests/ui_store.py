"""A small store for the dashboard tests: runs with every step status, and an
artifact with one visualization of each kind (an image, csv, html trying to
reach the page around it, markdown, json)."""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import pytest

from engine import Store, pipeline, step
from materializers import BaseMaterializer

EVIL_HTML = (
    "<html><body><h1 id='inside'>inside</h1><script>"
    "try { parent.document.body.setAttribute('data-pwned', 'parent'); } catch (e) {}"
    "try { top.document.title = 'pwned'; } catch (e) {}"
    "try { document.cookie = 'x=1'; } catch (e) {}"
    "</script></body></html>"
)
CSV = "epoch,loss\n1,0.9\n2,0.5\n3,0.25\n"


def png(width: int = 160, height: int = 90) -> bytes:
    """A valid RGB PNG, a red-to-blue gradient."""
    rows = b"".join(
        b"\x00"
        + b"".join(bytes((255 * x // width, 80, 255 - 255 * x // width)) for x in range(width))
        for _ in range(height)
    )

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + (chunk(b"IEND", b""))
    )


class Report:
    """What the report step returns."""

    def __init__(self, text: str) -> None:
        self.text = text


class ReportMaterializer(BaseMaterializer):
    ASSOCIATED_TYPES = (Report,)
    ASSOCIATED_ARTIFACT_TYPE = "statistics"

    def save(self, data: Report) -> None:
        with self.open("report.txt", "w") as f:
            f.write(data.text)
        with self.open("parts/extra.bin", "wb") as f:
            f.write(b"\x00\x01\x02")

    def load(self, data_type: type) -> Report:
        with self.open("report.txt", "r") as f:
            return Report(f.read())

    def save_visualizations(self, data: Report) -> dict[str, str]:
        out = {
            "curve.png": ("image", png()),
            "losses.csv": ("csv", CSV.encode()),
            "page.html": ("html", EVIL_HTML.encode()),
            "notes.md": (
                "markdown",
                b"# Notes\n\n*loss* went **down**.\n\n<script>bad()</script>\n",
            ),
            "summary.json": ("json", b'{"loss": 0.25, "epochs": 3}'),
        }
        for name, (_, raw) in out.items():
            with self.open(name, "wb") as f:
                f.write(raw)
        return {name: kind for name, (kind, _) in out.items()}


@step
def load(n: int = 5) -> list:
    return list(range(n))


@step
def report(data: list) -> Report:
    return Report(f"{len(data)} rows")


@step
def train(data: list, fail: bool = False) -> float:
    if fail:
        raise RuntimeError("training diverged")
    return sum(data) / len(data)


@step
def evaluate(score: float) -> dict:
    return {"score": score}


@pipeline
def training(n: int = 5, fail: bool = False):
    data = load(n=n)
    report(data)
    evaluate(train(data, fail=fail))


@dataclass
class UIStore:
    path: Path
    first_run: str
    cached_run: str
    failed_run: str
    last_run: str
    before_last: int  # the head just before the last run started
    head: int


def build(path: Path) -> UIStore:
    with Store.open(path) as store:
        first = store.run(training, n=5)
        cached = store.run(training, n=5)
        with pytest.raises(RuntimeError):
            store.run(training, n=6, fail=True)
        failed = store.list_runs()[-1]
        store.tag(first.steps["report"].output, "prod")
        store.save_artifact({"lr": 0.01}, "config", tags=["prod"])
        before = store.head
        last = store.run(training, n=7)
        return UIStore(path, first.id, cached.id, failed.id, last.id, before, store.head)


class _Server:
    """``artledger ui``'s application served by uvicorn in a thread on a free port."""

    def __init__(self, path: Path) -> None:
        import socket
        import threading

        import uvicorn

        from engine.ui.app import create_app

        self.store = Store.open(path, readonly=True)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        config = uvicorn.Config(
            create_app(self.store), host="127.0.0.1", port=self.port, log_level="warning"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> _Server:
        import time

        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the dashboard server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(20)
        self.store.close()


def serve(path: Path) -> _Server:
    """Start the dashboard for the store at ``path``; stopped on ``with`` exit."""
    return _Server(path)


@step
def seed_value() -> int:
    return 1


@step
def inc(x: int, by: int = 1) -> int:
    return x + by


@step
def join(a: int, b: int, c: int, d: int, e: int, f: int, g: int) -> int:
    return a + b + c + d + e + f + g


@pipeline
def wide_pipeline(depth: int = 7):
    """51 steps: a source, seven chains of seven steps, and a join."""
    x = seed_value()
    ends = []
    for branch in range(7):
        y = x
        for _ in range(depth):
            y = inc(y, by=branch + 1)
        ends.append(y)
    join(*ends)


def build_wide(path: Path) -> str:
    """A store holding one run of the 51-step pipeline; its run id."""
    with Store.open(path) as store:
        return str(store.run(wide_pipeline).id)
