"""benchmarks/segmentation_draws.py: seeds parsed, draws written once, floors judged per draw."""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture
def draws(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.syspath_prepend(str(BENCH))
    return importlib.import_module("segmentation_draws")


def test_seed_lists_and_ranges(draws) -> None:  # type: ignore[no-untyped-def]
    assert draws.parse_seeds("0-3") == [0, 1, 2, 3]
    assert draws.parse_seeds("5,1-2,2") == [5, 1, 2]
    with pytest.raises(argparse.ArgumentTypeError, match="backwards"):
        draws.parse_seeds("4-2")


def test_one_draw_is_measured_and_judged(draws, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    """One seed, one spread per sample: the counts are the draw's own (its truth.json), and the
    draw is written once: a second run reuses the cached files."""
    # In-process: forking a test process that has loaded torch can hang its workers.
    args = ["--seeds", "3", "--spreads", "1", "--cache", str(tmp_path), "--json"]
    args += ["--processes", "1"]
    assert draws.main(args) == 0
    out = json.loads(capsys.readouterr().out)
    truth = [
        o["cls"]
        for tj in sorted((tmp_path / "seed-3").glob("*/truth.json"))
        for sp in json.loads(tj.read_text())["spreads"]
        for o in sp["objects"]
    ]
    row = out["per_draw"]["seed 3"]
    assert row["labelled"] == {c: truth.count(c) for c in "ABC"}
    assert out["draws"] == 1
    assert out["meeting_every_floor"] + len(out["under_a_floor"]) == 1
    stamp = [p.stat().st_mtime_ns for p in sorted(tmp_path.rglob("*.png"))]
    assert draws.main(args) == 0
    assert json.loads(capsys.readouterr().out)["per_draw"] == out["per_draw"]
    assert [p.stat().st_mtime_ns for p in sorted(tmp_path.rglob("*.png"))] == stamp
