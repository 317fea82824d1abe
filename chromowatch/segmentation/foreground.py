"""The spread's foreground: how dark each pixel is above its background, its darkness scale
(threshold, stroke width, core darkness; with the typical object, the `yardstick`), interphase
nuclei cut out, and the connected pieces (`Unit`) that the later steps split, pair and group."""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
from scipy import ndimage

from chromowatch.settings import SegmentSettings


@dataclass(frozen=True)
class Scale:
    """How dark and how wide the spread's chromosomes are, measured before there are units."""

    threshold: float  # darkness above background that makes a pixel an object's
    stroke: float  # typical stroke width of the objects, pixels
    peak: float  # typical darkness of chromosome cores


@dataclass
class Unit:
    """One connected piece of the foreground: a chromosome, a chromatid, or a clump."""

    label: int
    x: int
    y: int
    w: int
    h: int
    area: int
    cx: float
    cy: float
    angle: float  # orientation of the major axis, radians in [0, pi)
    length: float  # major-axis length of an equivalent rod
    thickness: float  # area / length
    flatness: float  # share of pixels above 70% of the peak: high for two chromatids side by side
    darkest: float  # its largest darkness

    @property
    def elongation(self) -> float:
        """Length over thickness: a rod's is high, a speck's or a blob's near 1."""
        return self.length / max(self.thickness, 1e-6)


