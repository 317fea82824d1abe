"""The folder watcher in-process: names, samples, stability, links, markers, source health."""

from __future__ import annotations

import os
import shutil
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from chromowatch.service.ledger import Candidate
from chromowatch.service.samples import SampleRules
from chromowatch.service.watch import IgnoreRules, StabilityTracker, Watcher, root_problem
from chromowatch.settings import SamplesSettings, Settings

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 100 + b"IEND\xaeB`\x82"


# Watcher, daemon and ledger threads must all stop when a test ends (conftest.py).
pytestmark = pytest.mark.usefixtures("no_thread_leaks")


def test_ignore_rules_and_image_names() -> None:
    rules = IgnoreRules(Settings(watch={"ignore_patterns": ["scratch*"]}))
    for name in (".DS_Store", "._a.png", "Thumbs.db", "@eaDir", "a.png.part", "x.tmp",
                 "b.crdownload", "~lock.png", "scratch1.png"):
        assert rules.ignored(name), name
    assert not rules.ignored("spread_001.png")
    assert rules.is_image_name("A.TIF") and not rules.is_image_name("notes.txt")


def test_sample_rules_default_custom_and_unmatched() -> None:
    root = Path("/in")
    default = SampleRules(SamplesSettings())
    assert default.place(root, root / "S1" / "images" / "a.png").sample == "S1"  # type: ignore[union-attr]
    assert default.place(root, root / "loose.png").sample == "unsorted"  # type: ignore[union-attr]
    assert SampleRules(SamplesSettings(unmatched="")).place(root, root / "loose.png") is None
    custom = SampleRules(SamplesSettings(
        pattern=r"^(?P<sample>[^/]+)/slide(?P<slide>\d+)/(?P<metaphase>m\d+)\."))
    got = custom.place(root, root / "tk6-ctl" / "slide2" / "m07.png")
    assert got is not None and got.sample == "tk6-ctl" and got.metaphase == "2/m07"
    assert default.is_marker("DONE") and not default.is_marker("done.png")


def test_sample_pattern_must_name_a_sample() -> None:
    with pytest.raises(ValueError, match="sample"):
        SamplesSettings(pattern=r"^([^/]+)/")


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_stability_waits_for_unchanged_size_and_mtime(tmp_path: Path) -> None:
    clock = FakeClock()
    tracker = StabilityTracker(stable_s=5.0, closed_stable_s=1.0, clock=clock)
    f = tmp_path / "a.png"
    f.write_bytes(b"12")
    st = f.stat()
    tracker.track(Candidate(str(f), str(tmp_path), "s", None, st.st_size, st.st_mtime))
    clock.t += 4
    assert tracker.check() == ([], [])
    with f.open("ab") as fh:  # still being written
        fh.write(b"345")
    clock.t += 1.5
    assert tracker.check()[0] == []  # changed: the wait starts again
    clock.t += 4.9
    assert tracker.check()[0] == []
    clock.t += 0.2
    stable, vanished = tracker.check()
    assert [(c.path, size) for c, size, _ in stable] == [(str(f), 5)] and vanished == []
    assert len(tracker) == 0


def test_close_event_shortens_the_wait_and_vanished_files_are_reported(tmp_path: Path) -> None:
    clock = FakeClock()
    tracker = StabilityTracker(stable_s=5.0, closed_stable_s=1.0, clock=clock)
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    for f in (a, b):
        f.write_bytes(b"x")
        tracker.track(Candidate(str(f), str(tmp_path), "s", None, 1, f.stat().st_mtime),
                      fast=f is a)
    b.unlink()
    clock.t += 1.1
    stable, vanished = tracker.check()
    assert [c.path for c, _, _ in stable] == [str(a)]
    assert vanished == []  # b is not due yet
    clock.t += 5
    assert tracker.check() == ([], [str(b)])


def test_root_problem(tmp_path: Path) -> None:
    assert root_problem(tmp_path, expect_mount=False) is None
    assert root_problem(tmp_path / "nope", expect_mount=False) == "missing"
    (tmp_path / "f").write_text("x")
    assert root_problem(tmp_path / "f", expect_mount=False) == "not a folder"
    assert "not mounted" in (root_problem(tmp_path, expect_mount=True) or "")


# -- the watcher thread with real observers ----------------------------------------------


def _settings(tmp_path: Path, inbox: Path, **watch: Any) -> Settings:
    return Settings(
        paths={"data_dir": str(tmp_path / "data")},
        watch={"roots": [str(inbox)], "stable_s": 0.4, "closed_stable_s": 0.2,
               "health_interval_s": 0.2, "rescan_interval_s": 60, **watch},
    )


