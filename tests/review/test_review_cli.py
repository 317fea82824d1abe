"""`review queue` and `results --json` on a real SQLite store: the queue's rows, answers
through `labels import-csv`, the audit correction and the 'looks new' warning."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from chromowatch.cli import main
from chromowatch.records import BBox, Prediction
from chromowatch.settings import Settings
from chromowatch.store import ImageRow, Store, StoredCrop
from tests.helpers import settings_in

N = 120


def _truth(i: int) -> str:
    return "ABC"[i % 3] if i % 5 else "C"


def _prediction(i: int, rng: np.random.Generator) -> Prediction:
    """A model that calls half the C crops B, with a confidence that varies."""
    t = _truth(i)
    called = "B" if t == "C" and i % 2 else t
    top = float(rng.uniform(0.45, 0.95))
    probs = {c: (1 - top) / 2 for c in "ABC"}
    probs[called] = top
    return Prediction(called, probs, {"m1": [probs[c] for c in "ABC"]}, "tiny-v1")


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    settings = settings_in(tmp_path, monkeypatch)
    rng = np.random.default_rng(0)
    crops = [StoredCrop(i, BBox(10 * i, 5, 8, 9), -1, frozenset(), f"/crops/{i}.png",
                        _prediction(i, rng)) for i in range(N)]
    with Store.open(settings.paths.db) as store:
        store.save_image(ImageRow("/spreads/s1.png", "mut", "sha-1", 1, 2000, 100), crops)
        store.save_image(ImageRow("/spreads/other.png", "other", "sha-2", 1, 100, 100),
                         [StoredCrop(0, BBox(0, 0, 100, 100), -1, frozenset(), "/c/x.png",
                                     _prediction(0, rng))])
    return settings


def _queue(capsys: pytest.CaptureFixture[str], *args: str) -> list[dict[str, object]]:
    capsys.readouterr()
    assert main(["review", "queue", "--json", *args]) == 0
    return json.loads(capsys.readouterr().out)


def _answer(tmp_path: Path, rows: list[dict[str, object]], ids: dict[int, int]) -> None:
    csv = tmp_path / "answers.csv"
    csv.write_text("crop_id,class\n" + "".join(
        f"{r['crop_id']},{_truth(ids[int(r['crop_id'])])}\n" for r in rows))  # type: ignore[call-overload]
    assert main(["labels", "import-csv", str(csv)]) == 0


def _crop_index(settings: Settings) -> dict[int, int]:
    with Store.open(settings.paths.db) as store:
        return {r.crop_id: int(Path(r.file).stem) for r in store.review_rows("mut")}


def test_queue_rows_stable_until_answered_and_answers_correct_the_fractions(
        env: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = _queue(capsys, "--sample", "mut", "--count", "60")
    assert len(rows) == 60
    assert set(rows[0]) == {"crop_id", "source", "file", "label", "probs", "reason"}
    assert {r["reason"] for r in rows} == {"uncertain", "audit"}
    assert "box x=" in str(rows[0]["source"]) and str(rows[0]["source"]).startswith(
        "/spreads/s1.png")
    assert _queue(capsys, "--sample", "mut", "--count", "60") == rows  # the same crops again

    capsys.readouterr()
    assert main(["results", "--sample", "mut", "--json"]) == 0
    before = json.loads(capsys.readouterr().out)[0]
    assert before["reviewed"] == 0 and before["corrected"] is None
    assert "no holdout confusion" in before["correction_note"]

    ids = _crop_index(env)
    _answer(tmp_path, rows, ids)
    again = _queue(capsys, "--sample", "mut", "--count", "60")
    assert not {r["crop_id"] for r in again} & {r["crop_id"] for r in rows}  # answered: gone

    capsys.readouterr()
    assert main(["results", "--sample", "mut", "--json"]) == 0
    after = json.loads(capsys.readouterr().out)[0]
    assert after["reviewed"] == 60 and after["correction_method"] == "audit"
    truth = np.bincount(["ABC".index(_truth(i)) for i in range(N)], minlength=3) / N
    raw_err = max(abs(after["fractions"][c] - truth[i]) for i, c in enumerate("ABC"))
    corr_err = max(abs(after["corrected"][c] - truth[i]) for i, c in enumerate("ABC"))
    assert corr_err < raw_err
    assert corr_err < 0.05


def test_text_output_and_bad_input(env: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["review", "queue", "--sample", "mut", "--count", "3"]) == 0
    out = capsys.readouterr()
    assert len(out.out.strip().splitlines()) == 3 and "labels import-csv" in out.err
    assert main(["review", "queue", "--sample", "nope"]) == 2
    assert "nope" in capsys.readouterr().err
    assert main(["review", "queue", "--sample", "mut", "--count", "0"]) == 2


def test_answers_naming_unknown_crops_write_nothing(
        env: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = _queue(capsys, "--sample", "mut", "--count", "2")
    csv = tmp_path / "bad.csv"
    csv.write_text(f"crop_id,class\n{rows[0]['crop_id']},A\n999999,B\n")
    assert main(["labels", "import-csv", str(csv)]) != 0
    assert "999999" in capsys.readouterr().err
    with Store.open(env.paths.db) as store:
        assert store.current_labels() == []


def test_a_sample_unlike_the_validation_samples_is_said_to_look_new(
        env: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    from chromowatch.classify.library import ModelLibrary
    from tests.helpers import install_tiny_model

    name = install_tiny_model(env.paths.models)
    library = ModelLibrary(env.paths.models)
    sure = {"mean_confidence": 0.97, "predicted_fractions": {"A": 0.6, "B": 0.3, "C": 0.1}}
    library.save_ensemble(name, list(library.ensemble_info(name).members),
                          metrics={"holdout": {"per_sample": {"wt": sure},
                                               "confusion_matrix": [[50, 3, 1], [4, 40, 6],
                                                                    [1, 5, 30]]}})
    capsys.readouterr()
    assert main(["results", "--sample", "mut", "--json"]) == 0
    row = json.loads(capsys.readouterr().out)[0]
    assert row["looks_new"] and "mean confidence" in row["looks_new"]
    assert "review 100 more crops" in row["looks_new"]
    # the validation confusion does not apply to a sample unlike the validation samples
    assert row["corrected"] is None and "looks unlike" in row["correction_note"]
    assert main(["results", "--sample", "mut"]) == 0
    assert "warning: mut: This sample looks unlike" in capsys.readouterr().out
