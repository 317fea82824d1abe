"""`chromowatch report` and `chromowatch outbox` from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chromowatch.cli import main
from chromowatch.reports.publish import on_sample_complete
from chromowatch.settings import load_settings
from chromowatch.store import Store
from tests.reports.fixtures import make_sample


@pytest.fixture()
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CHROMOWATCH_PATHS__DATA_DIR", str(tmp_path / "data"))
    with Store.open(tmp_path / "data" / "chromowatch.sqlite3") as store:
        make_sample(store, tmp_path, "ddx11", ["AABBC", "ABCCC"])
        make_sample(store, tmp_path, "wt", ["AAAAB", "AAAAA"])
    return tmp_path / "data"


def test_report_html_with_control(data_dir: Path, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main(["report", "ddx11", "--control", "wt", "--format", "html", "--out",
                 str(out)]) == 0
    assert capsys.readouterr().out.split() == [str(out / "ddx11.html")]
    html = (out / "ddx11.html").read_text()
    assert "Comparison with the control" in html and "Fisher" in html
    assert "rendered on demand (no version recorded yet)" in html


def test_report_several_samples_gives_a_summary(data_dir: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main(["report", "ddx11", "wt", "--format", "html", "--out", str(out)]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(out / "ddx11" / "ddx11.html"), str(out / "wt" / "wt.html"),
                       str(out / "summary.html")]


def test_report_names_the_recorded_version(data_dir: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    settings = load_settings().settings.model_copy()
    settings = settings.model_copy(update={"report": settings.report.model_copy(
        update={"formats": ["html"]})})
    with Store.open(settings.paths.db) as store:
        on_sample_complete(settings, store, "ddx11")
    assert main(["report", "ddx11", "--format", "html"]) == 0
    [path] = capsys.readouterr().out.split()
    assert Path(path).parent == data_dir / "reports" / "ddx11" / "on-demand"
    assert "version 1" in Path(path).read_text()


def test_bad_format_and_missing_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("CHROMOWATCH_PATHS__DATA_DIR", str(tmp_path / "none"))
    assert main(["report", "x", "--format", "docx"]) == 2
    assert main(["outbox"]) == 2
    assert "no database" in capsys.readouterr().err


def test_outbox_lists_and_retries(data_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("CHROMOWATCH_MAIL__ENABLED", "true")
    monkeypatch.setenv("CHROMOWATCH_MAIL__HOST", "127.0.0.1")
    monkeypatch.setenv("CHROMOWATCH_MAIL__PORT", "9")  # discard port: nothing listens
    monkeypatch.setenv("CHROMOWATCH_MAIL__SECURITY", "none")
    monkeypatch.setenv("CHROMOWATCH_MAIL__RECIPIENTS", '{"*": ["lab@lab.example"]}')
    monkeypatch.setenv("CHROMOWATCH_REPORT__FORMATS", '["html"]')
    settings = load_settings().settings
    with Store.open(settings.paths.db) as store:
        on_sample_complete(settings, store, "ddx11")
    assert main(["outbox"]) == 0
    line = capsys.readouterr().out
    assert "ddx11 v1  pending" in line and "tries 0" in line
    assert main(["outbox", "--retry"]) == 0
    out = capsys.readouterr().out
    assert "1 mail(s) retried now, 0 sent" in out and "tries 1" in out
    assert main(["outbox", "--json", "--pending"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["recipients"] == ["lab@lab.example"] and row["status"] == "pending"


DEMO_VERSION = "demo-synthetic-0123456789ab"


def test_results_say_which_samples_a_demonstration_model_scored(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("CHROMOWATCH_PATHS__DATA_DIR", str(tmp_path / "data"))
    with Store.open(tmp_path / "data" / "chromowatch.sqlite3") as store:
        make_sample(store, tmp_path, "demo", ["AABBC"], model_version=DEMO_VERSION)
        make_sample(store, tmp_path, "real", ["AABBC"])
    assert main(["results", "--json"]) == 0
    rows = {r["sample"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["demo"]["demonstration"] is True and rows["real"]["demonstration"] is False
    assert rows["demo"]["models"] == {DEMO_VERSION: 5}
    assert main(["results"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "DEMONSTRATION" in next(line for line in lines if line.startswith("demo "))
    assert "DEMONSTRATION" not in next(line for line in lines if line.startswith("real "))
    assert main(["results", "--sample", "real"]) == 0
    assert "DEMONSTRATION" not in capsys.readouterr().out
