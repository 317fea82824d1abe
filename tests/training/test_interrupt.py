"""Ctrl+C during `chromowatch train`: the training child leaves without a traceback of its own
(the parent says "interrupted")."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from pathlib import Path

import pytest

from chromowatch.settings import Settings
from chromowatch.training.job import TrainRequest
from tests.training import fakes as training_fakes


def test_the_training_child_exits_quietly_on_sigint(tmp_path: Path,
                                                    capfd: pytest.CaptureFixture[str]) -> None:
    settings = Settings(paths={"data_dir": str(tmp_path / "data")})  # type: ignore[arg-type]
    result = tmp_path / "result.json"
    proc = multiprocessing.get_context("spawn").Process(
        target=training_fakes.interrupted_job,
        args=(settings, TrainRequest("x", None, None, None), str(result), "INFO"))
    proc.start()
    try:
        deadline = time.monotonic() + 60
        while not Path(f"{result}.started").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.pid is not None
        os.kill(proc.pid, signal.SIGINT)  # what Ctrl+C sends the whole foreground group
        proc.join(30)
    finally:
        if proc.is_alive():
            proc.kill()
            proc.join()
    err = capfd.readouterr().err
    assert proc.exitcode == 130
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert not result.exists()
