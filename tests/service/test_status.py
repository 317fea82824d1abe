"""`chromowatch status` from the database alone: where each sample's report is."""

from __future__ import annotations

import time
from pathlib import Path

from chromowatch.reports.publish import on_sample_complete
from chromowatch.service.status import collect_status, format_status
from chromowatch.settings import Settings
from chromowatch.store import Store
from tests.reports.fixtures import make_sample


def test_status_says_where_each_report_is_and_which_sample_has_none(tmp_path: Path) -> None:
    """A sample whose every file duplicated another's completes without a report: status
    said `report done` for it (issue 16)."""
    settings = Settings(paths={"data_dir": str(tmp_path / "data")},  # type: ignore[arg-type]
                        report={"formats": ["html"]})
    now = time.time()
    with Store.open(settings.paths.db) as store:
        make_sample(store, tmp_path, "ddx11", ["AABBCCCBBA", "ABCBBCCAAB"])
        store.sample_state_touch({"ddx11": now, "copies": now, "open1": now})
        for name in ("ddx11", "copies"):
            store.sample_state_close(name, "marker DONE", now)
            on_sample_complete(settings, store, name)
            store.sample_state_completed(name, hook_state="done", hook_error=None, now=now)
        html = store.latest_report("ddx11").html_path  # type: ignore[union-attr]
        status = collect_status(settings, store)
    lines = {line.split(":")[1].strip(): line for line in format_status(status).splitlines()
             if line.startswith("sample:")}
    assert lines["ddx11"] == f"sample:     ddx11: complete (marker DONE), report version 1: {html}"
    assert lines["copies"] == ("sample:     copies: complete (marker DONE), no report yet "
                               "(its files duplicate other samples' files)")
    assert lines["open1"] == "sample:     open1: open, no report yet"
    by_name = {s["sample"]: s for s in status["samples"]}
    assert by_name["ddx11"]["report_version"] == 1 and by_name["ddx11"]["report_html"] == html
    assert by_name["copies"]["report_version"] is None
