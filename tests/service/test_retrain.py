"""Nightly retraining without a daemon: its command and when a night counts as missed."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from apscheduler.triggers.cron import CronTrigger

from chromowatch.service.connections import ThreadStores
from chromowatch.service.retrain import RETRAIN_JOB, Retrainer
from chromowatch.settings import Settings


def _retrainer(tmp_path: Path) -> Retrainer:
    settings = Settings(paths={"data_dir": str(tmp_path / "data")})  # type: ignore[arg-type]
    return Retrainer(settings, ThreadStores(settings.paths.db))


def test_a_clone_in_the_working_directory_does_not_shadow_the_package(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The daemon started beside a clone (its own chromowatch/ folder): the training child
    imports the installed package, not the folder (ImportError: cannot import name
    '__version__')."""
    (tmp_path / "chromowatch").mkdir()
    (tmp_path / "chromowatch" / "__init__.py").write_text("")
    (tmp_path / "chromowatch" / "__main__.py").write_text("from chromowatch import __version__\n")
    monkeypatch.chdir(tmp_path)
    r = _retrainer(tmp_path)
    try:
        ok, error = r.run_command(r.command())
    finally:
        r.stores.close_mine()
    assert ok and error is None


TRIGGER = CronTrigger.from_crontab("0 3 * * *", timezone="UTC")


def test_the_first_start_misses_nothing(tmp_path: Path) -> None:
    r = _retrainer(tmp_path)
    try:
        assert not r._missed(TRIGGER)
        # a previous run to completion (the demo) did not schedule retraining either
        r.stores.get().daemon_state_write(pid=1, started_at=time.time() - 3 * 86400,
                                          info=json.dumps({"retrain_scheduled": False}),
                                          now=time.time() - 3 * 86400, stopped=True)
        assert not r._missed(TRIGGER)
    finally:
        r.stores.close_mine()


def test_a_night_is_missed_after_a_daemon_that_scheduled_it(tmp_path: Path) -> None:
    r = _retrainer(tmp_path)
    try:
        store = r.stores.get()
        store.daemon_state_write(pid=1, started_at=time.time() - 3 * 86400,
                                 info=json.dumps({"retrain_scheduled": True}),
                                 now=time.time() - 3 * 86400, stopped=True)
        assert r._missed(TRIGGER)
        store.job_started(RETRAIN_JOB, time.time() - 2 * 86400)  # ran, then nights passed
        assert r._missed(TRIGGER)
        store.job_started(RETRAIN_JOB, time.time())  # ran since the last due time
        assert not r._missed(TRIGGER)
    finally:
        r.stores.close_mine()
