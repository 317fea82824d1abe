"""Training augmentation: deterministic per seed, valid crops, and each style change does what
its setting says (crop style, issue 17)."""

from __future__ import annotations

import numpy as np

from chromowatch.settings import TrainingSettings
from chromowatch.training.augment import Augment, augment, augment_of

OFF = Augment(rotation=False, scale_jitter=0.0, contrast_jitter=0.0, margin_jitter=0.0,
              background_jitter=0.0, blur=0.0, jpeg_min_quality=0)


def _crop() -> np.ndarray:
    """An enhanced-looking crop: a dark rod 30 x 8 px on white, margins 10, 6, 10, 6 px."""
    image = np.full((46, 24, 3), 255, np.uint8)
    image[6:36, 10:18] = (120, 90, 130)
    image[12:14, 10:18] = (60, 40, 70)  # a band, so blur has an edge to soften
    return image


def _margins(view: np.ndarray) -> list[int]:
    ys, xs = np.nonzero(view.mean(axis=2) < 225)
    h, w = view.shape[:2]
    return [int(xs.min()), int(ys.min()), int(w - 1 - xs.max()), int(h - 1 - ys.max())]


def _only(**kw: object) -> Augment:
    return Augment(**{**OFF.__dict__, **kw})  # type: ignore[arg-type]


def test_the_same_seed_gives_the_same_views() -> None:
    first = augment(_crop(), np.random.default_rng(7), Augment())
    again = augment(_crop(), np.random.default_rng(7), Augment())
    assert first.shape == again.shape and (first == again).all()
    other = augment(_crop(), np.random.default_rng(8), Augment())
    assert other.shape != first.shape or (other != first).any()


def test_default_views_stay_valid_crops() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        view = augment(_crop(), rng, augment_of(TrainingSettings()))
        assert view.dtype == np.uint8 and view.ndim == 3 and view.shape[2] == 3
        grey = view.mean(axis=2)
        assert np.median(np.r_[grey[0], grey[-1], grey[:, 0], grey[:, -1]]) > 235
        assert 0.05 < (grey < 200).mean() < 0.6


def test_all_off_keeps_the_pixels_up_to_a_flip() -> None:
    view = augment(_crop(), np.random.default_rng(0), OFF)
    flips = [_crop(), _crop()[::-1], _crop()[:, ::-1], _crop()[::-1, ::-1]]
    assert any(view.shape == f.shape and (view == f).all() for f in flips)


def test_margin_jitter_redraws_each_side_within_its_range() -> None:
    rng = np.random.default_rng(1)
    seen = set()
    for _ in range(30):
        margins = _margins(augment(_crop(), rng, _only(margin_jitter=0.5)))
        assert all(4 <= m <= 12 for m in margins)  # mean 8 px, +-50%
        seen.add(tuple(margins))
    assert len(seen) > 10


def test_background_jitter_darkens_white_only_within_range() -> None:
    rng = np.random.default_rng(2)
    levels = []
    for _ in range(30):
        view = augment(_crop(), rng, _only(background_jitter=8.0))
        levels.append(int(view[0, 0, 0]))
        assert (view[0] == view[0, 0]).all()  # flat glass stays flat
    assert min(levels) >= 247 and max(levels) <= 255
    assert len(set(levels)) > 3


def test_blur_softens_and_jpeg_adds_noise() -> None:
    rng = np.random.default_rng(3)
    crop = _crop()
    blurred = [augment(crop, rng, _only(blur=1.5)) for _ in range(20)]
    sharp_edge = np.abs(np.diff(crop.astype(int), axis=0)).max()
    assert any(np.abs(np.diff(v.astype(int), axis=0)).max() < sharp_edge for v in blurred)
    compressed = [augment(crop, rng, _only(jpeg_min_quality=50)) for _ in range(20)]
    changed = [v for v in compressed if not any(
        v.shape == f.shape and (v == f).all() for f in (crop, crop[::-1], crop[:, ::-1],
                                                         crop[::-1, ::-1]))]
    assert 3 < len(changed) < 20  # about half the views
