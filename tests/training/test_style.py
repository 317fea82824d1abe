"""The crop style measure: it tells styles apart when they differ, and not when they do not."""

from __future__ import annotations

import numpy as np

from chromowatch.training import style


def _crop(rng: np.random.Generator, level: float, margin: int = 6) -> np.ndarray:
    """A rod of chromosome grey `level` (+- noise) on white, `margin` px from the edge."""
    length, width = int(rng.integers(20, 40)), int(rng.integers(5, 8))
    if rng.random() < 0.5:
        length, width = width, length
    image = np.full((length + 2 * margin, width + 2 * margin, 3), 255.0)
    rod = level + rng.normal(0, 12, size=(length, width, 1)) + np.array([4.0, -6.0, 2.0])
    image[margin:margin + length, margin:margin + width] = rod
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def _source(seed: int, classes: np.ndarray, shift: float = 0.0, by_class: float = 0.0
            ) -> np.ndarray:
    rng = np.random.default_rng(seed)
    levels = rng.uniform(120, 145, size=len(classes)) + shift + by_class * classes
    return style.feature_matrix([_crop(rng, float(v)) for v in levels])


def test_features_have_their_names_and_see_the_chromosome() -> None:
    f = style.feature_matrix([_crop(np.random.default_rng(0), 120.0)])
    assert f.shape == (1, len(style.FEATURES))
    assert 100 < f[0, style.FEATURES.index("fg_mean")] < 140
    assert f[0, style.FEATURES.index("bg_white_255")] == 1.0


def test_identical_styles_are_near_chance() -> None:
    classes = np.repeat([0, 1, 2], 40)
    acc = style.source_accuracy(_source(1, classes), classes, _source(2, classes), classes)
    assert 0.35 < acc.accuracy < 0.65


def test_a_brightness_shift_is_told_apart() -> None:
    classes = np.repeat([0, 1, 2], 40)
    acc = style.source_accuracy(_source(1, classes), classes, _source(2, classes, shift=25.0),
                                classes)
    assert acc.accuracy > 0.9
    assert set(acc.per_class) == {0, 1, 2} and min(acc.per_class.values()) > 0.8


def test_a_different_class_mix_is_not_taken_for_style() -> None:
    # Class 1 crops are darker in both sources; source a is mostly class 0, b mostly class 1.
    # Unbalanced, darkness would give the source away; balanced by class it must not.
    a = np.r_[np.zeros(90, int), np.ones(10, int)]
    b = np.r_[np.zeros(10, int), np.ones(90, int)]
    fa, fb = _source(1, a, by_class=-40.0), _source(2, b, by_class=-40.0)
    acc = style.source_accuracy(fa, a, fb, b)
    assert 0.3 < acc.accuracy < 0.7
    assert acc.per_class_n == {0: 10, 1: 10}


def test_wasserstein_is_the_shift_in_grey_levels() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(130, 15, 5000)
    assert abs(style.wasserstein(a, a + 25) - 25) < 0.5
    assert style.wasserstein(a, a) == 0.0
