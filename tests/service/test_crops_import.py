"""`chromowatch crops import` (issue 17, item 3): crops cut elsewhere stored as a sample's crops
and classified, once per content, all or nothing; bad input as clear errors."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from chromowatch.classify.library import ModelLibrary
from chromowatch.cli import main
from chromowatch.settings import Settings
from chromowatch.store import Store
from tests.helpers import install_tiny_model, settings_in


def write_crop(path: Path, seed: int, size: tuple[int, int] = (48, 32),
               compression: int = 3) -> Path:
    """A small grey crop with a dark rod: enough for the plumbing."""
    import cv2

    rng = np.random.default_rng(seed)
    img = np.full((*size, 3), 190, np.uint8)
    img[8:40, 12:20] = rng.integers(20, 80)
    img[0, 0] = seed % 256
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), img, [cv2.IMWRITE_PNG_COMPRESSION, compression])
    return path


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    s = settings_in(tmp_path / "data", monkeypatch)
    install_tiny_model(s.paths.models)
    return s


@pytest.fixture
def crops_dir(tmp_path: Path) -> Path:
    d = tmp_path / "crops-in"
    for i in range(3):
        write_crop(d / f"c{i}.png", i)
    write_crop(d / "deeper" / "c3.tif", 3)
    return d


def rows(db: Path, sql: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def import_json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[dict]]:
    code = main(["crops", "import", *args, "--json"])
    out = capsys.readouterr().out
    return code, json.loads(out) if out.strip() else []


def test_import_stores_classifies_and_prints_one_object_per_crop(
        settings: Settings, crops_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = import_json(capsys, str(crops_dir), "--sample", "ext")
    assert code == 0
    assert [Path(o["source"]).name for o in out] == ["c0.png", "c1.png", "c2.png", "c3.tif"]
    version = ModelLibrary(settings.paths.models).load_ensemble("tiny", device="cpu").version
    for o in out:
        assert set(o) == {"crop_id", "source", "label", "probs", "new"} and o["new"] is True
        assert o["label"] in "ABC" and abs(sum(o["probs"].values()) - 1) < 1e-4
    with Store.open(settings.paths.db) as store:
        counts = store.sample_counts("ext")[0]
        assert counts.crops == 4 and sum(counts.counts.values()) == 4
        assert counts.models == {version: 4}
        crop_rows = store.sample_crop_rows("ext")
    assert sorted(c.id for c in crop_rows) == sorted(o["crop_id"] for o in out)
    assert all(Path(c.file).is_file() for c in crop_rows)
    hashes = rows(settings.paths.db, "SELECT pixels_sha256 FROM crops")
    assert all(h[0] for h in hashes)


def test_importing_again_adds_nothing_and_says_so(
        settings: Settings, crops_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, first = import_json(capsys, str(crops_dir), "--sample", "ext")
    (crops_dir / "copy-of-c0.png").write_bytes((crops_dir / "c0.png").read_bytes())
    code, again = import_json(capsys, str(crops_dir), "--sample", "ext")
    assert code == 0
    assert not any(o["new"] for o in again)
    by_name = {Path(o["source"]).name: o["crop_id"] for o in again}
    assert by_name["copy-of-c0.png"] == by_name["c0.png"]
    assert {o["crop_id"] for o in first} == set(by_name.values())
    assert rows(settings.paths.db, "SELECT COUNT(*) FROM crops") == [(4,)]
    assert main(["crops", "import", str(crops_dir), "--sample", "ext"]) == 0
    assert "sample ext: 0 new crop(s), 5 already stored; model tiny-" in capsys.readouterr().out


def test_two_files_of_one_content_in_one_import_are_one_crop(
        settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "dups"
    write_crop(d / "a.png", 5)
    (d / "b.png").write_bytes((d / "a.png").read_bytes())
    code, out = import_json(capsys, str(d), "--sample", "s")
    assert code == 0 and len(out) == 1
    assert rows(settings.paths.db, "SELECT COUNT(*) FROM crops") == [(1,)]


def test_enhanced_crops_are_stored_as_they_are_others_enhanced(
        settings: Settings, crops_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import cv2

    source = cv2.cvtColor(cv2.imread(str(crops_dir / "c0.png")), cv2.COLOR_BGR2RGB)
    stored = {}
    for flag, sample, level in (([], "raw", 1), (["--enhanced"], "published", 9)):
        # the same pixels in another file (other compression): not matched to the other
        d = crops_dir.parent / sample
        write_crop(d / "c0.png", 0, compression=level)
        code, out = import_json(capsys, str(d), "--sample", sample, *flag)
        assert code == 0 and out[0]["new"] is True
        with Store.open(settings.paths.db) as store:
            file = store.sample_crop_rows(sample)[0].file
        stored[sample] = cv2.cvtColor(cv2.imread(file), cv2.COLOR_BGR2RGB)
    assert np.array_equal(stored["published"], source)
    assert not np.array_equal(stored["raw"], source)


def test_a_corrupt_file_is_skipped_by_name_and_the_rest_imported(
        settings: Settings, crops_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (crops_dir / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    code = main(["crops", "import", str(crops_dir), "--sample", "ext"])
    captured = capsys.readouterr()
    assert code == 3
    assert f"{crops_dir / 'broken.png'}: skipped" in captured.err
    assert "4 new crop(s), 0 already stored, 1 file(s) skipped" in captured.out


def test_a_missing_folder_or_one_without_images_is_a_usage_error(
        settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not an image")
    for folder, expected in ((tmp_path / "missing", "is not a folder"),
                             (empty, "no crop images in")):
        assert main(["crops", "import", str(folder), "--sample", "s"]) == 2
        assert expected in capsys.readouterr().err
    with Store.open(settings.paths.db) as store:
        assert store.sample_names() == []


def test_unknown_options_are_refused(settings: Settings, crops_dir: Path) -> None:
    for argv in (["crops", "import", str(crops_dir)],  # --sample is required
                 ["crops", "import", str(crops_dir), "--sample", "s", "--label", "A"],
                 ["crops", "import", str(crops_dir), "--sample", "s", "--enhanced=yes"],
                 ["crops", "export", str(crops_dir)]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2


def test_no_model_installed_names_models_fetch_and_writes_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, crops_dir: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    s = settings_in(tmp_path / "bare", monkeypatch)
    assert main(["crops", "import", str(crops_dir), "--sample", "s"]) == 4
    assert "chromowatch models fetch" in capsys.readouterr().err
    assert not s.paths.db.exists() or rows(s.paths.db, "SELECT COUNT(*) FROM samples") == [(0,)]


def test_a_failure_while_storing_leaves_no_rows_and_no_crop_files(
        settings: Settings, crops_dir: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    calls = []

    def failing(conn: sqlite3.Connection, crop_id: int, p: object, now: float) -> None:
        calls.append(crop_id)
        if len(calls) == 3:
            raise sqlite3.OperationalError("disk I/O error")
        original(conn, crop_id, p, now)  # type: ignore[arg-type]

    original = Store._insert_prediction
    monkeypatch.setattr(Store, "_insert_prediction", staticmethod(failing))
    with pytest.raises(sqlite3.OperationalError):
        main(["crops", "import", str(crops_dir), "--sample", "ext"])
    assert rows(settings.paths.db, "SELECT COUNT(*) FROM crops") == [(0,)]
    assert rows(settings.paths.db, "SELECT COUNT(*) FROM images") == [(0,)]
    assert not [p for p in settings.paths.crops.rglob("*") if p.is_file()]
