"""Label import and export: crop folders, YOLO-boxed spreads, CSV; history kept."""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
import pytest

from chromowatch.errors import UsageError
from chromowatch.settings import Settings
from chromowatch.store import Store
from chromowatch.training import labels
from tests.helpers import settings_in


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    return settings_in(tmp_path / "data", monkeypatch)


def _crop_folder(root: Path, n: int = 9, seed: int = 0) -> Path:
    from chromowatch.demo.synth import generate_crops

    for i, (rgb, cls) in enumerate(generate_crops(np.random.default_rng(seed), n)):
        d = root / cls.lower()
        d.mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(d / f"{i:03d}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return root


def test_import_folder_stores_enhanced_crops_with_labels(settings: Settings,
                                                         tmp_path: Path) -> None:
    folder = _crop_folder(tmp_path / "wt")
    (folder / "notes").mkdir()
    (folder / "a" / "broken.png").write_bytes(b"not a png")
    with Store.open(settings.paths.db) as store:
        summary = labels.import_folder(store, settings, folder, enhanced=False, who="ana")
        rows = store.current_labels()
    assert summary.added == 9 and summary.counts == {"A": 3, "B": 3, "C": 3}
    assert summary.skipped == [str(folder / "a" / "broken.png")]
    assert {r.sample for r in rows} == {"wt"} and {r.who for r in rows} == {"ana"}
    for r in rows:
        image = cv2.imread(r.file)
        assert image is not None and np.median(image) > 200  # enhanced: white background
        assert Path(r.file).is_relative_to(settings.paths.crops)


def test_reimport_is_idempotent_and_relabelling_keeps_history(settings: Settings,
                                                              tmp_path: Path) -> None:
    folder = _crop_folder(tmp_path / "s")
    with Store.open(settings.paths.db) as store:
        labels.import_folder(store, settings, folder, enhanced=True)
        again = labels.import_folder(store, settings, folder, enhanced=True)
        assert (again.added, again.changed, again.unchanged) == (0, 0, 9)
        fingerprint = store.labels_fingerprint()
        # a reviewer moves one crop from a/ to c/: one label changes, history is kept
        moved = sorted((folder / "a").iterdir())[0]
        moved.rename(folder / "c" / moved.name)
        third = labels.import_folder(store, settings, folder, enhanced=True, who="bo")
        assert (third.added, third.changed, third.unchanged) == (0, 1, 8)
        assert store.labels_fingerprint() != fingerprint
        changed = [r for r in store.current_labels() if r.who == "bo"]
        assert len(changed) == 1 and changed[0].cls == "C"
        history = store.label_history(changed[0].crop_id)
        assert [h.cls for h in history] == ["A", "C"]
        assert history[0].superseded_at is not None and history[1].superseded_at is None


def test_identical_files_are_one_crop(settings: Settings, tmp_path: Path) -> None:
    folder = _crop_folder(tmp_path / "s", n=3)
    a = next((folder / "a").iterdir())
    (folder / "a" / "copy.png").write_bytes(a.read_bytes())
    with Store.open(settings.paths.db) as store:
        summary = labels.import_folder(store, settings, folder, enhanced=True)
        assert summary.added == 3 and summary.unchanged == 1
        assert len(store.current_labels()) == 3


def test_import_folder_needs_class_folders(settings: Settings, tmp_path: Path) -> None:
    (tmp_path / "x" / "misc").mkdir(parents=True)
    with Store.open(settings.paths.db) as store, pytest.raises(UsageError, match="class folders"):
        labels.import_folder(store, settings, tmp_path / "x", enhanced=True)


def test_import_yolo_cuts_enhances_and_matches_stored_crops(settings: Settings,
                                                            tmp_path: Path) -> None:
    from chromowatch.demo.synth import write_dataset

    write_dataset(tmp_path / "syn", samples=1, spreads=2, seed=0)
    sample = tmp_path / "syn" / "synthetic-01"
    boxes = sum(len(p.read_text().split("\n")) - 1 for p in (sample / "labels").glob("*.txt"))
    with Store.open(settings.paths.db) as store:
        summary = labels.import_yolo(store, settings, sample / "images", sample / "labels",
                                     sample="syn", who="ana")
        assert summary.added == boxes > 20
        rows = store.current_labels()
        assert len(rows) == boxes and {r.sample for r in rows} == {"syn"}
        crop = cv2.imread(rows[0].file)  # cut from the box, framed like the published crops
        box = rows[0].bbox
        assert abs(crop.shape[0] - box.h) < box.h // 2 and abs(crop.shape[1] - box.w) < box.w // 2
        grey = crop.mean(axis=2)
        assert np.median(np.r_[grey[0], grey[-1], grey[:, 0], grey[:, -1]]) > 240
        # importing the same spreads again: every box matches its stored crop
        again = labels.import_yolo(store, settings, sample / "images", sample / "labels",
                                   sample="syn")
        assert (again.added, again.changed, again.unchanged) == (0, 0, boxes)


def test_parse_yolo_boxes_and_errors() -> None:
    boxes = labels.parse_yolo("0 0.5 0.5 0.2 0.1\n\n2 0.0 0.0 0.1 0.1\n", 100, 200, pad=2)
    assert [(b.as_list(), c) for b, c in boxes] == [([38, 88, 24, 24], "A"),
                                                      ([0, 0, 7, 12], "C")]
    with pytest.raises(UsageError, match=r"f\.txt:1"):
        labels.parse_yolo("3 0.5 0.5 0.1 0.1", 10, 10, origin="f.txt")


def test_csv_export_and_import_round_trip(settings: Settings, tmp_path: Path) -> None:
    folder = _crop_folder(tmp_path / "s", n=6)
    with Store.open(settings.paths.db) as store:
        labels.import_folder(store, settings, folder, enhanced=True)
        out = io.StringIO()
        assert labels.export_csv(store, out) == 6
        lines = out.getvalue().splitlines()
        assert lines[0] == "crop_id,class,sample,file,source,who,labelled_at"
        # a review elsewhere changes two classes
        review = tmp_path / "review.csv"
        rows = [line.split(",") for line in lines[1:]]
        flip = {"A": "B", "B": "C", "C": "A"}
        edited = ["crop_id,class"] + [f"{r[0]},{flip[r[1]] if i < 2 else r[1].lower()}"
                                      for i, r in enumerate(rows)]
        review.write_text("\n".join(edited) + "\n")
        summary = labels.import_csv(store, review, who="rev")
        assert (summary.changed, summary.unchanged) == (2, 4)
        assert sum(1 for r in store.current_labels() if r.who == "rev") == 2


def test_csv_import_is_all_or_nothing(settings: Settings, tmp_path: Path) -> None:
    folder = _crop_folder(tmp_path / "s", n=3)
    with Store.open(settings.paths.db) as store:
        labels.import_folder(store, settings, folder, enhanced=True)
        before = store.labels_fingerprint()
        ids = [r.crop_id for r in store.current_labels()]
        bad = tmp_path / "bad.csv"
        bad.write_text(f"crop_id,class\n{ids[0]},C\n99999,A\n")
        with pytest.raises(Exception, match="99999"):
            labels.import_csv(store, bad)
        assert store.labels_fingerprint() == before
        bad.write_text(f"crop_id,class\n{ids[0]},D\n")
        with pytest.raises(UsageError, match=r"not A, B or C"):
            labels.import_csv(store, bad)
        bad.write_text("id_of_crop,cls\n1,A\n")
        with pytest.raises(UsageError, match="header"):
            labels.import_csv(store, bad)


def test_labels_commands(settings: Settings, tmp_path: Path,
                         capsys: pytest.CaptureFixture[str]) -> None:
    from chromowatch.cli import main

    folder = _crop_folder(tmp_path / "wt", n=3)
    assert main(["labels", "import-folder", str(folder), "--enhanced", "--who", "cli"]) == 0
    assert "3 new labelled crops" in capsys.readouterr().out
    out = tmp_path / "labels.csv"
    assert main(["labels", "export-csv", "--out", str(out)]) == 0
    assert len(out.read_text().splitlines()) == 4
    assert main(["labels", "import-csv", str(out)]) == 0
    assert "0 labels changed, 3 unchanged" in capsys.readouterr().out


@pytest.mark.realdata
def test_real_labels_import(real_data: Path, settings: Settings) -> None:
    """The published WT crops (a034 = a035: one crop) and the ddx11 YOLO boxes."""
    with Store.open(settings.paths.db) as store:
        wt = labels.import_folder(store, settings, real_data / "ikemoto2023" / "crops" / "wt",
                                  enhanced=True)
        assert (wt.added, wt.unchanged) == (651, 1)
        assert wt.counts == {"A": 416, "B": 204, "C": 32}
        ddx = labels.import_yolo(store, settings, real_data / "ddx11" / "images",
                                 real_data / "ddx11" / "labels", sample="ddx11")
        assert ddx.added == 342 and ddx.counts == {"A": 67, "B": 146, "C": 129}
        assert len(store.current_labels()) == 993


def test_first_labels_of_stored_crops_are_not_called_changed(
        settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 16 item 12: labelling crops that never had a label said "3 labels changed"."""
    from chromowatch.cli import main
    from tests.test_store import _save

    with Store.open(settings.paths.db) as store:
        crops = store.image_crops(_save(store, "aa", "ABC"))
    review = tmp_path / "review.csv"
    review.write_text("crop_id,class\n" + "".join(f"{c.id},B\n" for c in crops))
    assert main(["labels", "import-csv", str(review)]) == 0
    out = capsys.readouterr().out
    assert "3 labels recorded (first labels), 0 labels changed, 0 unchanged" in out
    review.write_text(f"crop_id,class\n{crops[0].id},C\n{crops[1].id},B\n")
    assert main(["labels", "import-csv", str(review)]) == 0
    assert "0 labels recorded (first labels), 1 labels changed, 1 unchanged" in \
        capsys.readouterr().out


def test_stored_crops_sorted_into_folders_are_labelled_not_added(
        settings: Settings, tmp_path: Path) -> None:
    """Issue 16 item 3: copies of a sample's own stored crops (one byte for byte, one
    re-saved with other PNG settings: same pixels, other bytes) label those crops."""
    from chromowatch.classify.library import ModelLibrary
    from chromowatch.demo.synth import write_dataset
    from chromowatch.pipeline import process_file
    from tests.helpers import install_tiny_model

    install_tiny_model(settings.paths.models)
    ensemble = ModelLibrary(settings.paths.models).load_ensemble("current", device="cpu")
    [spread, *_] = write_dataset(tmp_path / "syn", samples=1, spreads=1, seed=3)
    with Store.open(settings.paths.db) as store:
        done = process_file(spread, sample="s", settings=settings, store=store,
                            ensemble=ensemble)
        before = store.sample_counts("s")[0]
    first, second = done.crops[0], done.crops[1]
    sorted_dir = tmp_path / "sorted"
    (sorted_dir / "b").mkdir(parents=True)
    (sorted_dir / "b" / "one.png").write_bytes(Path(first.file).read_bytes())
    pixels = cv2.imread(second.file, cv2.IMREAD_UNCHANGED)
    resaved = sorted_dir / "b" / "two.png"
    assert cv2.imwrite(str(resaved), pixels, [cv2.IMWRITE_PNG_COMPRESSION, 0])
    assert resaved.read_bytes() != Path(second.file).read_bytes()
    with Store.open(settings.paths.db) as store:
        summary = labels.import_folder(store, settings, sorted_dir, enhanced=True, sample="s")
        after = store.sample_counts("s")[0]
        confirmed = {r.crop_id: r.cls for r in store.current_labels()}
        again = labels.import_folder(store, settings, sorted_dir, enhanced=True, sample="s")
    assert (summary.added, summary.recorded, summary.skipped) == (0, 2, [])
    assert (after.images, after.crops) == (before.images, before.crops)
    crop_ids = {c.index: c.id for c in store_crops(settings, done.image_id)}
    assert confirmed == {crop_ids[first.index]: "B", crop_ids[second.index]: "B"}
    assert (again.added, again.unchanged) == (0, 2)


def store_crops(settings: Settings, image_id: int | None) -> list:  # type: ignore[type-arg]
    with Store.open(settings.paths.db) as store:
        return store.crops_of_image(int(image_id or 0))
