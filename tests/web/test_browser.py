"""The review app in a real browser: Debian's chromium driven by Playwright against a real
`chromowatch web` on 127.0.0.1. Skipped when chromium or playwright is missing, unless
CHROMOWATCH_REQUIRE_BROWSER=1 (CI), where that is a failure."""

from __future__ import annotations

import csv
import io
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chromowatch.settings import Settings
from tests.web.helpers import PASSWORD, add_users, fill_store

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
REQUIRE = os.environ.get("CHROMOWATCH_REQUIRE_BROWSER") == "1"  # read before fixtures clear it
XSS = "<script>alert(1)</script>"


def _need_browser() -> Any:
    reason = ""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        reason = "playwright is not installed (pip install playwright)"
    if not reason and not Path(CHROMIUM).exists():
        reason = f"{CHROMIUM} is missing (apt-get install chromium)"
    if reason:
        if REQUIRE:
            pytest.fail(reason + " and CHROMOWATCH_REQUIRE_BROWSER=1")
        pytest.skip(reason)
    return sync_playwright


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(data: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHROMOWATCH_")}
    env.update(PYTHONPATH=str(REPO), CHROMOWATCH_PATHS__DATA_DIR=str(data),
               XDG_CONFIG_HOME=str(data / "config"), CHROMOWATCH_WEB__PAGE_SIZE="24")
    return env


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """`chromowatch web` on a free port, on a store with three samples and four users."""
    sync_playwright = _need_browser()
    del sync_playwright
    data = tmp_path_factory.mktemp("web")
    settings = Settings.model_validate({"paths": {"data_dir": str(data)}})
    fill_store(settings, data, "mut", 60)
    fill_store(settings, data / "o", "other", 60)
    fill_store(settings, data / "x", XSS, 3)
    add_users(settings, alice="reviewer", bob="reviewer", carol="admin", vera="viewer")
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "chromowatch", "web", "--port", str(port)],
                            cwd=REPO, env=_env(data), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_for(url, proc)
        yield url, data
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stdout:
            proc.stdout.close()


