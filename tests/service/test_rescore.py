"""Re-scoring (issue 17, item 4): stored crops classified again by the current model, which then
counts; restartable; `chromowatch reclassify`; which samples `classify.rescore` takes; new
report versions afterwards."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from chromowatch.classify.library import ModelLibrary
from chromowatch.cli import main
from chromowatch.reports import publish
from chromowatch.service.rescore import RescorePass, daemon_pass, rescore_batch
from chromowatch.service.status import collect_status, format_status
from chromowatch.settings import Settings
from chromowatch.store import Store
from tests.helpers import install_tiny_model, settings_in
from tests.service.test_crops_import import write_crop


def version_of(settings: Settings, name: str) -> str:
    return ModelLibrary(settings.paths.models).load_ensemble(name, device="cpu").version


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
             capsys: pytest.CaptureFixture[str]) -> Settings:
    """Samples s1 (3 crops) and s2 (2 crops) scored by `tiny`; then `tiny2` is current."""
    s = settings_in(tmp_path / "data", monkeypatch)
    monkeypatch.setenv("CHROMOWATCH_REPORT__FORMATS", '["html"]')
    install_tiny_model(s.paths.models)
    for sample, seeds in (("s1", range(3)), ("s2", range(3, 5))):
        for i in seeds:
            write_crop(tmp_path / sample / f"c{i}.png", i)
        assert main(["crops", "import", str(tmp_path / sample), "--sample", sample]) == 0
    install_tiny_model(s.paths.models, name="tiny2", seed=1)
    capsys.readouterr()
    return s


def latest_versions(db: Path) -> dict[int, str]:
    conn = sqlite3.connect(db)
    try:
        return dict(conn.execute(
            "SELECT crop_id, model_version FROM predictions p WHERE id = "
            "(SELECT MAX(id) FROM predictions q WHERE q.crop_id = p.crop_id)").fetchall())
    finally:
        conn.close()


def test_reclassify_adds_the_current_models_predictions_which_then_count(
        settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    new = version_of(settings, "tiny2")
    assert main(["reclassify", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["model"] == new and out["scored"] == 5 and out["samples"] == ["s1", "s2"]
    assert {r["sample"]: r["models"] for r in out["results"]} == {"s1": {new: 3}, "s2": {new: 2}}
    assert set(latest_versions(settings.paths.db).values()) == {new}
    with Store.open(settings.paths.db) as store:
        assert store.sample_contents("s1").predictions == 6  # the old ones stay as history
    # restartable: what the current model scored already is skipped
    assert main(["reclassify", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["scored"] == 0


def test_reclassify_one_sample_and_an_unknown_one(
        settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    old, new = version_of(settings, "tiny"), version_of(settings, "tiny2")
    assert main(["reclassify", "--sample", "s2"]) == 0
    out = capsys.readouterr().out
    assert f"2 crop(s) of s2 classified again with {new}" in out
    with Store.open(settings.paths.db) as store:
        assert store.sample_counts("s1")[0].models == {old: 3}
        assert store.sample_counts("s2")[0].models == {new: 2}
    assert main(["reclassify", "--sample", "nope"]) == 2
    err = capsys.readouterr().err
    assert "no sample named 'nope'" in err and "known samples: s1, s2" in err


def test_back_to_an_earlier_model_makes_its_predictions_count_again(
        settings: Settings) -> None:
    old = version_of(settings, "tiny")
    assert main(["reclassify"]) == 0
    ModelLibrary(settings.paths.models).set_current("tiny")
    assert main(["reclassify", "--sample", "s1"]) == 0
    with Store.open(settings.paths.db) as store:
        assert store.sample_counts("s1")[0].models == {old: 3}
        assert store.sample_contents("s1").predictions == 6  # replaced, not doubled


def test_a_pass_goes_in_batches_and_skips_unreadable_crop_files(settings: Settings) -> None:
    with Store.open(settings.paths.db) as store:
        Path(store.sample_crop_rows("s1")[1].file).write_bytes(b"gone")
        ensemble = ModelLibrary(settings.paths.models).load_configured(settings.classify)
        run = RescorePass(ensemble.version, None)
        sizes = []
        while not run.done:
            sizes.append(rescore_batch(store, settings, ensemble, run, 2))
        assert sizes == [2, 2, 1, 0]
        assert run.scored == 4 and len(run.unreadable) == 1
        assert "1 crop file(s) unreadable" in run.line()


def test_the_setting_chooses_the_samples(settings: Settings,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    with Store.open(settings.paths.db) as store:
        store.sample_state_close("s1", "closed by hand", 1.0)
        for scope, expected in (("all", None), ("open", ["s2"]), ("off", "none")):
            monkeypatch.setenv("CHROMOWATCH_CLASSIFY__RESCORE", scope)
            run = daemon_pass(settings_in(settings.paths.data, monkeypatch), store, "v")
            assert (run.samples if run is not None else "none") == expected


def test_samples_with_a_report_get_a_new_version(settings: Settings) -> None:
    with Store.open(settings.paths.db) as store:
        publish.on_sample_complete(settings, store, "s1")
        assert store.latest_report("s1").version == 1  # type: ignore[union-attr]
    assert main(["reclassify"]) == 0
    with Store.open(settings.paths.db) as store:
        latest = store.latest_report("s1")
        assert latest is not None and latest.version == 2
        assert latest.model == "tiny2"
        assert store.latest_report("s2") is None  # never reported: no report made now


def test_status_shows_a_pass_in_progress(settings: Settings) -> None:
    with Store.open(settings.paths.db) as store:
        status = collect_status(settings, store)
    assert status["rescoring"] is None  # no daemon running
    status["rescoring"] = {"model": "tiny2-abc", "scored": 128}
    assert ("rescoring:  stored crops classified again with tiny2-abc: 128 so far"
            in format_status(status).splitlines())
