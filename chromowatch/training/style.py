"""Crop style: how alike two sources of enhanced crops look, apart from what they show.

Issue 17: crops cut and enhanced by chromowatch and the published enhanced crops should be
indistinguishable in style, or a network learns the source instead of the chromosome. Two
measures:

- `describe`: per-source statistics (grey levels of chromosome and background pixels, margins
  around the chromosome, crop size, chromosome thickness) and `wasserstein` distances between
  the sources' pooled grey levels;
- `source_accuracy`: a logistic regression on simple style features (`style_features`), cross-
  validated, that tries to tell the sources apart. The crops are first balanced by class (as
  many of each class from either source), so the class mix cannot give the source away; 0.5
  means alike.

Pure numpy and OpenCV; no torch.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

DARK = 225  # grey level below which a pixel of an enhanced crop counts as chromosome (margins)
FG_BINS = (0, 64, 96, 128, 160, 192, 224, 256)
FEATURES = (
    "fg_mean", "fg_std", *(f"fg_hist_{a}_{b}" for a, b in itertools.pairwise(FG_BINS)),
    "bg_mean", "bg_std", "bg_white_255", "bg_below_250", "dark_share", "margin_mean",
    "margin_min", "aspect", "thickness", "sharpness", "hue_r_minus_b",
)
#: Features of grey levels and colour, and features of framing (where the chromosome sits).
INTENSITY = tuple(n for n in FEATURES if n.startswith(("fg_", "bg_", "hue", "sharpness")))
FRAMING = tuple(n for n in FEATURES if n not in INTENSITY)
DESCRIBED = ("fg_mean", "bg_mean", "bg_white_255", "margin_mean", "margin_min", "thickness",
             "sharpness")


def _grey(image: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image


def _otsu_dark(grey: np.ndarray) -> np.ndarray:
    import cv2

    if int(grey.min()) == int(grey.max()):
        return np.zeros(grey.shape, bool)
    _, dark = cv2.threshold(grey, 0, 1, cv2.THRESH_BINARY_INV + cv2.THRESH_OTSU)
    return dark > 0


def _margins(grey: np.ndarray) -> tuple[float, float, int]:
    """Mean and smallest side margin around the pixels darker than DARK, as shares of their
    box's longer side; and that side in px."""
    ys, xs = np.nonzero(grey < DARK)
    if len(xs) == 0:
        return 0.0, 0.0, 1
    h, w = grey.shape
    long_side = max(int(xs.max() - xs.min()) + 1, int(ys.max() - ys.min()) + 1)
    sides = np.array([xs.min(), ys.min(), w - 1 - xs.max(), h - 1 - ys.max()], np.float64)
    return float(sides.mean() / long_side), float(sides.min() / long_side), long_side


def _sharpness(grey: np.ndarray, dark: np.ndarray) -> float:
    """Mean |Laplacian| on the chromosome after resizing the crop to 64 px, as a network's
    input resize would: a crop upsampled from fewer pixels is softer."""
    import cv2

    small = cv2.resize(grey.astype(np.float32), (64, 64), interpolation=cv2.INTER_LINEAR)
    mask = cv2.resize(dark.astype(np.uint8), (64, 64), interpolation=cv2.INTER_NEAREST) > 0
    lap = np.abs(cv2.Laplacian(small, cv2.CV_32F))
    return float(lap[mask].mean()) if mask.any() else 0.0


def style_features(image: np.ndarray) -> np.ndarray:
    """The features of `FEATURES` for one enhanced crop (RGB or grey uint8)."""
    grey = _grey(image)
    dark = _otsu_dark(grey)
    fg = grey[dark].astype(np.float64) if dark.any() else np.array([255.0])
    bg = grey[~dark].astype(np.float64) if (~dark).any() else np.array([255.0])
    hist = np.histogram(fg, bins=FG_BINS)[0] / len(fg)
    margin_mean, margin_min, long_side = _margins(grey)
    thickness = float(dark.sum()) / long_side / max(grey.shape)
    hue = 0.0
    if image.ndim == 3 and dark.any():
        hue = float(image[..., 0][dark].mean()) - float(image[..., 2][dark].mean())
    return np.array([
        fg.mean(), fg.std(), *hist, bg.mean(), bg.std(), np.mean(bg == 255), np.mean(bg < 250),
        dark.mean(), margin_mean, margin_min, grey.shape[0] / grey.shape[1], thickness,
        _sharpness(grey, dark), hue,
    ], np.float64)


def feature_matrix(images: Sequence[np.ndarray]) -> np.ndarray:
    return np.array([style_features(im) for im in images], np.float64).reshape(-1, len(FEATURES))


def wasserstein(a: np.ndarray, b: np.ndarray) -> float:
    """Earth mover's distance between two samples of grey levels (in grey levels)."""
    if len(a) == 0 or len(b) == 0:
        return float("nan")
    q = np.linspace(0.0, 1.0, 201)
    return float(np.mean(np.abs(np.quantile(a, q) - np.quantile(b, q))))


