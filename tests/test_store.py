"""Store: schema, one transaction per image, labels with history, per-sample counts."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from chromowatch.errors import StoreError, UsageError
from chromowatch.records import BBox, Prediction
from chromowatch.store import MIGRATIONS, ImageRow, Store, StoredCrop, fingerprint_labels


def _crop(i: int, label: str, flags: frozenset[str] = frozenset()) -> StoredCrop:
    probs = {"A": 0.1, "B": 0.1, "C": 0.1}
    probs[label] = 0.8
    return StoredCrop(i, BBox(i, i, 10, 10), 0, flags, f"/c/{i}.png",
                      Prediction(label, probs, {"m1": [0.1, 0.8, 0.1]}, "v1"))


def _save(store: Store, sha: str, labels: str, sample: str = "s1",
          flags: dict[int, frozenset[str]] | None = None) -> int:
    crops = [_crop(i, lab, (flags or {}).get(i, frozenset())) for i, lab in enumerate(labels)]
    image = ImageRow(path=f"/in/{sha}.png", sample=sample, sha256=sha, size=10, width=5,
                     height=5, metaphases=1)
    return store.save_image(image, crops)


def test_schema_and_pragmas(tmp_path: Path) -> None:
    with Store.open(tmp_path / "db.sqlite3") as store:
        assert store.schema_version == len(MIGRATIONS)
    conn = sqlite3.connect(tmp_path / "db.sqlite3")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"samples", "images", "crops", "predictions", "labels"} <= tables


def test_reopen_does_not_migrate_again(tmp_path: Path) -> None:
    with Store.open(tmp_path / "db") as store:
        _save(store, "aa", "AB")
    with Store.open(tmp_path / "db") as store:
        assert store.sample_counts("s1")[0].crops == 2


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "db")
    conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    conn.close()
    with pytest.raises(StoreError, match="newer than this"):
        Store.open(tmp_path / "db")


def test_image_is_stored_whole_or_not_at_all(tmp_path: Path) -> None:
    with Store.open(tmp_path / "db") as store:
        bad = _crop(1, "A")
        bad = StoredCrop(1, bad.bbox, 0, frozenset(), "f",
                         Prediction("X", bad.prediction.probs, {}, "v1"))  # violates CHECK
        with pytest.raises(sqlite3.IntegrityError):
            image = ImageRow(path="/in/x.png", sample="s1", sha256="xx", size=1, width=1,
                             height=1, metaphases=1)
            store.save_image(image, [_crop(0, "A"), bad])
        n = store._conn.execute("SELECT COUNT(*) FROM images").fetchone()[0]
        c = store._conn.execute("SELECT COUNT(*) FROM crops").fetchone()[0]
        assert (n, c) == (0, 0)


def test_counts_use_confirmed_labels_and_leave_flagged_out(tmp_path: Path) -> None:
    with Store.open(tmp_path / "db") as store:
        image = _save(store, "aa", "AABC", flags={3: frozenset({"touching"})})
        counts = store.sample_counts("s1")[0]
        assert counts.counts == {"A": 2, "B": 1, "C": 0} and counts.excluded == 1
        crops = store.image_crops(image)
        store.add_label(crops[3].id, "C", source="review", who="ana")
        store.add_label(crops[0].id, "B", source="review", who="ana")
        store.add_label(crops[0].id, "A", source="review", who="ben")
        counts = store.sample_counts("s1")[0]
        assert counts.counts == {"A": 2, "B": 1, "C": 1} and counts.excluded == 0
        history = store.label_history(crops[0].id)
        assert [(h.cls, h.who, h.superseded_at is None) for h in history] == [
            ("B", "ana", False), ("A", "ben", True)]
        assert counts.fraction("A") == 0.5


def test_failure_then_success_leaves_one_row(tmp_path: Path) -> None:
    with Store.open(tmp_path / "db") as store:
        store.record_failure(path="/in/aa.png", sample="s1", error="truncated", size=3,
                             sha256=None)
        store.record_failure(path="/in/aa.png", sample="s1", error="truncated", size=3,
                             sha256=None)
        assert store.sample_counts("s1")[0].failed_images == 1
        _save(store, "aa", "A")
        rows = store._conn.execute("SELECT status FROM images").fetchall()
        assert [r[0] for r in rows] == ["done"]


def test_unknown_sample_and_label(tmp_path: Path) -> None:
    with Store.open(tmp_path / "db") as store:
        with pytest.raises(UsageError, match="no sample named"):  # issue 16: exit 2, not 5
            store.sample_counts("nope")
        with pytest.raises(StoreError, match="unknown class"):
            store.add_label(1, "D", source="x", who="y")


def test_unwritable_location(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StoreError, match="cannot open the database"):
        Store.open(blocker / "db.sqlite3")


def test_labels_fingerprint_is_one_definition(tmp_path: Path) -> None:
    """Training records the fingerprint of the labels it read; `train` compares it with the
    store's: both must come from the same function, whatever order the labels come in."""
    with Store.open(tmp_path / "db") as store:
        crops = store.image_crops(_save(store, "aa", "ABCA"))
        store.set_labels([(crops[2].id, "A"), (crops[0].id, "C")], source="t", who="t")
        store.add_label(crops[0].id, "B", source="t", who="u")  # history is not part of it
        current = store.current_labels()
        pairs = [(r.crop_id, r.cls) for r in current]
        assert store.labels_fingerprint() == fingerprint_labels(pairs)
        assert fingerprint_labels(reversed(pairs)) == fingerprint_labels(pairs)
        assert store.labels_fingerprint()[1] == 2
        assert [(r.crop_id, r.cls, r.who) for r in current] == [
            (crops[0].id, "B", "u"), (crops[2].id, "A", "t")]


def test_crops_stored_before_the_content_hash_get_one_later(tmp_path: Path) -> None:
    """Schema 5 adds crops.pixels_sha256: crops of an older database have none until
    `labels import-folder` computes it from their files."""
    conn = sqlite3.connect(tmp_path / "db")
    for version, script in enumerate(MIGRATIONS[:4], 1):
        conn.executescript(script)
        conn.execute(f"PRAGMA user_version = {version}")
    conn.commit()
    conn.close()
    with Store.open(tmp_path / "db") as store:
        assert store.schema_version == len(MIGRATIONS) >= 5
        image_id = _save(store, "aa", "AB")
        crops = store.crops_of_image(image_id)
        assert store.crops_without_pixel_hash() == [(c.id, c.file) for c in crops]
        store.set_pixel_hashes([(crops[0].id, "f00"), (crops[1].id, "")])
        assert store.crops_without_pixel_hash() == []
        assert store.crops_with_pixels("f00") == [crops[0].id]
