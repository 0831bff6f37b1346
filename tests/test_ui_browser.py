"""The dashboard in a real headless browser (Debian's chromium and
chromium-driver, driven by selenium) against the real server on a free port.

With ``ARTLEDGER_SCREENSHOTS=DIR`` set, screenshots of the main pages are
written to DIR (docs/img holds the committed ones).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("starlette")
webdriver = pytest.importorskip("selenium.webdriver")

from selenium.webdriver.common.by import By  # noqa: E402
from ui_store import UIStore, build, serve  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
pytestmark = pytest.mark.skipif(
    not (Path(CHROMIUM).exists() and Path(DRIVER).exists()),
    reason="needs chromium and chromium-driver (apt-get install chromium chromium-driver)",
)
SHOTS = os.environ.get("ARTLEDGER_SCREENSHOTS")


@pytest.fixture(scope="module")
def ui(tmp_path_factory: pytest.TempPathFactory) -> UIStore:
    return build(tmp_path_factory.mktemp("uib") / "store")


@pytest.fixture(scope="module")
def url(ui: UIStore) -> Iterator[str]:
    with serve(ui.path) as server:
        yield server.url


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    opts.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1360,900",
        "--hide-scrollbars",
    ):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=opts)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(cond: Callable[[], Any], timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the page")
        time.sleep(0.1)


def shot(browser: Any, name: str) -> None:
    if not SHOTS:
        return
    out = Path(SHOTS)
    out.mkdir(parents=True, exist_ok=True)
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1360, min(max(int(height) + 20, 600), 1600))
    browser.save_screenshot(str(out / f"{name}.png"))
    browser.set_window_size(1360, 900)


def test_runs_page_lists_runs(browser: Any, url: str, ui: UIStore) -> None:
    browser.get(url + "/")
    rows = browser.find_elements(By.CSS_SELECTOR, "#runs tr.run")
    assert rows[0].get_attribute("data-id") == ui.last_run
    assert len(rows) == 4
    assert "failed" in rows[1].text
    shot(browser, "runs")


def test_run_page_draws_the_dag_with_statuses(browser: Any, url: str, ui: UIStore) -> None:
    browser.get(f"{url}/runs/{ui.failed_run}")
    nodes = browser.find_elements(By.CSS_SELECTOR, "#dag svg g.node")
    status = {
        n.find_element(By.TAG_NAME, "title")
        .get_attribute("textContent")
        .split(":")[0]: n.get_attribute("data-status")
        for n in nodes
    }
    assert status["train"] == "failed" and status["evaluate"] == "skipped"
    assert status["load"] == "completed"
    svg = browser.find_element(By.CSS_SELECTOR, "#dag svg")
    assert svg.size["width"] > 100 and svg.size["height"] > 100
    failed = browser.find_element(By.CSS_SELECTOR, "#dag g.node.failed rect")
    assert failed.value_of_css_property("fill") == "rgb(209, 67, 67)"
    assert "training diverged" in browser.find_element(By.ID, "steps").text
    shot(browser, "run-failed")
    browser.get(f"{url}/runs/{ui.cached_run}")
    cached = browser.find_elements(By.CSS_SELECTOR, "#dag g.node.cached")
    assert len(cached) == 4
    browser.get(f"{url}/runs/{ui.first_run}")
    shot(browser, "run")


def test_artifact_page_shows_visualizations(browser: Any, url: str) -> None:
    browser.get(url + "/artifacts/training.report.output/1")
    img = browser.find_element(By.CSS_SELECTOR, ".vis-image img")
    loaded = wait_for(
        lambda: browser.execute_script(
            "const i = arguments[0]; return i.complete && i.naturalWidth > 0 && i.naturalWidth;",
            img,
        )
    )
    assert loaded == 160
    cells = [td.text for td in browser.find_elements(By.CSS_SELECTOR, "table.csv tbody td")]
    assert cells[:2] == ["1", "0.9"] and len(cells) == 6
    headers = [th.text for th in browser.find_elements(By.CSS_SELECTOR, "table.csv th")]
    assert headers == ["epoch", "loss"]
    assert browser.find_element(By.CSS_SELECTOR, ".vis-markdown h1").text == "Notes"
    assert '"epochs": 3' in browser.find_element(By.CSS_SELECTOR, ".vis-json pre").text
    shot(browser, "artifact")


def test_html_visualization_cannot_touch_the_page(browser: Any, url: str) -> None:
    browser.get(url + "/artifacts/training.report.output/1")
    title = browser.title
    frame = browser.find_element(By.CSS_SELECTOR, ".vis-html iframe")
    browser.switch_to.frame(frame)
    try:
        wait_for(lambda: browser.find_elements(By.ID, "inside"))
        # It runs (in the sandbox) but in an opaque origin, not the dashboard's.
        assert browser.execute_script("return window.origin") == "null"
    finally:
        browser.switch_to.default_content()
    time.sleep(0.5)
    assert browser.execute_script("return document.body.getAttribute('data-pwned')") is None
    assert browser.title == title


def test_artifacts_page_filters(browser: Any, url: str) -> None:
    browser.get(url + "/artifacts")
    names = [
        r.get_attribute("data-name") for r in browser.find_elements(By.CSS_SELECTOR, "tr.artifact")
    ]
    assert "config" in names
    shot(browser, "artifacts")
    box = browser.find_element(By.NAME, "tag")
    box.send_keys("prod")
    box.submit()
    wait_for(lambda: "tag=prod" in browser.current_url)
    names = [
        r.get_attribute("data-name") for r in browser.find_elements(By.CSS_SELECTOR, "tr.artifact")
    ]
    assert names == ["config", "training.report.output"]


def test_lineage_page(browser: Any, url: str) -> None:
    browser.get(url + "/lineage/training.evaluate.output/1?direction=upstream")
    labels = [n.text for n in browser.find_elements(By.CSS_SELECTOR, "#lineage g.node")]
    assert any("training.load.output" in t for t in labels)
    shot(browser, "lineage")
    node = browser.find_element(By.CSS_SELECTOR, "#lineage a g.node.artifact:not(.root)")
    node.find_element(By.TAG_NAME, "rect").click()
    wait_for(lambda: "training.evaluate.output" not in browser.current_url)
    assert "/lineage/" in browser.current_url and "direction=upstream" in browser.current_url


def test_slider_goes_back_in_history(browser: Any, url: str, ui: UIStore) -> None:
    browser.get(url + "/")
    assert ui.last_run in browser.find_element(By.ID, "runs").get_attribute("innerHTML")
    browser.execute_script(
        "const s = document.getElementById('as-of'); s.value = arguments[0];"
        "s.dispatchEvent(new Event('input')); s.dispatchEvent(new Event('change'));",
        ui.before_last,
    )
    wait_for(lambda: f"as_of={ui.before_last}" in browser.current_url)
    ids = [
        r.get_attribute("data-id") for r in browser.find_elements(By.CSS_SELECTOR, "#runs tr.run")
    ]
    assert ui.last_run not in ids and ids[0] == ui.failed_run
    assert f"as of event {ui.before_last}" in browser.find_element(By.ID, "as-of-label").text
    shot(browser, "runs-as-of")
    browser.find_element(By.CSS_SELECTOR, f"tr[data-id='{ui.first_run}'] a").click()
    wait_for(lambda: "/runs/" in browser.current_url)
    assert f"as_of={ui.before_last}" in browser.current_url
    browser.find_element(By.ID, "live-link").click()
    wait_for(lambda: "as_of" not in browser.current_url)
    assert browser.current_url.endswith(f"/runs/{ui.first_run}")
    browser.find_element(By.LINK_TEXT, "Runs").click()
    wait_for(lambda: browser.find_elements(By.ID, "runs"))
    assert ui.last_run in browser.find_element(By.ID, "runs").get_attribute("innerHTML")


def test_download_traversal_is_refused(browser: Any, url: str, ui: UIStore) -> None:
    browser.get(url + "/api/artifacts/training.report.output/1")
    aid = browser.execute_script("return JSON.parse(document.body.innerText).artifact.id")
    for tail in ("..%2F..%2Fsecret", "%2Fetc%2Fpasswd", "parts%2F..%2Freport.txt"):
        browser.get(f"{url}/files/{aid}/{tail}")
        text = browser.find_element(By.TAG_NAME, "body").text
        assert "404" in text or "400" in text, text
        assert "root:" not in text


def test_log_updates_live(browser: Any, url: str, ui: UIStore) -> None:
    browser.get(url + "/log")
    first = browser.find_element(By.CSS_SELECTOR, "#log tbody tr").get_attribute("data-seq")
    assert int(first) == ui.head
    shot(browser, "log")
    code = (
        "import sys; from engine import Store\n"
        "with Store.open(sys.argv[1]) as s: s.save_artifact([1, 2], 'late.arrival')\n"
    )
    subprocess.run([sys.executable, "-c", code, str(ui.path)], check=True, timeout=60)
    wait_for(lambda: "late.arrival" in browser.find_element(By.ID, "log").text, timeout=20)
    top = browser.find_element(By.CSS_SELECTOR, "#log tbody tr").get_attribute("data-seq")
    assert int(top) > ui.head


def test_a_fifty_step_pipeline_is_readable(
    browser: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from ui_store import build_wide

    path = tmp_path_factory.mktemp("wide") / "store"
    run_id = build_wide(path)
    with serve(path) as server:
        browser.get(f"{server.url}/runs/{run_id}")
        boxes = browser.execute_script(
            "return [...document.querySelectorAll('#dag g.node rect')].map(r => {"
            "const b = r.getBBox(); return [b.x, b.y, b.width, b.height]; });"
        )
        steps = browser.find_elements(By.CSS_SELECTOR, "#dag g.node.completed")
        assert len(steps) == 51
        for i, (x1, y1, w1, h1) in enumerate(boxes):
            for x2, y2, _, _ in boxes[i + 1 :]:
                assert abs(x1 - x2) >= w1 or abs(y1 - y2) >= h1, "nodes overlap"
        labels = {n.text.split("\n")[0] for n in steps}
        assert {"seed_value", "inc", "inc_49", "join"} <= labels
        shot(browser, "run-51-steps")
