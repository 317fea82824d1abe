"""Synthetic Giemsa-like metaphase spreads with known boxes and classes.

They feed unit tests and the demo (`chromowatch synth`); they look roughly like the ddx11
spreads (grey-lavender glass, dark purple chromosomes, big textured interphase nuclei,
debris) but they are *not* evidence of accuracy: every shape here is a guess at the real
thing, and a model that does well on them has learnt the guess.

Everything is drawn as "darkness" (optical density per unit of stain) on float maps and
turned into colour once, Beer-Lambert style, so overlapping objects darken plausibly and the
same chromosome renderer makes whole spreads and single training crops.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from chromowatch.records import CLASS_NAMES, BBox

logger = logging.getLogger(__name__)

#: Darkness from which a pixel counts as part of an object: boxes, label maps and the
#: touching test all use it, so a box encloses exactly the pixels that look dark.
MASK_THRESHOLD = 0.2
#: Free pixels kept between objects that are not meant to touch, so a contour segmenter
#: can separate them (measured between the thresholded masks).
GAP_PX = 4
#: (name, A/B/C weights) of the samples `write_dataset` makes, in order; a control-like
#: sample and defective ones, so a demo report shows a difference.
SAMPLE_MIXES: tuple[tuple[str, tuple[float, float, float]], ...] = (
    ("control-like", (0.80, 0.15, 0.05)),
    ("cohesion-defective", (0.25, 0.45, 0.30)),
    ("severe-defective", (0.10, 0.30, 0.60)),
)

# Optical density per unit darkness, RGB: measured from ddx11 (glass ~(103,102,103),
# darkest chromatin ~(55,35,80)); green is absorbed most, blue least -> purple.
_CHROMATIN_OD = np.array([0.60, 1.05, 0.25], dtype=np.float32)
# Centres of two metaphases are at least this many (summed) radii apart; chromosomes reach
# out to 1.15 * 1.1 radii (strays, and clusters are a little wider than high).
_CLUSTER_SPACING = 1.5
# Stain crystals look blue-black rather than purple.
_CRYSTAL_OD = np.array([0.95, 1.05, 0.70], dtype=np.float32)


@dataclass(frozen=True)
class SynthObject:
    """One labelled chromosome (a class C object is the separated sister pair)."""

    bbox: BBox
    cls: str  # "A" | "B" | "C"
    metaphase: int
    touching: bool  # its mask touches another chromosome's mask (a segmenter sees one blob)


@dataclass(frozen=True)
class SynthSpread:
    """A rendered spread and its truth.

    `label_map` (int32, HxW) holds i+1 on the pixels of `objects[i]` (darkness >=
    MASK_THRESHOLD), 0 elsewhere; where two touching objects overlap, the one drawn first
    keeps the pixel. It lets segmentation tests compare masks, not just boxes.
    """

    rgb: np.ndarray
    objects: tuple[SynthObject, ...]
    nuclei: tuple[BBox, ...]
    label_map: np.ndarray | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class _Style:
    """Per-image look: exposure, stain strength, optics. Drawn fresh for every image."""

    glass: np.ndarray  # (3,) RGB level of clean glass
    chromatin_od: np.ndarray  # (3,) optical density per unit darkness
    stain: float  # multiplies all chromatin darkness
    noise: float  # sensor noise sigma, grey levels
    blur: float  # optics blur sigma, px
    scale: float  # magnification relative to ddx11

    @classmethod
    def draw(cls, rng: np.random.Generator) -> _Style:
        level = rng.uniform(94.0, 108.0)
        tint = np.array([0.0, -0.5, 1.5]) + rng.normal(0.0, 0.7, 3)
        od = _CHROMATIN_OD * (1.0 + rng.normal(0.0, 0.05, 3))
        return cls(
            glass=(level + tint).astype(np.float32),
            chromatin_od=od.astype(np.float32),
            stain=float(rng.uniform(0.9, 1.35)),
            noise=float(rng.uniform(0.6, 1.6)),
            blur=float(rng.uniform(0.8, 1.3)),
            scale=float(rng.uniform(0.9, 1.1)),
        )


# --------------------------------------------------------------------------- shapes


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Zero-mean, unit-std Gaussian-blurred noise: the grain of stain and chromatin."""
    import cv2

    noise: np.ndarray = rng.standard_normal(shape, dtype=np.float32)
    if sigma > 0:
        noise = cv2.GaussianBlur(noise, (0, 0), sigma)
    std = float(noise.std())
    return noise / std if std > 0 else noise


