"""A store with crops (real PNG files) and users, for the web app's tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from chromowatch.records import BBox, Prediction
from chromowatch.settings import Settings
from chromowatch.store import ImageRow, Store, StoredCrop
from chromowatch.web.passwords import hash_password

PASSWORD = "correct horse battery"


def prediction(i: int, rng: np.random.Generator) -> Prediction:
    called = "ABC"[i % 3]
    top = float(rng.uniform(0.4, 0.95))
    probs = {c: (1 - top) / 2 for c in "ABC"}
    probs[called] = top
    return Prediction(called, probs, {"m1": [probs[c] for c in "ABC"]}, "tiny-v1")


def crop_png(path: Path, i: int) -> str:
    """A small chromosome-like picture: a dark bar on white, one per crop."""
    img = np.full((48, 32, 3), 255, np.uint8)
    img[6 + i % 8:42, 12:20] = (90 + (i * 7) % 80, 60, 120)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)
    return str(path)


def spread_png(path: Path, boxes: list[BBox], width: int, height: int) -> str:
    """A grey spread with a dark bar in each box."""
    img = np.full((height, width, 3), 200, np.uint8)
    for b in boxes:
        img[b.y + 1:b.y + b.h - 1, b.x + 2:b.x + b.w - 2] = (70, 40, 90)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)
    return str(path)


def fill_store(settings: Settings, root: Path, sample: str = "mut", n: int = 60) -> None:
    """One spread of `n` crops (boxes in a row), its file and the crops' files under root."""
    rng = np.random.default_rng(0)
    boxes = [BBox(10 * i, 5, 8, 9) for i in range(n)]
    crops = [StoredCrop(i, boxes[i], -1, frozenset(),
                        crop_png(root / "cropfiles" / f"{i}.png", i), prediction(i, rng))
             for i in range(n)]
    spread = spread_png(root / "spread.png", boxes, 10 * n + 10, 60)
    with Store.open(settings.paths.db) as store:
        store.save_image(ImageRow(spread, sample, f"sha-{sample}", 1, 10 * n + 10, 60), crops)


def add_users(settings: Settings, **roles: str) -> None:
    with Store.open(settings.paths.db) as store:
        for name, role in roles.items():
            store.add_user(name, role, hash_password(PASSWORD))