def pooled_levels(images: Sequence[np.ndarray], rng: np.random.Generator, per_crop: int = 400
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Grey levels of chromosome and of background pixels, up to `per_crop` of each per crop."""
    fg: list[np.ndarray] = []
    bg: list[np.ndarray] = []
    for image in images:
        grey = _grey(image)
        dark = _otsu_dark(grey)
        for part, out in ((grey[dark], fg), (grey[~dark], bg)):
            if len(part):
                out.append(rng.choice(part, size=min(per_crop, len(part)), replace=False))
    empty = np.empty(0, np.uint8)
    return (np.concatenate(fg) if fg else empty), (np.concatenate(bg) if bg else empty)


def describe(features: np.ndarray, sizes: Sequence[int]) -> dict[str, float]:
    """Medians of the DESCRIBED features, and of the crops' longer side in px."""
    out = {name: float(np.median(features[:, FEATURES.index(name)])) for name in DESCRIBED}
    out["size_px"] = float(np.median(sizes)) if len(sizes) else float("nan")
    return out


def _fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1.0, steps: int = 25
                  ) -> np.ndarray:
    """Ridge logistic regression by Newton's method; x has a column of ones last."""
    w = np.zeros(x.shape[1])
    penalty = np.eye(x.shape[1]) * l2
    penalty[-1, -1] = 0.0
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-np.clip(x @ w, -30, 30)))
        grad = x.T @ (p - y) + penalty @ w
        hess = (x * (p * (1 - p))[:, None]).T @ x + penalty
        w -= np.linalg.solve(hess, grad)
    return w


def _cv_predictions(x: np.ndarray, y: np.ndarray, strata: np.ndarray, folds: int,
                    rng: np.random.Generator) -> np.ndarray:
    """Out-of-fold predictions (0/1), folds stratified by `strata`."""
    fold = np.empty(len(y), int)
    for s in np.unique(strata):
        idx = rng.permutation(np.nonzero(strata == s)[0])
        fold[idx] = np.arange(len(idx)) % folds
    pred = np.empty(len(y), int)
    for k in range(folds):
        train, test = fold != k, fold == k
        mean, std = x[train].mean(0), x[train].std(0) + 1e-9
        design = np.column_stack([(x - mean) / std, np.ones(len(x))])
        w = _fit_logistic(design[train], y[train])
        pred[test] = (design[test] @ w > 0).astype(int)
    return pred


@dataclass(frozen=True)
class SourceAccuracy:
    accuracy: float  # share of crops whose source the classifier got right (0.5: alike)
    per_class: dict[int, float]
    per_class_n: dict[int, int]  # crops of each source per class, after balancing


def _balanced(classes_a: np.ndarray, classes_b: np.ndarray, rng: np.random.Generator
              ) -> tuple[np.ndarray, np.ndarray]:
    """Indices into a and b: for every class, as many from each source (the smaller count)."""
    ia: list[np.ndarray] = []
    ib: list[np.ndarray] = []
    for c in np.intersect1d(classes_a, classes_b):
        a, b = np.nonzero(classes_a == c)[0], np.nonzero(classes_b == c)[0]
        n = min(len(a), len(b))
        ia.append(rng.choice(a, n, replace=False))
        ib.append(rng.choice(b, n, replace=False))
    if not ia:
        raise ValueError("the two sources share no class")
    return np.concatenate(ia), np.concatenate(ib)


def source_accuracy(features_a: np.ndarray, classes_a: np.ndarray, features_b: np.ndarray,
                    classes_b: np.ndarray, *, folds: int = 5, repeats: int = 5, seed: int = 0
                    ) -> SourceAccuracy:
    """Cross-validated accuracy of telling source a from b by style features, within classes.

    Each repeat draws a class-balanced subset of both sources and predicts every crop of it
    out of fold; the accuracies are averaged over repeats.
    """
    rng = np.random.default_rng(seed)
    hits: dict[int, list[float]] = {}
    counts: dict[int, int] = {}
    for _ in range(repeats):
        ia, ib = _balanced(classes_a, classes_b, rng)
        x = np.vstack([features_a[ia], features_b[ib]])
        y = np.concatenate([np.zeros(len(ia)), np.ones(len(ib))])
        cls = np.concatenate([classes_a[ia], classes_b[ib]])
        right = _cv_predictions(x, y, cls * 2 + y.astype(int), folds, rng) == y
        for c in np.unique(cls):
            hits.setdefault(int(c), []).extend(right[cls == c].tolist())
            counts[int(c)] = int(np.sum(classes_a[ia] == c))
    every = [h for c in hits for h in hits[c]]
    return SourceAccuracy(float(np.mean(every)),
                          {c: float(np.mean(v)) for c, v in sorted(hits.items())}, counts)
