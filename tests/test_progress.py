"""The terminal progress bar (chromowatch.progress)."""

from __future__ import annotations

import io

import pytest

from chromowatch.progress import Progress, format_eta


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_bar_in_crops_shows_the_time_left(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter([100.0, 110.0, 120.0])
    monkeypatch.setattr("chromowatch.progress.time.monotonic", lambda: next(clock))
    out = Terminal()
    bar = Progress(2, "1/3 spread.png", stream=out, unit="crops")
    bar.update(10, 40)  # 10 crops in 10 s: 30 left at 1/s
    assert "10/40 crops" in out.getvalue()
    assert "ETA 0:30" in out.getvalue()
    bar.update(40, 40)
    bar.close()
    assert out.getvalue().endswith("\n")


def test_silent_off_a_terminal() -> None:
    out = io.StringIO()
    bar = Progress(5, "process", stream=out)
    bar.advance("a.png")
    bar.update(3, 5)
    bar.close()
    assert out.getvalue() == ""


def test_eta_format() -> None:
    assert format_eta(65) == "1:05"
    assert format_eta(3725) == "1:02:05"
    assert format_eta(-3) == "0:00"
