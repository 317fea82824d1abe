"""Screenshots of the web app for the README: `python scripts/web_screenshots.py OUT_DIR`.

Runs `chromowatch web` on a free port against the configured data directory (a store with
processed spreads, e.g. ddx11), logs in as a user `screenshots` (created when absent, role
reviewer) and saves review.png and spread.png. Needs playwright and /usr/bin/chromium.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import sync_playwright

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
PASSWORD = "screenshots-only"


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".pw") as pw:
        pw.write(PASSWORD + "\n")
        pw.flush()
        subprocess.run([sys.executable, "-m", "chromowatch", "-q", "users", "add", "screenshots",
                        "--role", "reviewer", "--password-file", pw.name], check=False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "chromowatch", "web", "--port", str(port)],
                              env=os.environ.copy())
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(url + "/login", timeout=1)
                break
            except OSError:
                time.sleep(0.2)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
            page = browser.new_page(base_url=url, viewport={"width": 1280, "height": 900})
            page.goto("/login")
            page.fill("input[name=username]", "screenshots")
            page.fill("input[name=password]", PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_url(url + "/")
            sample = page.inner_text("td.name")
            page.goto(f"/samples/{sample}/review")
            for key in ("2", "3", "Enter"):
                page.keyboard.press(key)
            page.wait_for_selector('#grid[data-saved="3"]')
            page.screenshot(path=str(out / "web-review.png"))
            page.click(".tile.focused a.spread")
            page.wait_for_selector("#spread g.box")
            page.query_selector_all("#spread g.box rect")[5].click()
            page.screenshot(path=str(out / "web-spread.png"), full_page=True)
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
