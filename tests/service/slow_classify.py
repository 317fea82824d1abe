"""`python -m tests.service.slow_classify CHROMOWATCH-ARGS...`: the daemon, with every classify
call first busy in torch for a minute (as 30 models on a CPU are) after touching the file
named by $SLOW_CLASSIFY_MARKER. For tests/service/test_daemon.py."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from chromowatch import cli, pipeline

_classify = pipeline.classify


def _slow_classify(images: Sequence[pipeline.PreparedImage], ensemble: Any) -> Any:
    Path(os.environ["SLOW_CLASSIFY_MARKER"]).write_text("")
    a = torch.randn(1000, 1000)
    until = time.monotonic() + 60
    while time.monotonic() < until:
        a = (a @ a).clamp(-1, 1)
    return _classify(images, ensemble)


if __name__ == "__main__":
    pipeline.classify = _slow_classify  # type: ignore[assignment]
    raise SystemExit(cli.main())
