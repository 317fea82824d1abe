"""Training draws: classes balanced, and every labelled sample weighing the same."""

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