def _rows(db: Path) -> dict[str, tuple[str, str | None]]:
    if not db.exists():
        return {}
    conn = sqlite3.connect(db)
    try:
        return {p: (s, e) for p, s, e in conn.execute(
            "SELECT path, state, last_error FROM watched_files")}
    except sqlite3.OperationalError:
        return {}
    finally:
        conn.close()


def _wait(pred: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    d = tmp_path / "inbox"
    (d / "S1").mkdir(parents=True)
    return d


def test_watcher_takes_stable_files_renames_links_and_markers(tmp_path: Path,
                                                              inbox: Path) -> None:
    settings = _settings(tmp_path, inbox)
    db = settings.paths.db
    outside = tmp_path / "outside.png"
    outside.write_bytes(PNG)
    (inbox / "S1" / "before.png").write_bytes(PNG + b"0")  # found by the startup scan
    w = Watcher(settings)
    w.start()
    try:
        _wait(lambda: _rows(db).get(str(inbox / "S1" / "before.png"), ("",))[0] == "stable")
        # slow writer: not stable while it grows
        slow = inbox / "S1" / "slow.png"
        with slow.open("wb") as fh:
            for i in range(6):
                fh.write(PNG[:20] + bytes([i]) * 10)
                fh.flush()
                time.sleep(0.15)
                assert _rows(db).get(str(slow), ("seen",))[0] == "seen"
        # renamed into place (a partial name first: ignored)
        part = inbox / "S1" / "moved.png.part"
        part.write_bytes(PNG + b"1")
        os.rename(part, inbox / "S1" / "moved.png")
        (inbox / "S1" / "notes.txt").write_text("not an image")
        (inbox / "S1" / "link.png").symlink_to(outside)
        (inbox / "S1" / "DONE").write_text("")
        _wait(lambda: all(_rows(db).get(str(inbox / "S1" / n), ("",))[0] in ("stable",
                                                                          "quarantined")
                          for n in ("slow.png", "moved.png", "link.png")))
        rows = _rows(db)
        assert rows[str(inbox / "S1" / "link.png")][0] == "quarantined"
        assert "outside the watch root" in (rows[str(inbox / "S1" / "link.png")][1] or "")
        assert str(part) not in rows and str(inbox / "S1" / "notes.txt") not in rows
        conn = sqlite3.connect(db)
        closed = conn.execute("SELECT close_reason FROM sample_state WHERE name='S1'").fetchone()
        conn.close()
        assert closed is not None and closed[0].startswith("marker")
    finally:
        w.stop()


def test_root_removed_is_offline_and_rescanned_when_back(tmp_path: Path, inbox: Path) -> None:
    settings = _settings(tmp_path, inbox)
    w = Watcher(settings)
    w.start()
    try:
        _wait(lambda: w.health[inbox].online)
        shutil.rmtree(inbox)
        _wait(lambda: not w.health[inbox].online)
        assert w.health[inbox].problem == "missing"
        (inbox / "S2").mkdir(parents=True)
        (inbox / "S2" / "back.png").write_bytes(PNG)
        _wait(lambda: _rows(settings.paths.db).get(str(inbox / "S2" / "back.png"),
                                                   ("",))[0] == "stable")
        assert w.health[inbox].online
        # a dead observer is noticed and replaced
        obs = w._observers[inbox]
        obs.stop()
        _wait(lambda: w.health[inbox].observer_restarts == 1)
        (inbox / "S2" / "after.png").write_bytes(PNG + b"2")
        _wait(lambda: _rows(settings.paths.db).get(str(inbox / "S2" / "after.png"),
                                                   ("",))[0] == "stable")
    finally:
        w.stop()


@pytest.mark.parametrize(("poll_s", "rescan_s"), [(0.3, 3600.0), (3600.0, 1.0)],
                         ids=["polling", "rescan-only"])
def test_polling_and_rescan_find_files_without_events(tmp_path: Path, inbox: Path,
                                                      poll_s: float, rescan_s: float) -> None:
    # polling mode sends no native events; in rescan-only the poller never looks again,
    # so only the periodic rescan can see the file
    settings = _settings(tmp_path, inbox, mode="polling", poll_interval_s=poll_s,
                         rescan_interval_s=rescan_s)
    w = Watcher(settings)
    w.start()
    try:
        _wait(lambda: w.scans_done >= 1)
        (inbox / "S1" / "late.png").write_bytes(PNG)
        _wait(lambda: _rows(settings.paths.db).get(str(inbox / "S1" / "late.png"),
                                                   ("",))[0] == "stable")
    finally:
        w.stop()
