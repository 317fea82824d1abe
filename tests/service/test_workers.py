"""Worker processes: their log records, tracebacks included, reach the daemon's log."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from chromowatch.pipeline import PreparedImage
from chromowatch.service.workers import Task, TaskResult, WorkerPool
from chromowatch.settings import Settings

pytestmark = pytest.mark.usefixtures("no_thread_leaks")


def _deep_fault() -> None:
    raise RuntimeError("the segmenter fell over")


def fake_prepare(path: Path, settings: Settings) -> PreparedImage:
    """Runs in the spawned worker (imported there by name): warns, or fails unexpectedly."""
    if path.name == "boom.png":
        _deep_fault()
    logging.getLogger("chromowatch.segmentation.segment").warning("no metaphase in this one")
    return PreparedImage(path=str(path), sha256="0" * 64, size_bytes=1, width=1, height=1,
                         metaphases=0, note="empty", crops=())


def _result(pool: WorkerPool, timeout: float = 60) -> TaskResult:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        results = pool.collect(0.2)
        if results:
            assert len(results) == 1
            return results[0]
    raise AssertionError("no result from the worker")


def test_worker_warnings_and_tracebacks_reach_the_parent_log(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    settings = Settings(paths={"data_dir": str(tmp_path)})  # type: ignore[arg-type]
    pool = WorkerPool(settings, 1, task_timeout_s=60, prepare=fake_prepare)
    pool.start()
    try:
        pool.submit(Task(1, str(tmp_path / "S1" / "quiet.png")))
        ok = _result(pool)
        pool.submit(Task(2, str(tmp_path / "S1" / "boom.png")))
        failed = _result(pool)
    finally:
        pool.stop()
    assert ok.error is None and ok.prepared is not None and ok.prepared.note == "empty"
    assert failed.error == "RuntimeError: the segmenter fell over"  # the ledger's record

    warning = next(r for r in caplog.records if "no metaphase" in r.getMessage())
    assert warning.levelno == logging.WARNING
    assert warning.name == "chromowatch.segmentation.segment"
    assert warning.getMessage().startswith(f"file 1 ({tmp_path / 'S1' / 'quiet.png'}): ")

    error = next(r for r in caplog.records if "failed unexpectedly" in r.getMessage())
    assert error.levelno == logging.ERROR
    text = error.getMessage()
    assert f"file 2 ({tmp_path / 'S1' / 'boom.png'})" in text
    assert "Traceback (most recent call last)" in text
    assert "in _deep_fault" in text and "RuntimeError: the segmenter fell over" in text
    assert getattr(error, "path", None) == str(tmp_path / "S1" / "boom.png")
