"""Confirmed labels as a dataset: crops in memory, a fixed holdout, augmentation, batches.

Each crop is identified by the sha256 of its pixels, so two identical crops (the published
a034/a035) count once, and the split does not depend on database ids: a crop is in the
holdout when a hash of its identity says so (`holdout_percent`), whatever else is labelled,
so the holdout only grows as labels grow and no trained model ever saw a holdout crop. The
validation split (early stopping, member choice, calibration) is hashed the same way from
the rest.

Augmentation suits chromosome crops, which have no up, down or handedness: a rotation by any
angle followed by re-cropping to the chromosome with a margin like the original (what the
cropper would have cut from a spread with the chromosome at that angle), flips, a change of
resolution and margin, and small changes of stain darkness, gamma and saturation on
the white background. Batches are resized exactly as the ensemble resizes for inference (PIL
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
_DARK = 225  # grey level below which a pixel of an enhanced crop is chromosome


@dataclass(frozen=True)
class LabelledCrop:
    crop_id: int
    label: int  # index into CLASS_NAMES
    sample: str
    key: str  # sha256 of the pixels: the crop's identity for splits and dedupe
    image: np.ndarray  # enhanced RGB uint8
    spread: str = ""  # the spread it was cut from; "" for a crop imported as its own file


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
        crop = LabelledCrop(r.crop_id, CLASS_NAMES.index(r.cls), r.sample, key, image, spread)
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
    out: dict[str, list[LabelledCrop]] = {HOLDOUT: [], VALIDATION: [], TRAIN: []}
    for crop in crops:
        out[split_of(crop.key, holdout_percent, validation_percent)].append(crop)
    return out


def class_counts(crops: Sequence[LabelledCrop]) -> dict[str, int]:
    counts = dict.fromkeys(CLASS_NAMES, 0)
    for crop in crops:
        counts[CLASS_NAMES[crop.label]] += 1
    return counts


def balanced_indices(labels: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n indices drawn with replacement so that every present class is equally likely."""
    counts = np.bincount(labels, minlength=len(CLASS_NAMES)).astype(np.float64)
    weights = np.where(counts[labels] > 0, 1.0 / counts[labels], 0.0)
    return rng.choice(len(labels), size=n, replace=True, p=weights / weights.sum())


@dataclass(frozen=True)
class Augment:
    rotation: bool = True
    scale_jitter: float = 0.15
    contrast_jitter: float = 0.15


def _dark_box(grey: np.ndarray) -> tuple[int, int, int, int] | None:
    ys, xs = np.nonzero(grey < _DARK)
    if len(xs) == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def augment(image: np.ndarray, rng: np.random.Generator, aug: Augment) -> np.ndarray:
    """One random view of an enhanced crop (RGB uint8, white background)."""
    from PIL import Image

    pil = Image.fromarray(image)
    grey = np.asarray(pil.convert("L"))
    box = _dark_box(grey)
    if aug.rotation and box is not None:
        h, w = grey.shape
        margins = np.array([box[0], box[1], w - box[2], h - box[3]], np.float64)
        angle = float(rng.uniform(0.0, 360.0))
        pil = pil.rotate(angle, resample=Image.Resampling.BILINEAR, expand=True,
                         fillcolor=(255, 255, 255))
        rotated = np.asarray(pil.convert("L"))
        tight = _dark_box(rotated)
        if tight is not None:
            margin = float(margins.mean()) * float(
                rng.uniform(1 - aug.scale_jitter, 1 + aug.scale_jitter) if aug.scale_jitter else 1)
            m = max(0, round(margin))
            rh, rw = rotated.shape
            pil = pil.crop((max(0, tight[0] - m), max(0, tight[1] - m),
                            min(rw, tight[2] + m), min(rh, tight[3] + m)))
    if rng.random() < 0.5:
        pil = pil.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if not aug.rotation and rng.random() < 0.5:
        pil = pil.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    if aug.scale_jitter:
        s = float(rng.uniform(1 - aug.scale_jitter, 1 + aug.scale_jitter))
        size = (max(4, round(pil.width * s)), max(4, round(pil.height * s)))
        pil = pil.resize(size, Image.Resampling.BILINEAR)
    out = np.asarray(pil).astype(np.float32)
    if aug.contrast_jitter:
        j = aug.contrast_jitter
        darkness = (255.0 - out) * float(rng.uniform(1 - j, 1 + j))
        out = 255.0 - np.clip(darkness, 0, 255)
        out = 255.0 * (out / 255.0) ** float(rng.uniform(1 - j, 1 + j))
        if out.ndim == 3:  # saturation: stains and cameras differ in how purple they are
            grey = out.mean(axis=2, keepdims=True)
            out = grey + (out - grey) * float(rng.uniform(1 - 2 * j, 1 + 2 * j))
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


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