def _wait_for(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out = proc.stdout.read().decode() if proc.stdout else ""
            pytest.fail(f"chromowatch web exited ({proc.returncode}): {out}")
        try:
            with urllib.request.urlopen(url + "/login", timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    pytest.fail("chromowatch web did not answer within 30 s")


@pytest.fixture(scope="module")
def browser(server: tuple[str, Path]) -> Iterator[Any]:
    sync_playwright = _need_browser()
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def _login(browser: Any, url: str, name: str) -> Any:
    page = browser.new_context(base_url=url).new_page()
    page.set_default_timeout(15_000)
    page.goto("/login")
    page.fill("input[name=username]", name)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(url + "/")
    return page


def _saved(page: Any, n: int) -> None:
    page.wait_for_selector(f'#grid[data-saved="{n}"]')  # no eval: the app's CSP forbids it


def _export(data: Path) -> list[dict[str, str]]:
    out = subprocess.run([sys.executable, "-m", "chromowatch", "labels", "export-csv"],
                         cwd=REPO, env=_env(data), capture_output=True, text=True, check=True)
    return list(csv.DictReader(io.StringIO(out.stdout)))


def test_label_with_keys_undo_and_accept_a_page(browser: Any, server: tuple[str, Path]
                                                 ) -> None:
    url, data = server
    page = _login(browser, url, "alice")
    page.goto("/samples/mut/review")
    ids = [int(t.get_attribute("data-crop")) for t in page.query_selector_all(".tile")]
    assert len(ids) == 24
    keys = ["1", "2", "3", "Enter"] * 5
    for key in keys:
        page.keyboard.press(key)
    _saved(page, 20)
    page.keyboard.press("Control+z")  # undoes the 20th: crop ids[19] has no label again
    _saved(page, 21)
    assert page.get_attribute(f'.tile[data-crop="{ids[19]}"]', "data-answer") == ""
    page.click("#accept-all")
    _saved(page, 22)
    rows = {int(r["crop_id"]): r for r in _export(data) if r["sample"] == "mut"}
    assert set(rows) == set(ids) and {r["who"] for r in rows.values()} == {"alice"}
    for crop_id, key in zip(ids[:19], keys, strict=False):
        if key != "Enter":
            assert rows[crop_id]["class"] == {"1": "A", "2": "B", "3": "C"}[key]
    predicted = {int(t.get_attribute("data-crop")): t.get_attribute("data-predicted")
                 for t in page.query_selector_all(".tile")}
    assert all(rows[i]["class"] == predicted[i] for i in ids[19:])
    page.context.close()


def test_a_second_reviewer_gets_different_crops(browser: Any, server: tuple[str, Path]
                                                ) -> None:
    url, _ = server
    pages = [_login(browser, url, name) for name in ("bob", "carol")]
    shown = []
    for page in pages:
        page.goto("/samples/other/review")
        shown.append({t.get_attribute("data-crop") for t in page.query_selector_all(".tile")})
        page.context.close()
    assert len(shown[0]) == len(shown[1]) == 24 and not shown[0] & shown[1]


def test_a_viewer_cannot_label(browser: Any, server: tuple[str, Path]) -> None:
    url, _ = server
    page = _login(browser, url, "vera")
    assert page.goto("/samples/mut/review").status == 403
    page.goto("/")
    status = page.evaluate("""() => fetch('/api/action', {method: 'POST', headers: {
        'Content-Type': 'application/json', 'X-CSRF-Token':
        document.querySelector('meta[name=csrf-token]').content},
        body: JSON.stringify({crop_id: 1, action: 'label', class: 'A'})}).then(r => r.status)""")
    assert status == 403
    page.context.close()


def test_anonymous_redirect_csrf_and_escaping(browser: Any, server: tuple[str, Path]) -> None:
    url, _ = server
    page = browser.new_context(base_url=url).new_page()
    page.goto("/samples/mut/review")
    assert page.url == url + "/login?next=%2Fsamples%2Fmut%2Freview"
    assert page.request.post("/login", form={"username": "alice", "password": PASSWORD}
                             ).status == 403
    page.context.close()
    page = _login(browser, url, "alice")
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    assert page.request.post("/api/undo").status == 403  # logged in, but no CSRF token
    page.goto("/")
    assert XSS in page.inner_text("table.samples")  # shown as text, not run
    page.goto("/samples/" + XSS.replace("/", "%2F") + "/review")
    assert page.inner_text("h1 .name") == XSS and not dialogs
    page.context.close()


def test_relabel_a_box_on_the_spread_page(browser: Any, server: tuple[str, Path]) -> None:
    url, data = server
    page = _login(browser, url, "carol")
    page.goto("/samples/mut/review")
    crop_id = int(page.get_attribute(".tile", "data-crop"))
    page.click(f'.tile[data-crop="{crop_id}"] a.spread')
    page.wait_for_url(f"**/images/*#crop-{crop_id}")
    other = page.query_selector_all("#spread g.box")[-1]
    other_id = int(other.get_attribute("data-crop"))
    other.query_selector("rect").click()
    page.keyboard.press("2")
    page.wait_for_selector('#spread[data-saved="1"]')
    assert page.text_content(f"#crop-{other_id} text") == "B"
    rows = {int(r["crop_id"]): r for r in _export(data)}
    assert rows[other_id]["class"] == "B" and rows[other_id]["who"] == "carol"
    page.context.close()


def test_select_several_tiles_and_answer_them_at_once(browser: Any, server: tuple[str, Path]
                                                      ) -> None:
    url, data = server
    page = _login(browser, url, "alice")
    page.goto("/samples/other/review")
    ids = [int(t.get_attribute("data-crop")) for t in page.query_selector_all(".tile")]
    for key in (" ", "ArrowRight", "ArrowRight", " ", "ArrowRight", " "):
        page.keyboard.press(key)
    assert page.locator(".tile.selected").count() == 3
    page.keyboard.press("3")
    _saved(page, 1)
    rows = {int(r["crop_id"]): r["class"] for r in _export(data)}
    assert [rows.get(i) for i in ids[:4]] == ["C", None, "C", "C"]
    assert page.locator(".tile.selected").count() == 0
    page.context.close()


def test_draw_a_missed_chromosome_on_the_spread_page(browser: Any, server: tuple[str, Path]
                                                     ) -> None:
    url, data = server
    page = _login(browser, url, "carol")
    page.goto("/samples/mut/review")
    page.click(".tile a.spread")
    page.wait_for_selector("#spread g.box")
    before = page.locator("#spread g.box").count()
    frame = page.locator("#spread").bounding_box()
    page.mouse.move(frame["x"] + 200, frame["y"] + 22)
    page.mouse.down()
    page.mouse.move(frame["x"] + 220, frame["y"] + 40, steps=4)
    page.mouse.move(frame["x"] + 240, frame["y"] + 55, steps=4)
    page.mouse.up()
    page.keyboard.press("1")
    page.wait_for_selector('#spread[data-saved="1"]')
    assert page.locator("#spread g.box").count() == before + 1
    new_id = int(page.locator("#spread g.box").last.get_attribute("data-crop"))
    row = {int(r["crop_id"]): r for r in _export(data)}[new_id]
    assert (row["class"], row["who"], row["source"], row["sample"]) == ("A", "carol", "web",
                                                                         "mut")
    page.context.close()