def _sister_paths(
    rng: np.random.Generator, cls: str, length: float, width: float
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Centre lines ((N,2) x,y in px, chromosome along x) and radii (N,) of both sisters.

    The class is only in how far apart the sisters sit along their length: A overlap into
    one rod; B touch at the centromere and open towards the ends; C keep a gap everywhere.
    """
    n = 25
    u = np.linspace(-1.0, 1.0, n)
    x = u * length / 2
    bend = rng.normal(0.0, 0.10 if cls == "A" else 0.05)
    wave = rng.normal(0.0, 0.04)
    y = length * (bend * (u**2 - 1.0 / 3.0) + wave * np.sin(np.pi * u))
    pts = np.stack([x, y], axis=1)
    tangent = np.gradient(pts, axis=0)
    tangent /= np.linalg.norm(tangent, axis=1, keepdims=True)
    normal = np.stack([-tangent[:, 1], tangent[:, 0]], axis=1)

    r = width / 2
    arm = rng.uniform(0.1, 0.5)  # centromere position as a share of the length from one end
    uc = (1.0 - 2.0 * arm) * rng.choice([-1.0, 1.0])
    from_centromere = np.abs(u - uc) * length / 2  # px along the axis
    radius = r * (1.0 - 0.25 * np.exp(-((from_centromere / (1.3 * r)) ** 2)))
    radius *= 1.0 + 0.06 * np.sin(np.pi * u * rng.uniform(0.5, 2.0) + rng.uniform(0, 6.3))

    if cls == "A":
        # 1.3-1.6 chromatid widths across: measured the same way (area over length, against
        # separated chromatids), ddx11's class A rods are 1.50 and the ikemoto2023 crops'
        # 1.95 (8 chromatids); 1.2-1.42 (before) measured 1.32, thinner than both.
        offsets = [np.full(n, r * rng.uniform(0.3, 0.6))] * 2
    elif cls == "B":
        joined = r * rng.uniform(0.45, 0.75)
        apart = r + rng.uniform(1.0, 2.5)
        reach = rng.uniform(1.5, 4.0)
        side = np.sign(u - uc)
        splay = np.where(side > 0, rng.uniform(0.0, 0.12), rng.uniform(0.0, 0.12))
        offset = joined + (apart - joined) * (1.0 - np.exp(-from_centromere / reach))
        offset = offset + splay * from_centromere
        offsets = [offset, offset]
    elif cls == "C":
        half_gap = rng.uniform(1.5, 3.0)
        offsets = [
            r + half_gap + rng.normal(0.0, 0.25) * np.sin(np.pi * u + rng.uniform(0, 6.3))
            for _ in range(2)
        ]
    else:
        raise ValueError(f"unknown class {cls!r}; expected one of {CLASS_NAMES}")

    paths = []
    for sign, offset in zip((-1.0, 1.0), offsets, strict=True):
        sister = pts + sign * offset[:, None] * normal
        if cls == "C":  # separated sisters drift a little along and across each other
            tilt = rng.normal(0.0, 0.05)
            rot = np.array([[math.cos(tilt), -math.sin(tilt)], [math.sin(tilt), math.cos(tilt)]])
            sister = sister @ rot.T + np.array([rng.normal(0.0, 0.04 * length), 0.0])
        paths.append((sister, radius * rng.uniform(0.93, 1.07)))
    return paths


def _tube_darkness(
    paths: list[tuple[np.ndarray, np.ndarray]], angle: float, soft: float
) -> np.ndarray:
    """Darkness patch of rounded tubes along the (rotated) paths, soft-edged by `soft` px."""
    c, s = math.cos(angle), math.sin(angle)
    rot = np.array([[c, -s], [s, c]])
    rotated = [(p @ rot.T, r) for p, r in paths]
    every = np.concatenate([p for p, _ in rotated])
    reach = max(float(r.max()) for _, r in rotated) + 2.0 * soft + 3.0
    lo = np.floor(every.min(axis=0) - reach)
    hi = np.ceil(every.max(axis=0) + reach)
    gx = np.arange(lo[0], hi[0] + 1, dtype=np.float32)
    gy = np.arange(lo[1], hi[1] + 1, dtype=np.float32)
    px, py = gx[None, None, :], gy[None, :, None]
    field_ = np.full((gy.size, gx.size), -np.inf, dtype=np.float32)
    for p, r in rotated:
        a, b = p[:-1].astype(np.float32), p[1:].astype(np.float32)
        d = b - a
        ax, ay = a[:, 0, None, None], a[:, 1, None, None]
        dx, dy = d[:, 0, None, None], d[:, 1, None, None]
        den = np.maximum(dx * dx + dy * dy, 1e-6)
        t = np.clip(((px - ax) * dx + (py - ay) * dy) / den, 0.0, 1.0)
        dist = np.hypot(px - ax - t * dx, py - ay - t * dy)
        r0, r1 = r[:-1, None, None].astype(np.float32), r[1:, None, None].astype(np.float32)
        field_ = np.maximum(field_, (r0 + t * (r1 - r0) - dist).max(axis=0))
    x = np.clip(0.5 + field_ / (2.0 * soft), 0.0, 1.0)
    return (x * x * (3.0 - 2.0 * x)).astype(np.float32)


def render_chromosome(
    rng: np.random.Generator, cls: str, *, length: float, width: float, angle: float
) -> tuple[np.ndarray, np.ndarray]:
    """One chromosome as (darkness, mask) patches of the same shape.

    `length` is the chromosome's length in px, `width` one chromatid's diameter in px
    (a class A rod is about 1.5x that, B and C about 2.5x), `angle` the orientation in
    radians. darkness is float32, ~0..1.1 (1: darkest chromatin at normal staining) with
    soft edges and grain; mask is darkness >= MASK_THRESHOLD. Colour it with any
    background to make a crop, or paste it into a spread.
    """
    import cv2

    if cls not in CLASS_NAMES:
        raise ValueError(f"unknown class {cls!r}; expected one of {CLASS_NAMES}")
    for _ in range(12):
        darkness = _tube_darkness(_sister_paths(rng, cls, length, width), angle, soft=0.9)
        grain = _smooth_noise(rng, darkness.shape, rng.uniform(0.8, 1.4))
        darkness *= rng.uniform(0.85, 1.08) * (1.0 + 0.12 * grain)
        darkness = cv2.GaussianBlur(darkness, (0, 0), 0.5)
        if _reads_as(cls, darkness):
            break
    return darkness, darkness >= MASK_THRESHOLD


def _reads_as(cls: str, darkness: np.ndarray) -> bool:
    """Whether the drawing shows its class: A and B one blob, C two rods with a gap that
    stays open even at half the mask threshold (so the optics blur does not close it).
    Random bends and grain sometimes break that; the renderer then draws again."""
    import cv2

    if cls == "C":
        rods = (darkness >= MASK_THRESHOLD / 2).astype(np.uint8)
        return int(cv2.connectedComponents(rods, connectivity=8)[0]) - 1 == 2
    blob = (darkness >= MASK_THRESHOLD).astype(np.uint8)
    return int(cv2.connectedComponents(blob, connectivity=8)[0]) - 1 == 1


def _random_chromosome(
    rng: np.random.Generator, cls: str, scale: float
) -> tuple[np.ndarray, np.ndarray]:
    """A chromosome with human-karyotype-like spread of lengths (about 5:1)."""
    length = scale * 48.0 * rng.uniform(0.35, 1.0) ** 0.9
    width = scale * rng.uniform(5.5, 7.8)
    return render_chromosome(rng, cls, length=length, width=width, angle=rng.uniform(0, 2 * np.pi))


def _disc(radius: int) -> np.ndarray:
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    return (xx * xx + yy * yy <= radius * radius + radius).astype(np.uint8)


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """mask grown by `radius` px, on a canvas padded so nothing is cut off."""
    import cv2

    padded = np.pad(mask.astype(np.uint8), radius)
    return cv2.dilate(padded, _disc(radius)).astype(bool)


# --------------------------------------------------------------------------- canvas


class _Canvas:
    """The maps a spread is drawn on, and the bookkeeping that keeps objects apart."""

    def __init__(self, height: int, width: int) -> None:
        self.height, self.width = height, width
        self.chromatin = np.zeros((height, width), np.float32)
        self.nuclear = np.zeros((height, width), np.float32)
        self.crystal = np.zeros((height, width), np.float32)
        self.labels = np.zeros((height, width), np.int32)
        self.blocked = np.zeros((height, width), bool)  # nuclei and their margin
        self.boxes: list[BBox] = []

    def _window(self, top: int, left: int, h: int, w: int) -> tuple[slice, slice] | None:
        if top < 1 or left < 1 or top + h > self.height - 1 or left + w > self.width - 1:
            return None
        return slice(top, top + h), slice(left, left + w)

    def conflicts(self, grown: np.ndarray, top: int, left: int, allow: int = 0) -> set[int] | None:
        """Labels under `grown` placed at (top, left) (padded by its own margin), or None
        when it leaves the image or hits a nucleus. `allow` is ignored in the answer."""
        win = self._window(top, left, *grown.shape)
        if win is None or self.blocked[win][grown].any():
            return None
        found = set(np.unique(self.labels[win][grown]).tolist()) - {0, allow}
        return found

    def add_object(self, darkness: np.ndarray, mask: np.ndarray, top: int, left: int) -> int:
        """Paste a chromosome; returns its label (1-based)."""
        h, w = mask.shape
        win = (slice(top, top + h), slice(left, left + w))
        np.maximum(self.chromatin[win], darkness, out=self.chromatin[win])
        label = len(self.boxes) + 1
        region = self.labels[win]
        region[mask & (region == 0)] = label
        ys, xs = np.nonzero(mask)
        self.boxes.append(
            BBox(
                int(left + xs.min()),
                int(top + ys.min()),
                int(xs.max() - xs.min() + 1),
                int(ys.max() - ys.min() + 1),
            )
        )
        return label

    def paste(self, layer: np.ndarray, patch: np.ndarray, top: int, left: int) -> None:
        """Max-paste a patch into a layer, cropping whatever falls outside the image."""
        h, w = patch.shape
        y0, x0 = max(top, 0), max(left, 0)
        y1, x1 = min(top + h, self.height), min(left + w, self.width)
        if y0 >= y1 or x0 >= x1:
            return
        sub = patch[y0 - top : y1 - top, x0 - left : x1 - left]
        np.maximum(layer[y0:y1, x0:x1], sub, out=layer[y0:y1, x0:x1])


@dataclass
class _Piece:
    """A rendered chromosome ready to place: the grown masks are padded by their radius."""

    cls: str
    darkness: np.ndarray
    mask: np.ndarray
    spaced: np.ndarray  # mask grown by GAP_PX
    contact: np.ndarray  # mask grown by 1 px

    @classmethod
    def make(cls, rng: np.random.Generator, klass: str, scale: float) -> _Piece:
        darkness, mask = _random_chromosome(rng, klass, scale)
        return cls(klass, darkness, mask, _dilate(mask, GAP_PX), _dilate(mask, 1))


def _try_free(canvas: _Canvas, piece: _Piece, cy: float, cx: float) -> tuple[int, int] | None:
    """Top-left for the piece centred at (cy, cx) if it keeps its gap to everything."""
    h, w = piece.mask.shape
    top, left = round(cy - h / 2), round(cx - w / 2)
    if canvas.conflicts(piece.spaced, top - GAP_PX, left - GAP_PX) == set():
        return top, left
    return None


def _try_touching(
    rng: np.random.Generator, canvas: _Canvas, piece: _Piece, anchor: int
) -> tuple[int, int] | None:
    """Slide the piece towards the anchor object from a random side until they touch."""
    box = canvas.boxes[anchor - 1]
    h, w = piece.mask.shape
    cy, cx = box.y + box.h / 2, box.x + box.w / 2
    direction = rng.uniform(0, 2 * np.pi)
    dy, dx = math.sin(direction), math.cos(direction)
    for dist in np.arange((max(box.w, box.h) + max(h, w)) / 2 + GAP_PX + 2, 0, -1.0):
        top, left = round(cy + dy * dist - h / 2), round(cx + dx * dist - w / 2)
        near = canvas.conflicts(piece.spaced, top - GAP_PX, left - GAP_PX, allow=anchor)
        if near is None or near:
            return None  # left the image, or ran into a third object
        hits = canvas.conflicts(piece.contact, top - 1, left - 1)
        if hits is None:
            return None
        if anchor in hits:
            return _press(canvas, piece, anchor, (top, left), (dy, dx)) or (top, left)
    return None


def _press(
    canvas: _Canvas,
    piece: _Piece,
    anchor: int,
    contact: tuple[int, int],
    direction: tuple[float, float],
) -> tuple[int, int] | None:
    """Push a piece that just touches its anchor 1-2 px further, for a real contact rather
    than a corner, as long as it overlaps only a sliver and meets nothing else."""
    for step in (2.0, 1.0):
        top = round(contact[0] - direction[0] * step)
        left = round(contact[1] - direction[1] * step)
        if canvas.conflicts(piece.spaced, top - GAP_PX, left - GAP_PX, allow=anchor) != set():
            continue
        h, w = piece.mask.shape
        under = canvas.labels[top : top + h, left : left + w][piece.mask]
        if np.count_nonzero(under == anchor) <= 0.08 * under.size:
            return top, left
    return None


@dataclass(frozen=True)
class _Scatter:
    """One metaphase's round area on the canvas, where its chromosomes are put."""

    rng: np.random.Generator
    canvas: _Canvas
    style: _Style
    centre: tuple[float, float]
    radius: float

    def spot(self) -> tuple[float, float]:
        """A random point in the area (one in twenty a stray just outside it)."""
        stray = self.rng.random() < 0.05
        far = self.radius * (self.rng.uniform(1.0, 1.15) if stray else math.sqrt(self.rng.random()))
        theta = self.rng.uniform(0, 2 * np.pi)
        return (self.centre[0] + far * math.sin(theta),
                self.centre[1] + far * math.cos(theta) * 1.1)

    def place_free(self, klass: str) -> int | None:
        """A chromosome touching nothing (40 tries); its canvas label, None if no room."""
        piece = _Piece.make(self.rng, klass, self.style.scale)
        for _ in range(40):
            pos = _try_free(self.canvas, piece, *self.spot())
            if pos is not None:
                return self.canvas.add_object(piece.darkness, piece.mask, *pos)
        return None

    def place_partner(self, klass: str, anchor: int) -> int | None:
        """A chromosome touching the one labelled `anchor` (12 tries); its label or None."""
        partner = _Piece.make(self.rng, klass, self.style.scale)
        for _ in range(12):
            pos = _try_touching(self.rng, self.canvas, partner, anchor)
            if pos is not None:
                return self.canvas.add_object(partner.darkness, partner.mask, *pos)
        return None


def _place_pairs(scatter: _Scatter, queue: list[str], pairs: int
                 ) -> list[tuple[int, str, bool]]:
    """Up to `pairs` touching pairs from the end of `queue` (classes left unplaced go back
    on it); (label, class, touching) of each chromosome placed."""
    placed: list[tuple[int, str, bool]] = []
    for _ in range(pairs):
        if len(queue) < 2:
            break
        first, second = queue.pop(), queue.pop()
        anchor = scatter.place_free(first)
        if anchor is None:
            continue
        label = scatter.place_partner(second, anchor)
        if label is None:
            placed.append((anchor, first, False))
            queue.append(second)
            continue
        placed += [(anchor, first, True), (label, second, True)]
    return placed


def _place_cluster(
    rng: np.random.Generator,
    canvas: _Canvas,
    style: _Style,
    centre: tuple[float, float],
    radius: float,
    count: int,
    class_weights: np.ndarray,
    touching_fraction: float,
    metaphase: int,
) -> list[SynthObject]:
    """Scatter `count` chromosomes over a roughly round metaphase; some in touching pairs."""
    classes = rng.choice(np.array(CLASS_NAMES), size=count, p=class_weights).tolist()
    pairs = int(rng.binomial(count // 2, min(max(touching_fraction, 0.0), 1.0)))
    scatter = _Scatter(rng, canvas, style, centre, radius)
    queue = list(classes)
    placed = _place_pairs(scatter, queue, pairs)
    for klass in queue:
        loose = scatter.place_free(klass)
        if loose is not None:
            placed.append((loose, klass, False))
    if len(placed) < count:
        logger.debug("metaphase %d: placed %d of %d chromosomes", metaphase, len(placed), count)
    return [
        SynthObject(canvas.boxes[label - 1], klass, metaphase, touching)
        for label, klass, touching in sorted(placed)
    ]


def _nucleus(rng: np.random.Generator, radius: float) -> np.ndarray:
    """A round interphase nucleus: fuzzy speckled rim, mottled darker interior."""
    import cv2

    edge = rng.uniform(4.0, 8.0)
    half = int(radius + 3 * edge)
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float32)
    r = np.hypot(xx, yy)
    theta = np.arctan2(yy, xx)
    outline = radius * (
        1.0
        + 0.035 * np.sin(2 * theta + rng.uniform(0, 6.3))
        + 0.02 * np.sin(3 * theta + rng.uniform(0, 6.3))
    )
    speckle = _smooth_noise(rng, r.shape, 1.2)
    rim = np.clip(0.5 + (outline - r) / (2 * edge) + 0.1 * speckle, 0.0, 1.0)
    mottle = _smooth_noise(rng, r.shape, rng.uniform(6.0, 12.0))
    core = 1.0 - 0.25 * (r / radius) ** 2
    darkness = rim * rng.uniform(0.75, 0.95) * core * (1.0 + 0.12 * speckle + 0.15 * mottle)
    for _ in range(int(rng.integers(0, 5))):  # chromocentres / nucleoli-like blotches
        by, bx = rng.normal(0.0, radius * 0.35, 2)
        size = rng.uniform(4.0, 10.0)
        darkness += rim * 0.25 * np.exp(-((xx - bx) ** 2 + (yy - by) ** 2) / (2 * size**2))
    return cv2.GaussianBlur(np.clip(darkness, 0.0, 1.3), (0, 0), 0.6)


def _place_nuclei(
    rng: np.random.Generator,
    canvas: _Canvas,
    style: _Style,
    count: int,
    clusters: list[tuple[tuple[float, float], float]],
) -> list[BBox]:
    """Nuclei anywhere off the metaphases, partly outside the frame allowed (as in ddx11)."""
    boxes: list[BBox] = []
    centres: list[tuple[float, float, float]] = []
    for _ in range(count):
        radius = style.scale * rng.uniform(80.0, 112.0)
        for _ in range(30):
            cy = rng.uniform(-0.4 * radius, canvas.height + 0.4 * radius)
            cx = rng.uniform(-0.4 * radius, canvas.width + 0.4 * radius)
            clear = all(
                math.hypot(cy - y, cx - x) > r * 1.3 + radius + 20 for (y, x), r in clusters
            ) and all(math.hypot(cy - y, cx - x) > 0.9 * (r + radius) for y, x, r in centres)
            if clear:
                break
        else:
            continue
        patch = _nucleus(rng, radius)
        half = patch.shape[0] // 2
        top, left = round(cy) - half, round(cx) - half
        canvas.paste(canvas.nuclear, patch, top, left)
        keep = _dilate(patch >= MASK_THRESHOLD * 0.5, GAP_PX + 4).astype(np.float32)
        pad = GAP_PX + 4
        canvas.paste(canvas.blocked.view(np.uint8), keep.astype(np.uint8), top - pad, left - pad)
        ys, xs = np.nonzero(patch >= MASK_THRESHOLD)
        x0, y0 = max(left + int(xs.min()), 0), max(top + int(ys.min()), 0)
        x1 = min(left + int(xs.max()) + 1, canvas.width)
        y1 = min(top + int(ys.max()) + 1, canvas.height)
        if x1 - x0 >= 8 and y1 - y0 >= 8:
            boxes.append(BBox(x0, y0, x1 - x0, y1 - y0))
            centres.append((cy, cx, radius))
    return boxes


def _scatter_debris(rng: np.random.Generator, canvas: _Canvas) -> None:
    """Small stain dots everywhere and now and then a sharp blue-black stain crystal.

    Both keep clear of chromosomes so that a box holds only its own chromosome."""
    import cv2

    free = ~_dilate(canvas.labels > 0, GAP_PX + 3)[
        GAP_PX + 3 : -(GAP_PX + 3), GAP_PX + 3 : -(GAP_PX + 3)
    ]
    for _ in range(int(rng.integers(15, 70))):
        y, x = int(rng.integers(6, canvas.height - 6)), int(rng.integers(6, canvas.width - 6))
        if not free[y - 5 : y + 6, x - 5 : x + 6].all():
            continue
        sigma = rng.uniform(0.6, 1.6)
        yy, xx = np.mgrid[-5:6, -5:6].astype(np.float32)
        dot = rng.uniform(0.25, 0.8) * np.exp(-(xx**2 + yy**2) / (2 * sigma**2))
        canvas.paste(canvas.chromatin, dot.astype(np.float32), y - 5, x - 5)
    for _ in range(int(rng.poisson(0.8))):
        size = int(rng.integers(14, 30))
        y, x = (
            int(rng.integers(size, canvas.height - size)),
            int(rng.integers(size, canvas.width - size)),
        )
        if not free[
            y - size // 2 - 2 : y + size // 2 + 3, x - size // 2 - 2 : x + size // 2 + 3
        ].all():
            continue
        crystal = np.zeros((size, size), np.uint8)
        if rng.random() < 0.5:  # a needle
            a = rng.uniform(0, np.pi)
            dx, dy = math.cos(a) * size * 0.45, math.sin(a) * size * 0.45
            c = size / 2
            cv2.line(crystal, (round(c - dx), round(c - dy)), (round(c + dx), round(c + dy)), 1, 2)
        else:  # an angular chip
            k = int(rng.integers(4, 8))
            ang = np.sort(rng.uniform(0, 2 * np.pi, k))
            rad = rng.uniform(0.15, 0.4, k) * size
            pts = np.stack([size / 2 + rad * np.cos(ang), size / 2 + rad * np.sin(ang)], 1)
            cv2.fillPoly(crystal, [pts.round().astype(np.int32)], 1)
        patch = cv2.GaussianBlur(crystal.astype(np.float32), (0, 0), 0.5) * rng.uniform(1.2, 1.8)
        canvas.paste(canvas.crystal, patch, y - size // 2, x - size // 2)


# --------------------------------------------------------------------------- colour


def _illumination(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Smooth multiplicative field: a tilt, a vignette and a faint mottle (a few %)."""
    import cv2

    yy = np.linspace(-0.5, 0.5, height, dtype=np.float32)[:, None]
    xx = np.linspace(-0.5, 0.5, width, dtype=np.float32)[None, :]
    gy, gx = rng.normal(0.0, 0.05, 2)
    vignette = rng.uniform(0.0, 0.12)
    field_ = 1.0 + gy * yy + gx * xx - vignette * (xx * xx + yy * yy)
    coarse = rng.standard_normal((max(height // 96, 2), max(width // 96, 2))).astype(np.float32)
    mottle = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    return (field_ + rng.uniform(0.003, 0.012) * mottle).astype(np.float32)


def _colourise(
    rng: np.random.Generator,
    style: _Style,
    chromatin: np.ndarray,
    nuclear: np.ndarray,
    crystal: np.ndarray,
) -> np.ndarray:
    """Darkness maps -> RGB uint8 through Beer-Lambert, optics blur and sensor noise."""
    import cv2

    height, width = chromatin.shape
    od = (style.stain * (chromatin + nuclear))[..., None] * style.chromatin_od
    od += crystal[..., None] * _CRYSTAL_OD
    light = _illumination(rng, height, width)[..., None] * style.glass
    rgb = light * np.exp(-od)
    rgb = cv2.GaussianBlur(rgb, (0, 0), style.blur)
    rgb += style.noise * rng.standard_normal(rgb.shape, dtype=np.float32)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- public


def _cluster_layout(
    rng: np.random.Generator, counts: list[int], scale: float, height: int, width: int
) -> list[tuple[tuple[float, float], float]]:
    """Centre and radius of each metaphase, far enough apart that clusters never mingle.

    A cluster may reach past the frame (its outer chromosomes are then simply not drawn);
    when the best of many tries is still too close, it is taken anyway and logged, so the
    caller always gets as many metaphases as it asked for."""
    clusters: list[tuple[tuple[float, float], float]] = []
    for count in counts:
        radius = scale * 24.0 * math.sqrt(max(count, 1)) * rng.uniform(0.9, 1.15)
        radius = min(radius, 0.45 * min(width, height))
        best: tuple[float, tuple[float, float]] = (-math.inf, (height / 2, width / 2))
        for attempt in range(300):
            if attempt and attempt % 100 == 0:
                radius *= 0.85  # big clusters may not fit side by side: crowd them
            margin = min(radius * 0.8, 0.45 * min(width, height))
            cy, cx = rng.uniform(margin, height - margin), rng.uniform(margin, width - margin)
            slack = min(
                (
                    math.hypot(cy - y, cx - x) - _CLUSTER_SPACING * (radius + r) - 40.0
                    for (y, x), r in clusters
                ),
                default=math.inf,
            )
            if slack > best[0]:
                best = (slack, (cy, cx))
            if slack >= 0:
                break
        if best[0] < 0:
            logger.debug("metaphases crowd each other in a %dx%d spread", width, height)
        clusters.append((best[1], radius))
    return clusters


def generate_spread(
    rng: np.random.Generator,
    *,
    width: int = 1440,
    height: int = 1024,
    metaphases: int = 1,
    chromosomes: tuple[int, int] = (40, 90),
    class_weights: tuple[float, float, float] = (0.3, 0.4, 0.3),
    touching_fraction: float = 0.05,
    nuclei: int | None = None,
) -> SynthSpread:
    """Render one spread: `metaphases` clusters of chromosomes (count per cluster drawn from
    the inclusive range `chromosomes`, classes from `class_weights`), interphase nuclei
    (random 2-7 when None), debris. `touching_fraction` is the expected share of
    chromosomes drawn in touching pairs. Chromosomes that do not fit are left out (logged),
    so a crowded request may return fewer."""
    weights = np.asarray(class_weights, dtype=float)
    if weights.shape != (3,) or (weights < 0).any() or weights.sum() <= 0:
        raise ValueError(f"class_weights must be three non-negative numbers, got {class_weights}")
    if metaphases < 0 or not 0 <= chromosomes[0] <= chromosomes[1]:
        raise ValueError(
            f"need metaphases >= 0 and 0 <= low <= high chromosomes, got {metaphases}, "
            f"{chromosomes}"
        )
    weights = weights / weights.sum()
    style = _Style.draw(rng)
    canvas = _Canvas(height, width)

    counts = [int(rng.integers(chromosomes[0], chromosomes[1] + 1)) for _ in range(metaphases)]
    clusters = _cluster_layout(rng, counts, style.scale, height, width)

    nucleus_count = int(rng.integers(2, 8)) if nuclei is None else nuclei
    nucleus_boxes = _place_nuclei(rng, canvas, style, nucleus_count, clusters)

    objects: list[SynthObject] = []
    for index, ((centre, radius), count) in enumerate(zip(clusters, counts, strict=False)):
        objects += _place_cluster(
            rng, canvas, style, centre, radius, count, weights, touching_fraction, index
        )
    _scatter_debris(rng, canvas)
    rgb = _colourise(rng, style, canvas.chromatin, canvas.nuclear, canvas.crystal)
    # objects came out per cluster in label order, so object i has label i+1
    return SynthSpread(rgb, tuple(objects), tuple(nucleus_boxes), canvas.labels)


def generate_crops(rng: np.random.Generator, n: int) -> list[tuple[np.ndarray, str]]:
    """n raw RGB crops as a cropper would cut them from a spread: one chromosome on grey
    glass with a few px of margin, sometimes a piece of a neighbour at the edge. Classes
    are balanced (counts differ by at most one) and shuffled."""
    classes = [CLASS_NAMES[i % 3] for i in range(n)]
    order = rng.permutation(n)
    crops: list[tuple[np.ndarray, str]] = []
    for index in order:
        cls = classes[int(index)]
        style = _Style.draw(rng)
        piece = _Piece.make(rng, cls, style.scale)
        ys, xs = np.nonzero(piece.mask)
        margin = int(rng.integers(3, 12))
        top, left = int(ys.min()) - margin, int(xs.min()) - margin
        h = int(ys.max()) - int(ys.min()) + 1 + 2 * margin
        w = int(xs.max()) - int(xs.min()) + 1 + 2 * margin
        canvas = _Canvas(h, w)
        canvas.paste(canvas.chromatin, piece.darkness, -top, -left)
        if rng.random() < 0.25:
            _add_neighbour_tip(rng, canvas, piece, style, -top, -left)
        crops.append(
            (_colourise(rng, style, canvas.chromatin, canvas.nuclear, canvas.crystal), cls)
        )
    return crops


def _add_neighbour_tip(
    rng: np.random.Generator, canvas: _Canvas, piece: _Piece, style: _Style, top: int, left: int
) -> None:
    """Let a neighbour chromosome reach a few px into a crop across one edge, keeping its
    gap to the crop's own chromosome (at `top`, `left`), as real crops often show."""
    h, w = canvas.height, canvas.width
    other = _Piece.make(rng, str(rng.choice(np.array(CLASS_NAMES))), style.scale)
    oh, ow = other.mask.shape
    own = np.zeros((h, w), np.float32)
    canvas.paste(own, piece.mask.astype(np.float32), top, left)
    keep_out = _dilate(own > 0, GAP_PX)[GAP_PX:-GAP_PX, GAP_PX:-GAP_PX]
    for _ in range(10):
        side, inset = int(rng.integers(4)), int(rng.integers(8, 16))
        oy = int(rng.integers(-oh // 2, h - oh // 2))
        ox = int(rng.integers(-ow // 2, w - ow // 2))
        if side == 0:
            oy = inset - oh
        elif side == 1:
            oy = h - inset
        elif side == 2:
            ox = inset - ow
        else:
            ox = w - inset
        probe = np.zeros((h, w), np.float32)
        canvas.paste(probe, other.mask.astype(np.float32), oy, ox)
        if not (probe > 0).any() or (probe.astype(bool) & keep_out).any():
            continue
        canvas.paste(canvas.chromatin, other.darkness, oy, ox)
        return


def yolo_lines(objects: tuple[SynthObject, ...], width: int, height: int) -> list[str]:
    """Objects as ddx11-style YOLO lines: `class cx cy w h`, normalised, 6 significant digits."""
    lines = []
    for obj in objects:
        b = obj.bbox
        values = ((b.x + b.w / 2) / width, (b.y + b.h / 2) / height, b.w / width, b.h / height)
        lines.append(f"{CLASS_NAMES.index(obj.cls)} " + " ".join(f"{v:.6g}" for v in values))
    return lines


def parse_yolo(text: str, width: int, height: int) -> list[tuple[str, BBox]]:
    """Inverse of `yolo_lines` (also reads ddx11 labels): [(class name, pixel box)]."""
    out = []
    for line in text.splitlines():
        if not line.strip():
            continue
        idx, cx, cy, w, h = line.split()
        bw, bh = float(w) * width, float(h) * height
        box = BBox(
            round(float(cx) * width - bw / 2),
            round(float(cy) * height - bh / 2),
            round(bw),
            round(bh),
        )
        out.append((CLASS_NAMES[int(idx)], box))
    return out


def dataset_spread(seed: int, sample: int, index: int) -> SynthSpread:
    """Spread `index` (0-based) of sample `sample` of `write_dataset(seed=seed)`, drawn alone:
    its own seed stream, one metaphase for the first spread of a sample, else 0-2."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(sample, index)))
    mets = 1 if index == 0 else int(rng.choice([0, 1, 2], p=[0.05, 0.8, 0.15]))
    weights = SAMPLE_MIXES[sample % len(SAMPLE_MIXES)][1]
    return generate_spread(rng, metaphases=mets, class_weights=weights)


def write_dataset(out_dir: Path, *, samples: int, spreads: int, seed: int) -> list[Path]:
    """Write `samples` folders `synthetic-NN` (class mixes cycling through SAMPLE_MIXES),
    each with images/spread_NNN.png, labels/spread_NNN.txt (YOLO, like ddx11) and
    truth.json. Same seed -> same bytes; each spread has its own seed stream, so spread k
    does not change when more spreads are asked for. Returns the image paths."""
    import cv2

    out_dir = Path(out_dir)
    paths: list[Path] = []
    for s in range(samples):
        name = f"synthetic-{s + 1:02d}"
        kind, weights = SAMPLE_MIXES[s % len(SAMPLE_MIXES)]
        sample_dir = out_dir / name
        (sample_dir / "images").mkdir(parents=True, exist_ok=True)
        (sample_dir / "labels").mkdir(parents=True, exist_ok=True)
        truth: dict[str, object] = {
            "sample": name,
            "kind": kind,
            "class_weights": list(weights),
            "seed": seed,
            "note": "synthetic data: for tests and demos, not evidence of accuracy",
            "spreads": [],
        }
        records: list[dict[str, object]] = []
        for k in range(spreads):
            spread = dataset_spread(seed, s, k)
            stem = f"spread_{k + 1:03d}"
            image = sample_dir / "images" / f"{stem}.png"
            bgr = np.ascontiguousarray(spread.rgb[..., ::-1])
            if not cv2.imwrite(str(image), bgr, [cv2.IMWRITE_PNG_COMPRESSION, 3]):
                raise OSError(f"could not write {image}; check that the folder is writable")
            height, width = spread.rgb.shape[:2]
            lines = yolo_lines(spread.objects, width, height)
            (sample_dir / "labels" / f"{stem}.txt").write_text("".join(f"{ln}\n" for ln in lines))
            records.append(
                {
                    "image": f"images/{stem}.png",
                    "labels": f"labels/{stem}.txt",
                    "width": width,
                    "height": height,
                    "objects": [
                        {
                            "bbox": o.bbox.as_list(),
                            "cls": o.cls,
                            "metaphase": o.metaphase,
                            "touching": o.touching,
                        }
                        for o in spread.objects
                    ],
                    "nuclei": [b.as_list() for b in spread.nuclei],
                }
            )
            paths.append(image)
        truth["spreads"] = records
        (sample_dir / "truth.json").write_text(json.dumps(truth, indent=1) + "\n")
        logger.info("wrote %d synthetic spreads to %s", spreads, sample_dir)
    return paths
