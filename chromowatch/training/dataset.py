"""Confirmed labels as a dataset: crops in memory, a fixed holdout, batches.

Each crop is identified by the sha256 of its pixels, so two identical crops (the published
a034/a035) count once, and the split does not depend on database ids: a crop is in the
holdout when a hash of its identity says so (`holdout_percent`), whatever else is labelled,
so the holdout only grows as labels grow and no trained model ever saw a holdout crop. The
validation split (early stopping, member choice, calibration) is hashed the same way from
the rest.

Augmentation lives in `chromowatch.training.augment`. Batches are resized exactly as the
ensemble resizes for inference (PIL
bilinear to the model's input size), then ImageNet-normalised.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from chromowatch.classify.crops import read_crop
from chromowatch.errors import InputImageError
from chromowatch.records import CLASS_NAMES
from chromowatch.store import CurrentLabel

log = logging.getLogger(__name__)

HOLDOUT = "holdout"
VALIDATION = "validation"
TRAIN = "train"


@dataclass(frozen=True)
class LabelledCrop:
    crop_id: int
    label: int  # index into CLASS_NAMES
    sample: str
    key: str  # sha256 of the pixels: the crop's identity for splits and dedupe
    image: np.ndarray  # enhanced RGB uint8
    spread: str = ""  # the spread it was cut from; "" for a crop imported as its own file
    audit: bool = False  # answered as a random audit: the sample's unbiased check, never trained on


def pixel_key(image: np.ndarray) -> str:
    h = hashlib.sha256(f"{image.shape}|".encode())
    h.update(np.ascontiguousarray(image).tobytes())
    return h.hexdigest()


def _fraction(key: str, salt: str) -> float:
    digest = hashlib.sha256(f"{salt}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 * 100.0


def split_of(key: str, holdout_percent: float, validation_percent: float) -> str:
    """holdout / validation / train for one crop identity; stable, independent of the rest."""
    if _fraction(key, "holdout") < holdout_percent:
        return HOLDOUT
    if _fraction(key, "validation") < validation_percent:
        return VALIDATION
    return TRAIN


def load_labelled(rows: Sequence[CurrentLabel]) -> tuple[list[LabelledCrop], list[str]]:
    """The crops of the store's current labels (rows of Store.current_labels), deduplicated
    by content (the most recent label wins); unreadable files are reported and left out.
    A crop's spread is its image when that image has several labelled crops (a spread with
    boxes); a crop imported as its own file has none."""
    by_key: dict[str, tuple[float, LabelledCrop]] = {}
    problems: list[str] = []
    per_image = Counter(r.image_path for r in rows)
    for r in rows:
        try:
            image = read_crop(r.file)
        except InputImageError as exc:
            problems.append(f"crop {r.crop_id}: {exc.message}")
            continue
        key = pixel_key(image)
        spread = r.image_path if per_image[r.image_path] > 1 else ""
        crop = LabelledCrop(r.crop_id, CLASS_NAMES.index(r.cls), r.sample, key, image, spread,
                            audit=r.review == "audit")
        created = r.created_at
        if key in by_key:
            log.debug("crop %d has the same pixels as crop %d; counted once", crop.crop_id,
                      by_key[key][1].crop_id)
            if by_key[key][0] > created:
                continue
        by_key[key] = (created, crop)
    crops = sorted((c for _, c in by_key.values()), key=lambda c: c.crop_id)
    return crops, problems


def split(crops: Sequence[LabelledCrop], holdout_percent: float, validation_percent: float
          ) -> dict[str, list[LabelledCrop]]:
    """Crops by split; audit crops always go to the holdout: the review queue's audit
    estimates the current model's error on its sample, which it can only do for a model
    that never saw those crops."""
    out: dict[str, list[LabelledCrop]] = {HOLDOUT: [], VALIDATION: [], TRAIN: []}
    for crop in crops:
        part = HOLDOUT if crop.audit else split_of(crop.key, holdout_percent, validation_percent)
        out[part].append(crop)
    return out


def class_counts(crops: Sequence[LabelledCrop]) -> dict[str, int]:
    counts = dict.fromkeys(CLASS_NAMES, 0)
    for crop in crops:
        counts[CLASS_NAMES[crop.label]] += 1
    return counts


def balanced_indices(labels: np.ndarray, n: int, rng: np.random.Generator,
                     samples: Sequence[str] | None = None) -> np.ndarray:
    """n indices drawn with replacement so that every present class is equally likely;
    given `samples`, every labelled sample also weighs the same in all (a new sample's 50
    reviewed crops are not drowned by another sample's 650)."""
    counts = np.bincount(labels, minlength=len(CLASS_NAMES)).astype(np.float64)
    weights = np.where(counts[labels] > 0, 1.0 / counts[labels], 0.0)
    if samples is not None:
        names = np.asarray(samples)
        for name in np.unique(names):
            mine = names == name
            weights[mine] /= weights[mine].sum()
    return rng.choice(len(labels), size=n, replace=True, p=weights / weights.sum())


def to_batch(images: Sequence[np.ndarray], input_size: tuple[int, int],
             mean: Sequence[float], std: Sequence[float]) -> object:
    """A float tensor (N, 3, H, W) as the ensemble prepares inputs: PIL bilinear resize,
    /255, normalised. Returned channels_last (the memory of the NHWC array)."""
    import torch
    from PIL import Image

    height, width = input_size
    resized = np.empty((len(images), height, width, 3), np.uint8)
    for i, image in enumerate(images):
        if image.ndim == 2:
            image = np.repeat(image[:, :, None], 3, axis=2)
        resized[i] = np.asarray(Image.fromarray(image).resize((width, height),
                                                              Image.Resampling.BILINEAR))
    x = torch.from_numpy(resized).permute(0, 3, 1, 2).float().div_(255.0)
    m = torch.tensor(list(mean), dtype=torch.float32).view(1, 3, 1, 1)
    s = torch.tensor(list(std), dtype=torch.float32).view(1, 3, 1, 1)
    return x.sub_(m).div_(s)
