"""The review web app on a 2,000-crop sample: how long the review page and a label save take.

    .venv/bin/python benchmarks/web.py [--crops 2000] [--pages 20] [--saves 200]

A store with one sample of N crops (random predictions, one small PNG per crop), a reviewer,
and the app in process (Starlette's TestClient: each time is a whole request through the
app, middleware and session included, with the client's own small overhead: an upper bound
of the server's time). Measured: the review page (the queue's next page picked, recorded and
leased), each page answered with "accept all" before the next; a label saved by
`POST /api/action` (the key 1/2/3); the samples page (counts, correction, 'looks new').
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from starlette.testclient import TestClient  # noqa: E402

from chromowatch.settings import Settings  # noqa: E402
from chromowatch.web.app import create_app  # noqa: E402
from tests.web.helpers import PASSWORD, add_users, fill_store  # noqa: E402


def _ms(seconds: list[float]) -> str:
    q = statistics.quantiles(seconds, n=20) if len(seconds) > 1 else seconds * 19
    return (f"median {statistics.median(seconds) * 1000:.1f} ms, p95 {q[18] * 1000:.1f} ms, "
            f"max {max(seconds) * 1000:.1f} ms (n={len(seconds)})")


def _login(settings: Settings) -> tuple[TestClient, str]:
    client = TestClient(create_app(settings))
    token = re.findall(r'name="csrf-token" content="([^"]+)"', client.get("/login").text)[0]
    r = client.post("/login", data={"username": "alice", "password": PASSWORD,
                                    "csrf_token": token})
    assert r.status_code == 200, r.text
    token = re.findall(r'name="csrf-token" content="([^"]+)"', r.text)[0]
    return client, token


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--crops", type=int, default=2000)
    ap.add_argument("--pages", type=int, default=20)
    ap.add_argument("--saves", type=int, default=200)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        settings = Settings.model_validate({"paths": {"data_dir": str(root)}})
        fill_store(settings, root, "big", args.crops)
        add_users(settings, alice="reviewer")
        client, token = _login(settings)
        headers = {"X-CSRF-Token": token}
        pages, saves, ids = [], [], []
        for _ in range(args.pages):
            t0 = time.perf_counter()
            page = client.get("/samples/big/review")
            pages.append(time.perf_counter() - t0)
            tiles = [int(x) for x in re.findall(r'data-crop="(\d+)"', page.text)]
            ids += tiles
            client.post("/api/accept", json={"crop_ids": tiles}, headers=headers)
        for i in range(args.saves):
            t0 = time.perf_counter()
            r = client.post("/api/action", json={"crop_id": ids[i % len(ids)], "action": "label",
                                                 "class": "ABC"[i % 3]}, headers=headers)
            saves.append(time.perf_counter() - t0)
            assert r.status_code == 200
        samples = []
        for _ in range(3):
            t0 = time.perf_counter()
            client.get("/")
            samples.append(time.perf_counter() - t0)
    load = os.getloadavg()[0]
    print(f"{args.crops}-crop sample; {platform.python_version()}, {os.cpu_count()} CPU(s), "
          f"load average {load:.1f}")
    print(f"review page (24 tiles):  {_ms(pages)}")
    print(f"label save:              {_ms(saves)}")
    print(f"samples page:            {_ms(samples)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
