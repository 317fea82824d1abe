"""Long runs of the real daemon process (pytest -m slow): 500 files at once, kill -9 in the
middle of a larger backlog."""

from __future__ import annotations

import signal
from pathlib import Path

import numpy as np
import pytest

from tests.service.test_daemon import (  # noqa: F401 (fixtures are used by name)
    DaemonProcess,
    base_spreads,
    env,
    finished,
    kill_9_after,
    models_dir,
    one_shot,
    restart_until_finished,
    results_by_content,
    spread_bytes,
    states,
    wait_for,
)

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("no_thread_leaks")]


def test_500_files_dropped_at_once_are_all_processed_once(
        env: dict[str, Path], base_spreads: list[np.ndarray]) -> None:  # noqa: F811
    inbox, db = env["inbox"], env["db"]
    staging = env["tmp"] / "staging"
    staging.mkdir()
    blobs = spread_bytes(base_spreads, 500, offset=10_000)
    for i, blob in enumerate(blobs):
        (staging / f"d{i:03d}.png").write_bytes(blob)
    config = env["config"]
    config.write_text(config.read_text().replace("workers = 1\n", "workers = 2\n"))
    d = DaemonProcess(config, env["tmp"])
    try:
        d.wait_ready()
        for f in sorted(staging.iterdir()):  # dropped at once: renamed in
            f.rename(inbox / "S1" / f.name)
        wait_for(finished(db, 500), 1500, "500 files")
        d.signal(signal.SIGTERM)
        assert d.wait(120) == 0
    finally:
        d.close()
    st = states(db)
    assert len(st) == 500 and set(st.values()) == {"done"}
    assert len(results_by_content(db)) == 500  # each content stored exactly once


def test_kill_9_in_a_large_backlog_then_restart_matches_one_shot(
        env: dict[str, Path], base_spreads: list[np.ndarray]) -> None:  # noqa: F811
    inbox, db = env["inbox"], env["db"]
    blobs = spread_bytes(base_spreads, 60, offset=20_000)
    paths = [inbox / "S1" / f"k{i:02d}.png" for i in range(len(blobs))]
    for p, blob in zip(paths, blobs, strict=True):
        p.write_bytes(blob)
    for kill_after in (5, 25):  # killed twice, at different depths of the backlog
        kill_9_after(env, kill_after, 300)
    assert sum(s == "done" for s in states(db).values()) < len(paths)
    restart_until_finished(env, len(paths), 600)
    assert results_by_content(db) == one_shot(env, paths, env["tmp"])
