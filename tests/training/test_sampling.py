"""Training data: draws with classes and samples balanced, and audit crops kept out."""

from __future__ import annotations

import numpy as np

from chromowatch.training.dataset import balanced_indices


def test_classes_are_drawn_equally() -> None:
    labels = np.array([0] * 90 + [1] * 9 + [2] * 1)
    drawn = labels[balanced_indices(labels, 30_000, np.random.default_rng(0))]
    shares = np.bincount(drawn, minlength=3) / len(drawn)
    assert np.allclose(shares, 1 / 3, atol=0.02)


def test_a_small_new_sample_weighs_as_much_as_a_large_one() -> None:
    labels = np.array([0, 1, 2] * 200 + [0, 1, 2] * 10)
    samples = ["wt"] * 600 + ["new"] * 30
    rng = np.random.default_rng(0)
    drawn = np.array(samples)[balanced_indices(labels, 30_000, rng, samples)]
    assert abs((drawn == "new").mean() - 0.5) < 0.02
    # without it, one crop one vote
    drawn = np.array(samples)[balanced_indices(labels, 30_000, rng)]
    assert abs((drawn == "new").mean() - 30 / 630) < 0.01


def test_audit_crops_are_never_trained_on() -> None:
    from chromowatch.training.dataset import HOLDOUT, LabelledCrop, split

    image = np.zeros((4, 4, 3), np.uint8)
    crops = [LabelledCrop(i, i % 3, "s", f"key-{i}", image, audit=i % 2 == 0)
             for i in range(200)]
    parts = split(crops, 20, 15)
    assert all(c.audit for c in crops if c.crop_id % 2 == 0)
    assert {c.crop_id for c in crops if c.audit} <= {c.crop_id for c in parts[HOLDOUT]}
    others = [c for c in crops if not c.audit]
    assert 0 < sum(c in parts[HOLDOUT] for c in others) < len(others) / 2


def test_the_store_says_which_labelled_crops_were_audits(tmp_path: object) -> None:
    from pathlib import Path

    from chromowatch.records import BBox, Prediction
    from chromowatch.store import ImageRow, Store, StoredCrop

    p = Prediction("A", {"A": 0.8, "B": 0.1, "C": 0.1}, {}, "m")
    with Store.open(Path(str(tmp_path)) / "db.sqlite3") as store:
        store.save_image(ImageRow("/s.png", "s", "sha", 1, 50, 50),
                         [StoredCrop(i, BBox(i, 0, 5, 5), -1, frozenset(), f"/c{i}.png", p)
                          for i in range(3)])
        ids = [r.crop_id for r in store.review_rows("s")]
        store.enqueue_review([(ids[0], "audit", 0.1, "m"), (ids[1], "uncertain", 0.9, "m")])
        store.set_labels([(i, "B") for i in ids], source="test", who="me")
        reasons = {r.crop_id: r.review for r in store.current_labels()}
    assert reasons == {ids[0]: "audit", ids[1]: "uncertain", ids[2]: None}