def measure_darkness(rgb: np.ndarray, luma: bool = False) -> tuple[np.ndarray, float]:
    """How much darker than the local background each pixel is, and the background noise.

    Each channel is measured against its own background (its large-scale upper envelope), so
    uneven illumination and exposure cancel out, and the channel that loses most light at a
    pixel counts there: Giemsa absorbs green most, but a camera's white balance or a warm lamp
    moves the background's colour, and the darkest channel of a tinted background carries
    little of the stain. With `luma`, brightness alone is measured: a JPEG that stores colour
    at half resolution blurs the stain's channel (the sisters' gap, the seam between two
    touching chromosomes) but keeps brightness sharp.
    """
    h, w = rgb.shape[:2]
    factor = max(1, round(max(h, w) / 180))
    size = (max(1, w // factor), max(1, h // factor))
    if luma:
        channels = [cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)]
    elif np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2]):
        channels = [rgb[..., 0]]  # a grey camera's frame: one channel says it all
    else:
        channels = list(cv2.split(rgb))
    drops = []
    for channel in channels:
        small = cv2.resize(channel, size, interpolation=cv2.INTER_AREA)
        k = max(3, (max(small.shape) // 6) | 1)
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
        bg_small = cv2.morphologyEx(
            small, cv2.MORPH_CLOSE, kernel, borderType=cv2.BORDER_REPLICATE
        )
        bg_small = cv2.blur(bg_small, (max(3, k // 3 | 1),) * 2)
        background = cv2.resize(bg_small, (w, h), interpolation=cv2.INTER_LINEAR)
        drops.append(background.astype(np.int16) - channel.astype(np.int16))
    signed = drops[0]
    for drop in drops[1:]:
        np.maximum(signed, drop, out=signed)
    dark = cv2.GaussianBlur(np.clip(signed, 0, 255).astype(np.uint8), (3, 3), 0)
    return dark, _noise_sigma(signed)


def _noise_sigma(signed: np.ndarray) -> float:
    """Background noise from the lower half of the background's peak (objects only darken)."""
    hist = np.bincount((signed[::2, ::2].ravel() + 256).astype(np.intp), minlength=512)
    mode = int(np.argmax(hist))
    below = hist[: mode + 1].astype(np.float64)
    lower = _hist_quantile(below, 0.3173)  # mode - 1 sigma on a normal curve
    return max(1.0, float(mode - lower))


def _hist_quantile(hist: np.ndarray, q: float) -> float:
    """The bin below which share `q` of the histogram's counts lie."""
    cdf = np.cumsum(hist)
    return float(np.searchsorted(cdf, q * cdf[-1]))


def measure_scale(dark: np.ndarray, sigma: float, settings: SegmentSettings) -> Scale | None:
    """Threshold and stroke width from the image itself (so exposure and zoom do not matter)."""
    floor = settings.noise_sigmas * sigma
    hist = np.bincount(dark.ravel(), minlength=256).astype(np.float64)
    hist[: int(floor) + 1] = 0
    if hist.sum() < 50:
        return None
    peak = _hist_quantile(hist, 0.9)
    threshold = max(floor, settings.threshold_fraction * peak)
    mask = (dark > threshold).astype(np.uint8)
    dist = cv2.distanceTransform(mask, cv2.DIST_L2, 3)
    ridge = (dist >= cv2.dilate(dist, np.ones((3, 3), np.uint8))) & (dist >= 1.0)
    values = dist[ridge]
    if values.size < 10:
        return None
    stroke = 2.0 * float(np.median(values))
    return Scale(threshold=threshold, stroke=stroke, peak=peak)


def remove_nuclei(
    mask: np.ndarray, scale: Scale, settings: SegmentSettings
) -> tuple[np.ndarray, int]:
    """Cut out regions far thicker than a chromosome (nuclei), with the rim around them.

    An opening with a disk of `nucleus_widths` strokes keeps only such regions; it is done with
    two distance transforms, which cost the same whatever the disk's size.
    """
    radius = settings.nucleus_widths * scale.stroke / 2.0
    dist = cv2.distanceTransform(mask, cv2.DIST_L2, 3)
    core = (dist > radius).astype(np.uint8)
    _mark_border_runs(mask, core, 2.0 * radius)
    if not core.any():
        return mask, 0
    n_core, _ = cv2.connectedComponents(core, connectivity=8)
    away = cv2.distanceTransform(1 - core, cv2.DIST_L2, 3)
    nuclei = away <= radius + scale.stroke
    out = mask.copy()
    out[nuclei] = 0
    return out, n_core - 1


def _mark_border_runs(mask: np.ndarray, core: np.ndarray, longest: float) -> None:
    """Mark in `core` the stretches of the image's edge that an object covers for more than
    `longest` pixels: a nucleus cut by the edge (too shallow for the thickness test), not a
    chromosome, which crosses the edge with its width."""
    for line, target in (
        (mask[0], core[0]),
        (mask[-1], core[-1]),
        (mask[:, 0], core[:, 0]),
        (mask[:, -1], core[:, -1]),
    ):
        edges = np.flatnonzero(np.diff(np.concatenate(([0], line.astype(np.int8), [0]))))
        for start, stop in zip(edges[::2], edges[1::2], strict=True):
            if stop - start > longest:
                target[start:stop] = 1


def find_units(labels: np.ndarray, n: int, dark: np.ndarray) -> list[Unit]:
    """Area, box, centroid, principal axis and profile flatness of labels 1..n-1.

    Flatness tells one chromatid (a peaked cross-section) from two pressed together (a class A
    chromosome, flat-topped), whatever the magnification.
    """
    ys, xs = np.nonzero(labels)
    lab = labels[ys, xs]
    count = np.maximum(np.bincount(lab, minlength=n).astype(np.float64), 1.0)
    sx = np.bincount(lab, xs, n)
    sy = np.bincount(lab, ys, n)
    mx, my = sx / count, sy / count
    dx = xs - mx[lab]
    dy = ys - my[lab]
    cxx = np.bincount(lab, dx * dx, n) / count
    cyy = np.bincount(lab, dy * dy, n) / count
    cxy = np.bincount(lab, dx * dy, n) / count
    units = []
    for i, window in enumerate(ndimage.find_objects(labels, max_label=n - 1), start=1):
        if window is None:
            continue
        rows, cols = window
        area = int(count[i])
        own = dark[window][labels[window] == i]
        darkest = float(own.max())
        high = int(np.count_nonzero(own > 0.7 * darkest))
        a, b, c = cxx[i], cyy[i], cxy[i]
        spread = math.sqrt(max(0.0, (a - b) ** 2 / 4 + c * c))
        length = max(math.sqrt(12.0 * ((a + b) / 2 + spread)), 1.0)
        angle = (0.5 * math.atan2(2 * c, a - b)) % math.pi
        units.append(
            Unit(
                i,
                cols.start,
                rows.start,
                cols.stop - cols.start,
                rows.stop - rows.start,
                area,
                mx[i],
                my[i],
                angle,
                length,
                area / length,
                high / area,
                darkest,
            )
        )
    return units

