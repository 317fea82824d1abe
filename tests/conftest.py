"""Shared fixtures: real data location, GPU skipping, isolated settings."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def real_data_dir() -> Path:
    return Path(os.environ.get("CHROMOWATCH_REAL_DATA", REPO.parent / "shared" / "data"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except Exception:
        has_cuda = False
    skip_gpu = pytest.mark.skip(reason="needs CUDA; none available on this machine")
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def real_data() -> Path:
    """../shared/data; skips when absent, fails when CHROMOWATCH_REQUIRE_REAL_DATA=1 (CI)."""
    root = real_data_dir()
    if not (root / "ddx11").is_dir() or not (root / "ikemoto2023").is_dir():
        msg = f"real data not found at {root} (set CHROMOWATCH_REAL_DATA)"
        if os.environ.get("CHROMOWATCH_REQUIRE_REAL_DATA") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    return root


@pytest.fixture(autouse=True)
def _isolated_env(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No test reads the user's config or writes to the user's data directory."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / "data"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / "cache"))
    for key in list(os.environ):
        if key.startswith("CHROMOWATCH_") and key not in (
            "CHROMOWATCH_REAL_DATA",
            "CHROMOWATCH_REQUIRE_REAL_DATA",
        ):
            monkeypatch.delenv(key)


@pytest.fixture
def no_thread_leaks() -> Iterator[None]:
    """Fails a test that leaves threads running (watchdog's own tests do the same)."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        leaked = [t for t in threading.enumerate() if t not in before and t.is_alive()]
        if not leaked:
            return
        time.sleep(0.05)
    pytest.fail(f"test leaked threads: {leaked}")
