"""Atomic writes and the crop file layout (chromowatch.files)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from chromowatch import files


def test_atomic_write_replaces_whole_and_leaves_no_part(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "report.html"
    files.atomic_write_text(path, "old")
    files.atomic_write_text(path, "new")
    assert path.read_text() == "new"
    assert [p.name for p in path.parent.iterdir()] == ["report.html"]


def test_a_failed_write_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "m.json"
    files.atomic_write_text(path, "old")

    def boom(_fd: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("chromowatch.files.os.fsync", boom)
    with pytest.raises(OSError, match="disk full"):
        files.atomic_write_text(path, "new")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


def test_atomic_replace_publishes_a_part_file(tmp_path: Path) -> None:
    part = tmp_path / "r.pdf.part"
    part.write_bytes(b"%PDF")
    files.atomic_replace(part, tmp_path / "r.pdf")
    assert [p.name for p in tmp_path.iterdir()] == ["r.pdf"]


def test_crop_png_round_trips_in_the_spreads_folder(tmp_path: Path) -> None:
    import cv2

    sha = "ab" + "0" * 62
    folder = files.crop_dir(tmp_path, sha)
    assert folder == tmp_path / "ab" / sha
    rgb = np.zeros((5, 7, 3), np.uint8)
    rgb[..., 0] = 200  # red, so an RGB/BGR mix-up shows
    written = files.write_crop_png(folder, 3, rgb)
    assert written == str(folder / "0003.png")
    back = cv2.cvtColor(cv2.imread(written), cv2.COLOR_BGR2RGB)
    assert np.array_equal(back, rgb)


def test_remove_files_takes_empty_folders_with_them(tmp_path: Path) -> None:
    spread = tmp_path / "crops" / "ab" / "abcd"
    spread.mkdir(parents=True)
    written = [spread / "0000.png", spread / "0001.png"]
    for f in written:
        f.write_bytes(b"x")
    (tmp_path / "crops" / "ab" / "other").mkdir()
    assert files.remove_files([*written, spread / "gone.png"]) == 2
    assert not spread.exists() and (tmp_path / "crops" / "ab").is_dir()
    # with a root: empty folders up to it go too, the root stays
    lone = tmp_path / "crops" / "cd" / "cdef"
    lone.mkdir(parents=True)
    (lone / "0000.png").write_bytes(b"x")
    assert files.remove_files([lone / "0000.png"], root=tmp_path / "crops") == 1
    assert not (tmp_path / "crops" / "cd").exists() and (tmp_path / "crops").is_dir()


def test_pixels_hash_is_of_the_content_not_the_file() -> None:
    rgb = np.zeros((4, 3, 3), np.uint8)
    assert files.pixels_sha256(rgb) == files.pixels_sha256(rgb.copy())
    assert files.pixels_sha256(rgb) != files.pixels_sha256(rgb.reshape(3, 4, 3))
    other = rgb.copy()
    other[0, 0, 0] = 1
    assert files.pixels_sha256(rgb) != files.pixels_sha256(other)
