"""Cross-sample validation: folds leave whole samples or spreads out, the recipe is scored on
them, promotion reads the figures, `models list` shows them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from chromowatch.classify.library import ModelLibrary
from chromowatch.settings import Settings, TrainingSettings
from chromowatch.store import CurrentLabel
from chromowatch.store.rows import BBox
from chromowatch.training import crossval, dataset, nets, runner
from chromowatch.training.dataset import LabelledCrop
from chromowatch.training.evaluate import decide
from tests.helpers import install_tiny_model
from tests.training import fakes as training_fakes
from tests.training.test_training import labelled  # noqa: F401  (fixture)


def _crop(i: int, label: int, sample: str, spread: str) -> LabelledCrop:
    """A crop whose picture says its class: a dark bar, its width by class."""
    image = np.full((32, 32, 3), 255, np.uint8)
    width = 2 + 6 * label
    offset = (i * 7) % 6
    image[4:28, 14 - width // 2 + offset - 3: 14 + width // 2 + offset - 3 + 1] = 40 + (i % 5)
    image[0, 0] = i % 256  # distinct pixels, distinct keys
    image[0, 1] = i // 256
    return LabelledCrop(i, label, sample, dataset.pixel_key(image), image, spread)


def _crops() -> list[LabelledCrop]:
    """Sample "wt": 90 crops, one per file (no spread); sample "ddx11": 3 spreads of 30."""
    out = [_crop(i, i % 3, "wt", "") for i in range(90)]
    for s in range(3):
        out += [_crop(100 + 30 * s + j, (j + s) % 3, "ddx11", f"/spreads/{s + 1}.png")
                for j in range(30)]
    return out


def _cfg(**kw: Any) -> TrainingSettings:
    base: dict[str, Any] = {"head_epochs": 0, "max_epochs": 1, "patience": 1, "batch_size": 16,
                            "lr": 3e-3, "min_per_class": 2, "imagenet_download": False}
    base.update(kw)
    return TrainingSettings(**base)


@pytest.mark.parametrize(("mode", "groups"), [
    ("samples", {"sample wt", "sample ddx11"}),
    ("spreads", {"spread ddx11/1.png", "spread ddx11/2.png", "spread ddx11/3.png"}),
    ("both", {"sample wt", "sample ddx11", "spread ddx11/1.png", "spread ddx11/2.png",
              "spread ddx11/3.png"}),
    ("off", set()),
])
def test_folds_leave_whole_groups_out(mode: str, groups: set[str]) -> None:
    crops = _crops()
    folds, notes = crossval.make_folds(crops, _cfg(cross_validation=mode,
                                                   cross_validation_max_folds=10))
    assert {f.group for f in folds} == groups and not notes
    for fold in folds:
        left = {c.key for c in fold.left_out}
        trained = {c.key for c in fold.train} | {c.key for c in fold.val}
        assert not left & trained, fold.group
        assert len(left) + len(trained) == len(crops)  # everything else trains
        sample = fold.group.split()[1].split("/")[0]
        assert {c.sample for c in fold.left_out} == {sample}
        if fold.kind == crossval.SPREAD:
            assert len({c.spread for c in fold.left_out}) == 1 and len(fold.left_out) == 30
            assert not any(c.spread == fold.left_out[0].spread for c in fold.train)
        else:
            assert not any(c.sample == sample for c in fold.train + fold.val)


def test_one_sample_gives_no_sample_fold_and_the_cap_names_what_was_left_in() -> None:
    crops = [c for c in _crops() if c.sample == "wt"]
    assert crossval.make_folds(crops, _cfg(cross_validation="both")) == ([], [])
    folds, notes = crossval.make_folds(_crops(), _cfg(cross_validation="both",
                                                      cross_validation_max_folds=2))
    assert [f.group for f in folds] == ["sample ddx11", "sample wt"]  # largest first
    assert len(notes) == 3 and all("cross_validation_max_folds" in n for n in notes)


def test_a_fold_whose_rest_lacks_a_class_is_left_out_with_a_note() -> None:
    crops = [c for c in _crops() if c.sample == "wt" or c.label != 2]  # C only in wt
    folds, notes = crossval.make_folds(crops, _cfg(cross_validation="samples"))
    assert [f.group for f in folds] == ["sample ddx11"]
    assert notes and notes[0].startswith("sample wt: not left out")


def test_spread_is_the_image_only_when_it_holds_several_labelled_crops(tmp_path: Path) -> None:
    import cv2

    rows = []
    for i, image_path in enumerate(["/s/1.png", "/s/1.png", "/c/a001.jpg"]):
        file = tmp_path / f"{i}.png"
        assert cv2.imwrite(str(file), np.full((20, 20, 3), 10 * i, np.uint8))
        rows.append(CurrentLabel(crop_id=i, cls="A", source="t", who="t", created_at=0.0,
                                 file=str(file), bbox=BBox(0, 0, 20, 20),
                                 image_path=image_path, sample="s"))
    crops, problems = dataset.load_labelled(rows)
    assert not problems
    assert [c.spread for c in crops] == ["/s/1.png", "/s/1.png", ""]


def test_cross_validate_trains_each_fold_without_its_group_and_scores_it(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    torch.set_num_threads(2)
    seen: list[set[str]] = []
    real = crossval.train_members

    def spy(member_nets: Any, train: list[LabelledCrop], val: list[LabelledCrop], cfg: Any,
            device: Any) -> Any:
        seen.append({c.key for c in train} | {c.key for c in val})
        assert cfg.max_epochs == 1  # cross_validation_max_epochs
        return real(member_nets, train, val, cfg, device)

    monkeypatch.setattr(crossval, "train_members", spy)
    install_tiny_model(tmp_path, "cur")
    library = ModelLibrary(tmp_path)
    current = [nets.net_from_bundle(library.load_bundle("cur-m1"))]
    crops = _crops()
    result = crossval.cross_validate(
        crops, ["tinycnn"], [library.load_bundle("cur-m1")],
        _cfg(cross_validation="both", max_epochs=3, cross_validation_max_epochs=1),
        torch.device("cpu"), current)
    cand, cur = result.candidate, result.current
    assert cand is not None and cur is not None
    assert [f["group"] for f in cand["folds"]] == [f["group"] for f in cur["folds"]]
    assert cand["n"] == sum(f["n"] for f in cand["folds"]) == 90 + 90 + 2 * 30
    assert len(seen) == 4  # the default cap of 4 folds: largest first, one spread left in
    assert cand["notes"] == ["spread ddx11/3.png: not left out (cross_validation_max_folds 4)"]
    for fold, keys in zip(cand["folds"], seen, strict=True):
        left = {c.key for c in crops if fold["group"] in (f"sample {c.sample}",
                f"spread {c.sample}/{c.spread.rsplit('/', 1)[-1]}")}
        assert len(left) == fold["n"] and not left & keys
    assert cand["fraction_error_max"] == max(f["fraction_error"] for f in cand["folds"])
    assert set(cand["recall"]) == {"A", "B", "C"} and 0 <= cand["accuracy"] <= 1


# -- promotion ---------------------------------------------------------------------------------

HOLD_NEW = {"accuracy": 0.85, "recall": {"A": 0.9, "B": 0.8, "C": 0.8}}
HOLD_OLD = {"accuracy": 0.70, "recall": {"A": 0.8, "B": 0.6, "C": 0.7}}


def _cross(accuracy: float, fraction_error: float) -> dict[str, Any]:
    return {"accuracy": accuracy, "fraction_error_max": fraction_error, "folds": [{}, {}]}


def test_promotion_refuses_a_candidate_worse_on_left_out_samples() -> None:
    kw: dict[str, Any] = {"margin": 0.01, "class_margin": 0.05, "cross_margin": 0.03}
    ok, why = decide(HOLD_NEW, HOLD_OLD, cross=_cross(0.70, 0.10),
                     cross_current=_cross(0.65, 0.12), **kw)
    assert ok and "holdout accuracy 0.8500" in why and "cross-sample accuracy 0.7000" in why
    ok, why = decide(HOLD_NEW, HOLD_OLD, cross=_cross(0.60, 0.10),
                     cross_current=_cross(0.65, 0.12), **kw)
    assert not ok and "cross-sample accuracy 0.6000 is worse" in why
    ok, why = decide(HOLD_NEW, HOLD_OLD, cross=_cross(0.70, 0.17),
                     cross_current=_cross(0.65, 0.12), **kw)
    assert not ok and "worst-group fraction error 0.1700 is worse" in why
    assert "though holdout accuracy 0.8500" in why
    ok, why = decide(HOLD_NEW, HOLD_OLD, cross=_cross(0.70, 0.17), cross_current=None, **kw)
    assert ok and "no cross-sample figures to compare with" in why
    ok, why = decide(HOLD_NEW, HOLD_OLD, **kw)
    assert ok and "no cross-sample figures" in why


def test_the_runner_keeps_the_current_model_when_the_candidate_fails_on_new_samples(
        labelled: Settings) -> None:  # noqa: F811
    outcome = runner.train(labelled, name="cand", target=training_fakes.cross_worse_job)
    assert outcome.status == runner.KEPT, outcome.message
    assert "cross-sample worst-group fraction error" in outcome.message
    assert ModelLibrary(labelled.paths.models).current_name() == "old"


# -- models list -------------------------------------------------------------------------------


def test_models_list_shows_the_cross_sample_figures(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from chromowatch.cli import main

    monkeypatch.setenv("CHROMOWATCH_PATHS__DATA_DIR", str(tmp_path))
    install_tiny_model(tmp_path / "models", "plain", seed=1)
    install_tiny_model(tmp_path / "models", "xv", seed=2)
    library = ModelLibrary(tmp_path / "models")
    path = library.ensemble_path("xv")
    manifest = json.loads(path.read_text())
    manifest["metrics"] = {"holdout_accuracy": 0.762, "recall_A": 0.8, "recall_B": 0.7,
                           "recall_C": 0.7, "fraction_error_max": 0.05, "n_holdout": 210,
                           "cross_sample_accuracy": 0.6123,
                           "cross_sample_fraction_error_max": 0.171,
                           "cross_sample_groups": 2, "training": {}}
    path.write_text(json.dumps(manifest))
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if " xv " in x)
    assert "holdout acc 0.762" in line
    assert "cross-sample acc 0.612, worst-group fraction error 0.171 (2 left-out groups)" in line
    assert main(["models", "list", "--json"]) == 0
    rows = {e["name"]: e for e in json.loads(capsys.readouterr().out)["ensembles"]}
    assert rows["xv"]["cross_sample"] == {"accuracy": 0.6123, "fraction_error_max": 0.171,
                                          "groups": 2}
    assert rows["plain"]["cross_sample"] is None


@pytest.mark.parametrize("trained", [False, True])
def test_the_current_is_scored_on_the_groups_unless_trained_on_them(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, trained: bool) -> None:
    """The published models never saw the labels: scored on the same left-out groups. A
    current ensemble made by `chromowatch train` saw them: its own recorded figures count."""
    from chromowatch.training import job

    install_tiny_model(tmp_path, "cur")
    library = ModelLibrary(tmp_path)
    recorded = {"accuracy": 0.5, "fraction_error_max": 0.2, "folds": []}
    if trained:
        path = library.ensemble_path("cur")
        manifest = json.loads(path.read_text())
        manifest["metrics"] = {job.VERSION_KEY: {}, "cross_sample": recorded}
        path.write_text(json.dumps(manifest))
    given: list[int] = []

    def fake(crops: Any, members: Any, bundles: Any, cfg: Any, device: Any,
             current_nets: list[Any]) -> crossval.CrossResult:
        given.append(len(current_nets))
        return crossval.CrossResult({"accuracy": 0.6, "fraction_error_max": 0.1},
                                    {"scored": True} if current_nets else None)

    monkeypatch.setattr(crossval, "cross_validate", fake)
    crops = _crops()
    data = job.LabelledData("f", len(crops), len(crops), crops, [], [], {})
    result = job.cross_sample(library, data, ["tinycnn"], job.StartPoints([], None),
                              _cfg(), "cur", torch.device("cpu"))
    if trained:
        assert given == [0] and result.current is not None
        assert result.current["source"] == "recorded by cur's own training run"
        assert result.current["fraction_error_max"] == 0.2
    else:
        assert given == [1] and result.current == {"scored": True}
