"""The dashboard over HTTP: the real server on a free port, JSON and HTML
pages, as_of, errors, and downloads that cannot leave an artifact's files."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

from ui_store import CSV, UIStore, build, png, serve


@pytest.fixture(scope="module")
def ui(tmp_path_factory: pytest.TempPathFactory) -> UIStore:
    return build(tmp_path_factory.mktemp("ui") / "store")


@pytest.fixture(scope="module")
def url(ui: UIStore) -> Iterator[str]:
    with serve(ui.path) as server:
        yield server.url


def get(url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def api(url: str) -> Any:
    status, _, body = get(url)
    assert status == 200, body[:300]
    return json.loads(body)


def test_runs_newest_first_with_step_counts(url: str, ui: UIStore) -> None:
    data = api(url + "/api/")
    ids = [r["id"] for r in data["runs"]]
    assert ids == [ui.last_run, ui.failed_run, ui.cached_run, ui.first_run]
    assert data["total"] == 4
    by_id = {r["id"]: r for r in data["runs"]}
    assert by_id[ui.first_run]["steps"]["completed"] == 4
    assert by_id[ui.cached_run]["steps"]["cached"] == 4
    failed = by_id[ui.failed_run]
    assert failed["status"] == "failed"
    assert failed["steps"]["failed"] == 1 and failed["steps"]["skipped"] == 1
    assert api(url + "/api/?limit=2")["next_before"] is not None


def test_run_page_graph_reasons_events(url: str, ui: UIStore) -> None:
    data = api(f"{url}/api/runs/{ui.failed_run}")
    status = {s["invocation"]: s["status"] for s in data["steps"]}
    assert status == {
        "load": "completed",
        "report": "completed",
        "train": "failed",
        "evaluate": "skipped",
    }
    load = next(s for s in data["steps"] if s["invocation"] == "load")
    assert any("n" in r for r in load["reasons"]), load["reasons"]
    kinds = {n["kind"] for n in data["graph"]["nodes"].values()}
    assert kinds == {"step", "artifact"} and data["graph"]["edges"]
    types = [e["type"] for e in data["events"]]
    assert types[0] == "run.started" and types[-1] == "run.failed"
    assert "step.failed" in types
    status_code, _, html = get(f"{url}/runs/{ui.failed_run}")
    assert status_code == 200 and b"<svg" in html and b'data-status="failed"' in html


def test_artifacts_filter_by_name_and_tag(url: str) -> None:
    names = [a["name"] for a in api(url + "/api/artifacts")["artifacts"]]
    assert "config" in names and "training.report.output" in names
    assert names == sorted(names)
    tagged = api(url + "/api/artifacts?tag=prod")["artifacts"]
    assert {a["name"] for a in tagged} == {"config", "training.report.output"}
    only = api(url + "/api/artifacts?name=report")["artifacts"]
    assert [a["name"] for a in only] == ["training.report.output"]
    assert only[0]["version"] == 3 and only[0]["versions"] == 3
    assert only[0]["stored"] > 0 and only[0]["size"] > 0


def test_artifact_page(url: str) -> None:
    data = api(url + "/api/artifacts/training.report.output/1")
    a = data["artifact"]
    assert a["type"] == "statistics" and "ReportMaterializer" in a["materializer"]
    assert a["tags"] == ["prod"] and len(a["content_hash"]) == 32
    assert {f["name"] for f in data["files"]} == {"report.txt", "parts/extra.bin"}
    assert data["producer"]["invocation"] == "report"
    kinds = {v["name"]: v["kind"] for v in data["visualizations"]}
    assert kinds["curve.png"] == "image" and kinds["page.html"] == "html"
    status, _, html = get(url + "/artifacts/training.report.output/1")
    assert status == 200
    assert b"<td>0.25</td>" in html  # csv as a table
    assert b"<em>loss</em>" in html and b"<script>bad()" not in html  # markdown, no raw html
    assert b'sandbox="allow-scripts"' in html


def test_visualization_and_file_bytes(url: str) -> None:
    data = api(url + "/api/artifacts/training.report.output/1")
    aid = data["artifact"]["id"]
    idx = {v["name"]: v["index"] for v in data["visualizations"]}
    status, headers, body = get(f"{url}/vis/{aid}/{idx['curve.png']}")
    assert status == 200 and body == png() and headers["content-type"] == "image/png"
    assert headers["content-security-policy"].startswith("sandbox")
    status, headers, _ = get(f"{url}/vis/{aid}/{idx['page.html']}")
    assert headers["content-security-policy"].startswith("sandbox allow-scripts")
    assert "allow-same-origin" not in headers["content-security-policy"]
    status, headers, body = get(f"{url}/vis/{aid}/{idx['losses.csv']}")
    assert body == CSV.encode()
    status, headers, body = get(f"{url}/files/{aid}/report.txt")
    assert status == 200 and body == b"5 rows"
    assert headers["content-disposition"].startswith("attachment")
    assert get(f"{url}/files/{aid}/parts/extra.bin")[2] == b"\x00\x01\x02"


@pytest.mark.parametrize(
    "tail",
    [
        "../report.txt",
        "..%2Freport.txt",
        "parts/../report.txt",
        "parts%2F..%2F..%2Fsecret",
        "%2Fetc%2Fpasswd",
        "/etc/passwd",
        "..%2F..%2F..%2F..%2Fetc%2Fpasswd",
        "parts/%2e%2e/%2e%2e/secret",
        "report.txt%00",
        "secret",
        "..",
    ],
)
def test_download_traversal_refused(url: str, ui: UIStore, tail: str) -> None:
    aid = api(url + "/api/artifacts/training.report.output/1")["artifact"]["id"]
    status, _, body = get(f"{url}/files/{aid}/{tail}")
    assert status in (400, 404), (tail, status)
    assert b"root:" not in body and (ui.path / "secret").read_bytes() not in body


def test_lineage(url: str) -> None:
    up = api(url + "/api/lineage/training.evaluate.output/1?direction=upstream")
    names = {n["name"] for n in up["graph"]["nodes"].values()}
    assert {"training.load.output", "train", "evaluate"} <= names
    down = api(url + "/api/lineage/training.load.output/1?direction=downstream")
    names = {n["name"] for n in down["graph"]["nodes"].values()}
    assert {"training.report.output", "training.evaluate.output"} <= names
    status, _, html = get(url + "/lineage/training.load.output/1?direction=downstream")
    assert status == 200 and b"<svg" in html and b"/lineage/training.report.output/1" in html
    assert get(url + "/api/lineage/training.load.output/1?direction=sideways")[0] == 400


def test_as_of_hides_later_run_and_keeps_links(url: str, ui: UIStore) -> None:
    past = api(f"{url}/api/?as_of={ui.before_last}")
    assert ui.last_run not in [r["id"] for r in past["runs"]] and len(past["runs"]) == 3
    _status, _, html = get(f"{url}/?as_of={ui.before_last}")
    assert f"/runs/{ui.first_run}?as_of={ui.before_last}".encode() in html
    assert get(f"{url}/api/runs/{ui.last_run}?as_of={ui.before_last}")[0] == 404
    arts = api(f"{url}/api/artifacts?name=report&as_of={ui.before_last}")["artifacts"]
    assert arts[0]["version"] == 2
    early = api(f"{url}/api/artifacts?tag=prod&as_of={ui.before_last - 1}")["artifacts"]
    assert [a["name"] for a in early] == ["training.report.output"]
    log = api(f"{url}/api/log?as_of={ui.before_last}")
    assert log["events"][0]["seq"] == ui.before_last
    stamp = past["runs"][0]["started"]
    assert api(f"{url}/api/?as_of={stamp.replace('+00:00', 'Z')}")["runs"]


@pytest.mark.parametrize("value", ["abc", "-1", "999999", "2026-13-40"])
def test_bad_as_of_is_400(url: str, value: str) -> None:
    status, _, body = get(f"{url}/api/?as_of={value}")
    assert status == 400 and "as_of" in json.loads(body)["error"]
    assert get(f"{url}/?as_of={value}")[0] == 400


def test_missing_things_are_404_with_the_api_message(url: str) -> None:
    status, _, body = get(url + "/api/runs/nope")
    assert status == 404 and "no run with id 'nope'" in json.loads(body)["error"]
    status, _, body = get(url + "/artifacts/training.report.output/99")
    assert status == 404 and b"has no version 99" in body
    status, _, body = get(url + "/api/artifacts/no.such/1")
    assert status == 404 and "no artifact named" in json.loads(body)["error"]
    assert get(url + "/nowhere")[0] == 404


def test_log_pages_and_polling(url: str, ui: UIStore) -> None:
    first = api(url + "/api/log?limit=10")
    seqs = [e["seq"] for e in first["events"]]
    assert seqs == list(range(ui.head, ui.head - 10, -1))
    older = api(f"{url}/api/log?limit=10&before={first['next_before']}")
    assert older["events"][0]["seq"] == ui.head - 10
    new = api(f"{url}/api/log?after={ui.head - 3}")
    assert [e["seq"] for e in new["events"]] == [ui.head, ui.head - 1, ui.head - 2]


def test_pages_send_a_strict_csp(url: str) -> None:
    _, headers, _ = get(url + "/")
    csp = headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp.split("style-src")[0]


def test_the_dashboard_never_writes(ui: UIStore) -> None:
    data = ui.path / "ledger" / "data.mdb"
    before = data.read_bytes()
    with serve(ui.path) as server:
        for page in ("/", "/artifacts", "/log", "/?as_of=3", f"/runs/{ui.first_run}"):
            assert get(server.url + page)[0] == 200
    assert data.read_bytes() == before


def test_cli_refuses_a_missing_store(tmp_path: Path) -> None:
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "engine.cli",
            "--store",
            str(tmp_path / "none"),
            "ui",
            "--port",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 1 and "no store at" in r.stderr and "--store" in r.stderr
    assert not (tmp_path / "none").exists()


def test_import_engine_does_not_import_starlette() -> None:
    code = "import engine, engine.cli.main, sys; engine.Store; print('starlette' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == "False", r.stderr


def test_cli_serves_until_interrupted(ui: UIStore) -> None:
    import signal
    import socket
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "--store", str(ui.path), "ui", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                data = api(f"http://127.0.0.1:{port}/api/")
                break
            except (urllib.error.URLError, ConnectionError):
                assert proc.poll() is None, proc.communicate()[1]
                assert time.monotonic() < deadline, "artledger ui did not start"
                time.sleep(0.1)
        assert data["runs"][0]["id"] == ui.last_run
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert f"http://127.0.0.1:{port}/" in err
