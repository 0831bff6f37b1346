"""``artledger ui --open`` opens the browser at the address actually served."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("starlette")
uvicorn = pytest.importorskip("uvicorn")

from engine import Store  # noqa: E402
from engine.cli import main  # noqa: E402


def test_open_opens_the_browser_at_the_served_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import webbrowser

    path = tmp_path / "store"
    with Store.open(path) as store:
        store.save_artifact({"a": 1}, "x")
    opened: list[str] = []
    monkeypatch.setattr(webbrowser, "open", lambda url, *a, **k: opened.append(url) or True)
    servers: list[Any] = []
    original = uvicorn.Server.__init__

    def init(self: Any, config: Any) -> None:
        original(self, config)
        servers.append(self)

    monkeypatch.setattr(uvicorn.Server, "__init__", init)

    def stop_once_opened() -> None:
        deadline = time.monotonic() + 20
        while not opened and time.monotonic() < deadline:
            time.sleep(0.05)
        if servers:
            servers[0].should_exit = True

    threading.Thread(target=stop_once_opened, daemon=True).start()
    assert main(["--store", str(path), "ui", "--port", "0", "--open"]) == 0
    assert len(opened) == 1
    host, _, port = opened[0].removeprefix("http://").rstrip("/").partition(":")
    assert host == "127.0.0.1" and int(port) > 0  # the real port, not the 0 asked for
