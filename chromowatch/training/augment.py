"""Augmentation of enhanced crops for training: geometry, and style so that style is no cue.

Chromosome crops have no up, down or handedness: a rotation by any angle followed by
re-cropping to the chromosome with a margin like the original (what the cropper would have cut
from a spread with the chromosome at that angle), flips and a change of resolution.

Crop style (issue 17): the training labels mix crops of different sources (the published
enhanced crops, chromowatch's crops of a lab's spreads), each source mostly of one class, so a
network could learn a source's look instead of the chromosome. Each view therefore also gets
its own framing (every side's margin redrawn), stain darkness, gamma and saturation, background
level, blur and JPEG compression, over ranges wider than the differences that
`benchmarks/crop_style.py` measures between the sources.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from PIL import Image

    from chromowatch.settings import TrainingSettings

log = logging.getLogger(__name__)

DARK = 225  # grey level below which a pixel of an enhanced crop is chromosome
WHITE = (255, 255, 255)


@dataclass(frozen=True)
class Augment:
    """Ranges of the random changes; 0 (or False) turns one off. See TrainingSettings."""

    rotation: bool = True
    scale_jitter: float = 0.15
    contrast_jitter: float = 0.15
    margin_jitter: float = 0.6
    background_jitter: float = 8.0
    blur: float = 1.0
    jpeg_min_quality: int = 70


def augment_of(cfg: TrainingSettings) -> Augment:
    """The augmentation the training settings ask for."""
    return Augment(rotation=cfg.rotation, scale_jitter=cfg.scale_jitter,
                   contrast_jitter=cfg.contrast_jitter, margin_jitter=cfg.margin_jitter,
                   background_jitter=cfg.background_jitter, blur=cfg.blur,
                   jpeg_min_quality=cfg.jpeg_min_quality)


def _dark_box(grey: np.ndarray) -> tuple[int, int, int, int] | None:
    ys, xs = np.nonzero(grey < DARK)
    if len(xs) == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def _margins(pil: Image.Image) -> np.ndarray | None:
    """left, top, right, bottom margins (px) around the chromosome; None without one."""
    grey = np.asarray(pil.convert("L"))
    box = _dark_box(grey)
    if box is None:
        return None
    h, w = grey.shape
    return np.array([box[0], box[1], w - box[2], h - box[3]], np.float64)


def _reframe(pil: Image.Image, mean_margin: float, rng: np.random.Generator, aug: Augment
             ) -> Image.Image:
    """Cut (or widen on white) to the chromosome plus a margin redrawn for every side: the
    mean margin times a factor within scale_jitter (the same on all sides) and within
    margin_jitter (each side its own)."""
    from PIL import Image

    box = _dark_box(np.asarray(pil.convert("L")))
    if box is None:
        return pil
    base = mean_margin * float(rng.uniform(1 - aug.scale_jitter, 1 + aug.scale_jitter))
    j = aug.margin_jitter
    sides = np.maximum(0, np.rint(base * rng.uniform(1 - j, 1 + j, size=4))).astype(int)
    x0, y0, x1, y1 = box
    size = (x1 - x0 + sides[0] + sides[2], y1 - y0 + sides[1] + sides[3])
    out = Image.new("RGB", size, WHITE)
    out.paste(pil.convert("RGB").crop((x0, y0, x1, y1)), (int(sides[0]), int(sides[1])))
    return out


def _geometry(pil: Image.Image, rng: np.random.Generator, aug: Augment) -> Image.Image:
    """Rotation, new margins, flips, and a change of resolution."""
    from PIL import Image

    margins = _margins(pil)
    if aug.rotation and margins is not None:
        angle = float(rng.uniform(0.0, 360.0))
        pil = pil.rotate(angle, resample=Image.Resampling.BILINEAR, expand=True,
                         fillcolor=WHITE)
    if margins is not None and (aug.rotation or aug.margin_jitter or aug.scale_jitter):
        pil = _reframe(pil, float(margins.mean()), rng, aug)
    if rng.random() < 0.5:
        pil = pil.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if not aug.rotation and rng.random() < 0.5:
        pil = pil.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    if aug.scale_jitter:
        s = float(rng.uniform(1 - aug.scale_jitter, 1 + aug.scale_jitter))
        size = (max(4, round(pil.width * s)), max(4, round(pil.height * s)))
        pil = pil.resize(size, Image.Resampling.BILINEAR)
    return pil


def _tone(out: np.ndarray, rng: np.random.Generator, aug: Augment) -> np.ndarray:
    """Stain darkness, gamma and saturation (contrast_jitter), then the background level:
    white becomes up to background_jitter grey levels darker, black stays black."""
    if aug.contrast_jitter:
        j = aug.contrast_jitter
        darkness = (255.0 - out) * float(rng.uniform(1 - j, 1 + j))
        out = 255.0 - np.clip(darkness, 0, 255)
        out = 255.0 * (out / 255.0) ** float(rng.uniform(1 - j, 1 + j))
        if out.ndim == 3:  # saturation: stains and cameras differ in how purple they are
            grey = out.mean(axis=2, keepdims=True)
            out = grey + (out - grey) * float(rng.uniform(1 - 2 * j, 1 + 2 * j))
    if aug.background_jitter:
        out = out * (1.0 - float(rng.uniform(0.0, aug.background_jitter)) / 255.0)
    return out


def _blur_and_jpeg(image: np.ndarray, rng: np.random.Generator, aug: Augment) -> np.ndarray:
    """Half the views blurred (Gaussian, sigma up to `blur` px), half passed through JPEG of
    a quality from jpeg_min_quality to 100."""
    import cv2

    if aug.blur and rng.random() < 0.5:
        image = cv2.GaussianBlur(image, (0, 0), float(rng.uniform(0.1, aug.blur)))
    if aug.jpeg_min_quality and rng.random() < 0.5:
        quality = int(rng.integers(aug.jpeg_min_quality, 101))
        ok, data = cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
        decoded = cv2.imdecode(data, cv2.IMREAD_COLOR) if ok else None
        if decoded is not None:
            image = np.ascontiguousarray(decoded[..., ::-1])
    return image


def augment(image: np.ndarray, rng: np.random.Generator, aug: Augment) -> np.ndarray:
    """One random view of an enhanced crop (RGB uint8, white background)."""
    from PIL import Image

    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    pil = _geometry(Image.fromarray(image), rng, aug)
    out = _tone(np.asarray(pil.convert("RGB")).astype(np.float32), rng, aug)
    return _blur_and_jpeg(np.clip(np.rint(out), 0, 255).astype(np.uint8), rng, aug)
