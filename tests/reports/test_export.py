"""`chromowatch export`: CSV and JSON that agree with the database."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from chromowatch.cli import main
from chromowatch.reports.export import CROP_COLUMNS, SAMPLE_COLUMNS
from chromowatch.store import Store
from tests.reports.fixtures import add_image, make_sample


@pytest.fixture()
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CHROMOWATCH_PATHS__DATA_DIR", str(tmp_path / "data"))
    path = tmp_path / "data" / "chromowatch.sqlite3"
    with Store.open(path) as store:
        make_sample(store, tmp_path, "ddx11", ["AABBC", "ABCCC"], flags={1: "touching"})
        add_image(store, tmp_path, "wt, control", ["AAAAB"], image_no=7, outside="A")
    return path


def test_crops_csv_has_one_row_per_crop(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == 16 and tuple(rows[0]) == CROP_COLUMNS
    flagged = [r for r in rows if r["flags"]]
    assert [(r["flags"], r["counted_as"], r["excluded_reason"]) for r in flagged] == [
        ("touching", "", "flagged: touching")] * 2
    wt = [r for r in rows if r["sample"] == "wt, control"]  # the comma survives quoting
    assert len(wt) == 6 and {r["metaphase"] for r in wt} == {"0", "-1"}
    assert float(rows[0]["p_A"]) == pytest.approx(0.8)


def test_samples_json_agrees_with_the_store(db: Path, capsys: pytest.CaptureFixture[str]
                                            ) -> None:
    assert main(["export", "--format", "json", "--level", "samples"]) == 0
    rows = json.loads(capsys.readouterr().out)
    with Store.open(db) as store:
        counts = {c.sample: c for c in store.sample_counts()}
    assert [r["sample"] for r in rows] == ["ddx11", "wt, control"]
    for r in rows:
        c = counts[r["sample"]]
        assert set(r) == set(SAMPLE_COLUMNS)
        assert (r["scored"], r["excluded"], r["crops"]) == (c.scored, c.excluded, c.crops)
        assert [r[f"n_{k}"] for k in "ABC"] == [c.counts[k] for k in "ABC"]
        assert r["frac_BC"] == pytest.approx((c.counts["B"] + c.counts["C"]) / c.scored)
        assert r["lo_BC"] <= r["frac_BC"] <= r["hi_BC"]
        assert r["adj_BC"] is None and r["correction"] is None  # no model installed


def test_metaphases_to_a_file(db: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.csv"
    assert main(["export", "--sample", "ddx11", "--format", "csv", "--level", "metaphases",
                 "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert [(r["scored"], r["A"], r["B"], r["C"]) for r in rows] == [
        ("4", "1", "2", "1"), ("4", "1", "0", "3")]


def test_unknown_sample_is_a_clear_error(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", "--sample", "nope", "--format", "csv"]) == 2  # usage (issue 16)
    assert "no sample named 'nope'" in capsys.readouterr().err
