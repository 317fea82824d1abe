"""Synthetic samples for the report, delivery and export tests: rows written through
Store.save_image, with real small PNG files for the crops and the spreads."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from chromowatch.records import BBox, Prediction
from chromowatch.store import ImageRow, Store, StoredCrop


def _png(path: Path, rgb: np.ndarray) -> str:
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), rgb)
    return str(path)


def crop_image(label: str, seed: int) -> np.ndarray:
    """A white crop with one rod (A), a rod opening at one end (B) or two rods (C)."""
    img = np.full((40, 28, 3), 255, np.uint8)
    shade = 40 + seed % 60
    if label == "A":
        img[6:34, 11:17] = shade
    elif label == "B":
        img[6:34, 10:13] = shade
        img[6:34, 15:18] = shade
        img[18:22, 10:18] = shade
    else:
        img[6:34, 7:11] = shade
        img[6:34, 17:21] = shade
    return img


def add_image(
    store: Store,
    root: Path,
    sample: str,
    metaphases: Sequence[str],
    *,
    image_no: int,
    model_version: str = "test-model-0123456789ab",
    flags: dict[int, str] | None = None,
    confidence: float = 0.8,
    outside: str = "",
) -> int:
    """One spread: each string in `metaphases` is one metaphase's labels (e.g. "AABC");
    `outside` lists labels of chromosomes in no metaphase; `flags` maps crop index -> flag."""
    spread = np.full((300, 400, 3), 200, np.uint8)
    crops: list[StoredCrop] = []
    labels = [(m, lab) for m, labs in enumerate(metaphases) for lab in labs]
    labels += [(-1, lab) for lab in outside]
    sha = hashlib.sha256(f"{sample}/{image_no}".encode()).hexdigest()
    for i, (metaphase, lab) in enumerate(labels):
        x, y = 10 + (i % 12) * 32, 10 + (i // 12) * 44
        spread[y + 6:y + 34, x + 11:x + 17] = 60
        file = _png(root / "crops" / sha[:8] / f"{i:04d}.png", crop_image(lab, i))
        rest = (1 - confidence) / 2
        probs = {c: (confidence if c == lab else rest) for c in "ABC"}
        crops.append(StoredCrop(
            i, BBox(x, y, 28, 40), metaphase,
            frozenset({flags[i]}) if flags and i in flags else frozenset(), file,
            Prediction(lab, probs, {"m1": [probs["A"], probs["B"], probs["C"]]}, model_version),
        ))
    path = _png(root / "spreads" / sample / f"{image_no}.png", spread)
    image = ImageRow(path=path, sample=sample, sha256=sha, size=1000, width=400, height=300,
                     metaphases=len(metaphases))
    return store.save_image(image, crops)


def make_sample(store: Store, root: Path, sample: str, cells: Sequence[str],
                **kwargs: object) -> None:
    """One image per metaphase, so `cells` = labels per metaphase."""
    for n, cell in enumerate(cells):
        add_image(store, root, sample, [cell], image_no=n, **kwargs)  # type: ignore[arg-type]
