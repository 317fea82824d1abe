"""process_file and the one-shot commands, end to end on generated spreads with a real store."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from chromowatch.classify.library import ModelLibrary
from chromowatch.cli import main
from chromowatch.demo.synth import generate_spread, write_dataset
from chromowatch.pipeline import process_file
from chromowatch.records import Segmentation
from chromowatch.segmentation import segment as segment_module
from chromowatch.settings import SegmentSettings, Settings
from chromowatch.store import Store
from tests.helpers import install_tiny_model, settings_in


@pytest.fixture(scope="module")
def spreads(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    out = tmp_path_factory.mktemp("spreads")
    return write_dataset(out, samples=1, spreads=2, seed=7)


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    settings = settings_in(tmp_path / "data", monkeypatch)
    install_tiny_model(settings.paths.models)
    return settings


def _ensemble(settings: Settings):  # type: ignore[no-untyped-def]
    return ModelLibrary(settings.paths.models).load_ensemble("current", device="cpu")


def test_process_stores_every_crop_once(env: Settings, spreads: list[Path]) -> None:
    ensemble = _ensemble(env)
    with Store.open(env.paths.db) as store:
        first = process_file(spreads[0], sample="s", settings=env, store=store, ensemble=ensemble)
        assert first.status == "done" and first.crops
        for crop in first.crops:
            assert Path(crop.file).is_file()
            assert abs(sum(crop.prediction.probs.values()) - 1) < 1e-5
        again = process_file(spreads[0], sample="s", settings=env, store=store, ensemble=ensemble)
        assert again.status == "duplicate" and again.image_id == first.image_id
        counts = store.sample_counts("s")[0]
        assert counts.images == 1 and counts.crops == len(first.crops)
        assert counts.scored + counts.excluded == len(first.crops)


def test_same_content_under_another_name_is_recognised(env: Settings, spreads: list[Path],
                                                       tmp_path: Path) -> None:
    copy = tmp_path / "renamed.png"
    copy.write_bytes(spreads[0].read_bytes())
    ensemble = _ensemble(env)
    with Store.open(env.paths.db) as store:
        process_file(spreads[0], sample="s", settings=env, store=store, ensemble=ensemble)
        assert process_file(copy, sample="other", settings=env, store=store,
                            ensemble=ensemble).status == "duplicate"
        assert store.sample_names() == ["s"]


def test_bad_files_are_recorded_and_the_rest_goes_on(env: Settings, spreads: list[Path],
                                                     tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "empty.png").write_bytes(b"")
    (bad / "text.tif").write_text("not an image")
    data = spreads[0].read_bytes()
    (bad / "cut.png").write_bytes(data[: len(data) // 3])
    ensemble = _ensemble(env)
    with Store.open(env.paths.db) as store:
        results = [process_file(p, sample="s", settings=env, store=store, ensemble=ensemble)
                   for p in [*sorted(bad.iterdir()), spreads[1]]]
    assert [r.status for r in results] == ["failed", "failed", "failed", "done"]
    assert "truncated" in str(results[0].error) and str(bad / "cut.png") in str(results[0].error)
    conn = sqlite3.connect(env.paths.db)
    rows = conn.execute("SELECT status, error FROM images ORDER BY id").fetchall()
    assert [r[0] for r in rows] == ["failed", "failed", "failed", "done"]
    orphan = conn.execute(
        "SELECT COUNT(*) FROM crops c JOIN images i ON i.id = c.image_id WHERE i.status='failed'"
    ).fetchone()[0]
    assert orphan == 0


def test_crash_before_commit_leaves_nothing_and_redo_stores_once(
        env: Settings, spreads: list[Path], monkeypatch: pytest.MonkeyPatch) -> None:
    ensemble = _ensemble(env)
    with Store.open(env.paths.db) as store:
        def boom(*args: object, **kwargs: object) -> None:
            raise KeyboardInterrupt  # as if the process were stopped mid-write

        with monkeypatch.context() as m:
            m.setattr("chromowatch.store.StoredCrop.__init__", boom)
            with pytest.raises(KeyboardInterrupt):
                process_file(spreads[0], sample="s", settings=env, store=store,
                             ensemble=ensemble)
        assert store.find_image(hashlib.sha256(spreads[0].read_bytes()).hexdigest()) is None
        done = process_file(spreads[0], sample="s", settings=env, store=store, ensemble=ensemble)
        assert done.status == "done"
        assert store.sample_counts("s")[0].images == 1


def test_empty_spread_gives_no_crops_and_a_reason(env: Settings, tmp_path: Path) -> None:
    import cv2

    spread = generate_spread(np.random.default_rng(3), metaphases=0)
    path = tmp_path / "nuclei-only.png"
    cv2.imwrite(str(path), cv2.cvtColor(spread.rgb, cv2.COLOR_RGB2BGR))
    with Store.open(env.paths.db) as store:
        result = process_file(path, sample="s", settings=env, store=store,
                              ensemble=_ensemble(env))
    assert result.status == "done" and result.crops == () and result.note


def test_a_jpeg_export_is_segmented_from_luma(env: Settings, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """A JPEG that keeps colour at half resolution reaches segmentation marked as such, from
    `process` and from `segment`; a PNG does not."""
    import cv2

    seen: list[bool] = []
    real = segment_module.segment

    def spy(
        rgb: np.ndarray, settings: SegmentSettings, *, chroma_subsampled: bool = False
    ) -> Segmentation:
        seen.append(chroma_subsampled)
        return real(rgb, settings, chroma_subsampled=chroma_subsampled)

    monkeypatch.setattr(segment_module, "segment", spy)
    bgr = cv2.cvtColor(generate_spread(np.random.default_rng(4)).rgb, cv2.COLOR_RGB2BGR)
    jpeg, png = tmp_path / "spread.jpg", tmp_path / "spread.png"
    assert cv2.imwrite(str(jpeg), bgr, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert cv2.imwrite(str(png), bgr)
    with Store.open(env.paths.db) as store:
        for path in (jpeg, png):
            result = process_file(path, sample="s", settings=env, store=store,
                                  ensemble=_ensemble(env))
            assert result.status == "done" and result.crops
    assert main(["segment", str(jpeg), "--json"]) == 0
    capsys.readouterr()
    assert seen == [True, False, True]


def test_cli_contracts(env: Settings, spreads: list[Path], tmp_path: Path,
                       capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["segment", str(spreads[0]), "--json"]) == 0
    seg = json.loads(capsys.readouterr().out)
    assert seg[0]["image"] == str(spreads[0]) and seg[0]["width"] == 1440
    assert all(len(c["bbox"]) == 4 for c in seg[0]["crops"])

    overlay = tmp_path / "overlay.png"
    assert main(["segment", str(spreads[0]), "--overlay", str(overlay)]) == 0
    assert overlay.stat().st_size > 1000
    capsys.readouterr()

    assert main(["process", str(spreads[0].parent), "--sample", "cli", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["sample"] == "cli" and len(out["images"]) == 2
    crop = out["images"][0]["crops"][0]
    assert set(crop) >= {"bbox", "label", "probs"} and crop["label"] in "ABC"
    assert out["results"][0]["scored"] + out["results"][0]["excluded"] == sum(
        len(i["crops"]) for i in out["images"])

    crop_dir = Path(crop["file"]).parent
    assert main(["classify", str(crop_dir), "--enhanced", "--json"]) == 0
    classified = json.loads(capsys.readouterr().out)
    assert {c["label"] for c in classified} <= {"A", "B", "C"}
    first = next(c for c in classified if c["path"] == crop["file"])
    assert first["label"] == crop["label"]

    assert main(["results", "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert results[0]["sample"] == "cli"
    assert main(["process", str(spreads[0]), "--sample", "cli"]) == 0
    assert "already processed" in capsys.readouterr().out


def test_cli_reports_skipped_inputs_with_exit_3(env: Settings, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "junk.png"
    bad.write_text("junk")
    assert main(["process", str(bad), "--sample", "s"]) == 3
    assert "not an image" in capsys.readouterr().out


def test_missing_model_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           spreads: list[Path],
                                           capsys: pytest.CaptureFixture[str]) -> None:
    settings_in(tmp_path / "empty", monkeypatch)
    assert main(["process", str(spreads[0]), "--sample", "s"]) == 4
    assert "models fetch ikemoto2023" in capsys.readouterr().err


def test_process_says_when_a_demonstration_model_scored(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spreads: list[Path],
        capsys: pytest.CaptureFixture[str]) -> None:
    settings = settings_in(tmp_path, monkeypatch)
    install_tiny_model(settings.paths.models, name="demo-synthetic")
    assert main(["process", str(spreads[0]), "--sample", "d", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["demonstration"] is True and out["results"][0]["demonstration"] is True
    assert main(["process", str(spreads[1]), "--sample", "d"]) == 0
    text = capsys.readouterr().out
    assert "model: demo-synthetic-" in text and "(DEMONSTRATION: trained on generated" in text
    assert "DEMONSTRATION: the samples so marked" in text
