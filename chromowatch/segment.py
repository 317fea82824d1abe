"""Crop chromosomes from a Giemsa metaphase spread, keeping separated sister pairs whole.

Steps, each sized by the spread's own chromosomes rather than by absolute pixel counts:
measure each colour channel's drop below its own flattened background (luma for a JPEG with
half-resolution colour), threshold relative to the chromosomes' typical darkness, cut out
interphase nuclei (regions much thicker than a chromosome), split objects much larger than
typical where a rising threshold finds a seam (watershed from the pieces; a seam nearly as
dark as the chromosomes only between two pieces meeting at an angle) or else between two
notches of the outline into chromosome-sized pieces (touching sisters are kept together),
flag what cannot be split, pair separated sister chromatids (mutually nearest, each one
chromatid wide, chromatid-like or unmistakably side by side, parallel, of similar size) into
one class C object, drop debris, and group the objects into metaphases (clusters of chromosomes).
"""
from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import numpy as np

from chromowatch.records import BBox, Crop, Segmentation
from chromowatch.settings import SegmentSettings

log = logging.getLogger(__name__)

#: A unit whose length is under this many of its thicknesses has no measurable axis.
COMPACT_ELONGATION = 2.0
#: A unit thinner than this share of the spread's stroke width is one chromatid at most.
CHROMATID_WIDTH = 0.95
#: Notches this share of `split_notch_depth` deep may end a cut (with a deep one opposite)
#: when both pieces are single rods (`ROD_WIDTH`): two rods touching end to side or in a V.
SHALLOW_NOTCH = 0.4
#: Pieces cut at a narrow neck (`_neck_split`) are at least this many typical objects.
NECK_PIECE = 0.3
#: Sisters that are chromatid-like only by thinness keep close along this share of their
#: length (`_alongside_or_meeting`) ...
ALONGSIDE = 0.8
#: ... unless they come this many thicknesses close (splayed from the centromere).
MEETING_GAP = 0.35
#: Two separate chromatid-like units meeting at a point (gap under MEETING_GAP) at more
#: than pair_max_angle are splayed sisters when their areas agree to this ratio.
SPLAYED_ALIKE = 0.85
#: A rod's mean width (area over axis length) is at most this many of its ridge widths.
ROD_WIDTH = 1.1
#: Pieces of a long cut through an object flagged as touching (`split_touching_cut`) are
#: at least this many typical objects: whole chromosomes, not an arm cut off a cross.
LONG_CUT_PIECE = 0.8
#: Notch-cut pieces as unequal as this (smaller / larger area) are taken when no cut leaves two
#: within half of each other, and only if both have a whole chromosome's flat profile: a
#: small chromosome pressed against a large one (class B misses over synthetic seeds 0-27
#: 220 -> 173, A 525 -> 509, false positives +30 of 2179; a class C pair cut off-centre
#: leaves peaked chromatids, which this refuses).
UNEQUAL_CUT = 0.3
#: Two rods pressed end to end at an angle (an L or V) leave one deep notch inside the bend and
#: a shallow one where their rounded ends meet outside it (`_kink_split`): at least this many
#: strokes deep, at most KINK_CHORD strokes apart (across one rod, not along it); each piece
#: at least KINK_PIECE typical objects, KINK_ELONG times as long as wide, a single rod with a
#: flat profile (a whole chromosome, not a chromatid), their axes KINK_ANGLE degrees apart.
#: (KINK_ELONG 2.5 -> 2.2 and KINK_ANGLE 40 -> 35 once synthetic A rods were drawn as thick
#: as real ones: class A misses over synthetic seeds 0-27 509 -> 484, false positives 2209
#: -> 2222; ddx11 and its --perturb rows unchanged. 30 degrees: 192 / 968 on seeds 0-11
#: against 199 / 954.) Pieces that pass these are not judged again as touching sisters: that
#: test took two flat rods for sisters splayed from one end whenever they were as thin as
#: the spread's thin mode (class A misses over synthetic seeds 0-47 788 -> 775, class C 229
#: -> 218, false positives +5; ddx11 unchanged).
KINK_SHALLOW = 0.15
KINK_CHORD = 1.6
KINK_PIECE = 0.3
KINK_ELONG = 2.2
KINK_ANGLE = 35.0
#: An object paired with nothing and over this many typical objects may be a clump of a
#: chromosome and a sister pair (`_regroup_clumps`) ...
CLUMP_AREA = 1.2
#: ... whose chromatid-sized pieces (seeds of at least this many typical objects) ...
CLUMP_PIECE = 0.12
#: ... regroup into pairs and single pieces of at least this many typical objects each.
CLUMP_WHOLE = 0.5
#: A lone chromatid joins the piece it touches where the contact is at least this share of
#: each piece's length from its centre (the outer halves: end to end) (`_join_fragments`).
JOIN_END = 0.25
#: A separated sister is one chromatid wide: a unit thicker than this many strokes (the
#: spread's median ridge width) is a whole chromosome, even when it lies parallel and close
#: to another (separated C sisters measure at most 1.21 strokes on ddx11 and synthetic draws).
SISTER_MAX_WIDTH = 1.5
#: Two units paired by geometry alone (neither has a chromatid's peaked profile nor is as
#: thin as the spread's thin mode) span at most this many strokes across, both thicknesses
#: and the gap: two whole rods lying parallel are wider. No ddx11 pair is paired by geometry
#: alone; over synthetic seeds 0-27 class A misses 484 -> 441, false positives 2222 ->
#: 2211, C unchanged (2.7: 428 / 2236, C +1).
PAIR_SPAN = 2.8
#: Sister pairs of one spread are alike: a pair paired by geometry alone that spans more than
#: this many times the median span of the spread's candidate pairs (at least three) is two
#: whole rods lying parallel, in a spread of mostly class A where PAIR_SPAN's strokes are an
#: A rod's width. No ddx11 pair is paired by geometry alone. Over synthetic seeds 0-47 class A
#: misses 775 -> 707, false positives 3790 -> 3763, class C +1 (1.4: 719, C unchanged; 1.2:
#: 702, C +7).
SPAN_REL = 1.3
#: The smallest chromosomes measure about a stroke's square, and a slightly blurred or
#: smaller-scale image makes them a little less: a whole object (not a split's piece) down to
#: this share of a stroke's square is kept when its darkest pixel reaches DEBRIS_DARK of the
#: typical chromosome core; specks and faint debris are paler (`_drop_debris`).
DEBRIS_STROKES = 0.8
DEBRIS_DARK = 1.0
#: A chromosome's core is stained like the others': an object (or pair) whose darkest pixel
#: stays under this share of the typical core is a pale ghost (a nucleus's faint rim or a lace
#: of it cut by the edge, a smear), not a chromosome. On ddx11 the palest chromosome found
#: reaches 0.82 of the core; under the segmentation benchmark's perturbations (blur,
#: vignetting, JPEG, ...) the first chromosomes are lost at 0.75.
PALE_CORE = 0.65

#: Box colours (RGB) of the overlay, by class; unlabelled crops are yellow, flagged magenta.
CLASS_COLOURS: dict[str, tuple[int, int, int]] = {
    "A": (40, 170, 60),
    "B": (30, 110, 230),
    "C": (225, 35, 35),
}
UNLABELLED_COLOUR = (240, 200, 0)
FLAGGED_COLOUR = (220, 0, 220)


@dataclass(frozen=True)
class Scale:
    """What the spread's chromosomes look like: the yardstick for every size threshold."""

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
        return self.length / max(self.thickness, 1e-6)


#: A way to split one object: (own mask, darkness, scale, typical area, settings) -> its
#: pieces 1..k in the object's box, or None.
Splitter = Callable[[np.ndarray, np.ndarray, Scale, float, SegmentSettings], "np.ndarray | None"]


def segment(
    rgb: np.ndarray, settings: SegmentSettings, *, chroma_subsampled: bool = False
) -> Segmentation:
    """Find the chromosomes of a spread, one crop each, grouped into metaphases.

    `chroma_subsampled`: the image came from a JPEG with colour at a lower resolution
    (`Spread.chroma_subsampled`); darkness is then read from brightness.
    """
    import cv2

    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"segment expects HxWx3 uint8 RGB, got {rgb.dtype} {rgb.shape}")
    dark, sigma = _darkness(rgb, luma=chroma_subsampled)
    scale = _measure(dark, sigma, settings)
    if scale is None:
        return _empty("no metaphase found: nothing darker than the background")
    mask = (dark > scale.threshold).astype(np.uint8)
    mask, nuclei = _remove_nuclei(mask, scale, settings)
    n, labels = cv2.connectedComponents(mask, connectivity=8, ltype=cv2.CV_32S)
    speck = 0.25 * scale.stroke * scale.stroke
    units = [u for u in _units(labels, n, dark) if u.area >= speck]
    if not units:
        reason = "only nuclei" if nuclei else "only debris"
        return _empty(f"no metaphase found: {reason}")
    units, touching = _split_touching(units, labels, dark, scale, settings)
    groups = _pair_chromatids(units, labels, scale, settings)
    groups = _regroup_clumps(units, groups, labels, dark, scale, settings)
    groups = _join_fragments(units, groups, labels, scale)
    groups = _drop_debris(groups, units, scale, settings, labels.shape, n)
    if not groups:
        return _empty("no metaphase found: only debris")
    flags = {
        k: frozenset({"touching"}) for k, g in enumerate(groups) if any(i in touching for i in g)
    }
    metaphase_of, count = _metaphases(groups, units, settings)
    if count == 0:
        why = f"{len(groups)} objects, fewer than {settings.metaphase_min_chromosomes} together"
        return _empty(f"no metaphase found: {why}" + (" besides nuclei" if nuclei else ""))
    crops = _crops(rgb, labels, groups, units, metaphase_of, flags, settings.pad)
    log.debug(
        "segmented %d crops in %d metaphases (threshold %.1f, stroke %.1f px, %d nuclei)",
        len(crops),
        count,
        scale.threshold,
        scale.stroke,
        nuclei,
    )
    return Segmentation(crops=crops, metaphases=count)


def _empty(note: str) -> Segmentation:
    log.info("%s", note)
    return Segmentation(crops=(), metaphases=0, note=note)


def _darkness(rgb: np.ndarray, luma: bool = False) -> tuple[np.ndarray, float]:
    """How much darker than the local background each pixel is, and the background noise.

    Each channel is measured against its own background (its large-scale upper envelope), so
    uneven illumination and exposure cancel out, and the channel that loses most light at a
    pixel counts there: Giemsa absorbs green most, but a camera's white balance or a warm lamp
    moves the background's colour, and the darkest channel of a tinted background carries
    little of the stain. With `luma`, brightness alone is measured: a JPEG that stores colour
    at half resolution blurs the stain's channel (the sisters' gap, the seam between two
    touching chromosomes) but keeps brightness sharp.
    """
    import cv2

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
    cdf = np.cumsum(hist)
    return float(np.searchsorted(cdf, q * cdf[-1]))


def _measure(dark: np.ndarray, sigma: float, settings: SegmentSettings) -> Scale | None:
    """Threshold and stroke width from the image itself (so exposure and zoom do not matter)."""
    import cv2

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


def _remove_nuclei(
    mask: np.ndarray, scale: Scale, settings: SegmentSettings
) -> tuple[np.ndarray, int]:
    """Cut out regions far thicker than a chromosome (nuclei), with the rim around them.

    An opening with a disk of `nucleus_widths` strokes keeps only such regions; it is done with
    two distance transforms, which cost the same whatever the disk's size.
    """
    import cv2

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


def _units(labels: np.ndarray, n: int, dark: np.ndarray) -> list[Unit]:
    """Area, box, centroid, principal axis and profile flatness of labels 1..n-1.

    Flatness tells one chromatid (a peaked cross-section) from two pressed together (a class A
    chromosome, flat-topped), whatever the magnification.
    """
    from scipy import ndimage

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


def _typical_area(units: list[Unit], scale: Scale) -> float:
    """Median area of the units at least a stroke square (specks do not count)."""
    areas = [u.area for u in units if u.area >= scale.stroke * scale.stroke]
    return float(np.median(areas)) if areas else 0.0


def _best_pairs(candidates: list[tuple[float, int, int]]) -> tuple[list[list[int]], set[int]]:
    """Pairs from (score, i, j) candidates, lowest score first, each index used once;
    also the indices used."""
    used: set[int] = set()
    pairs: list[list[int]] = []
    for _, i, j in sorted(candidates):
        if i in used or j in used:
            continue
        used.update((i, j))
        pairs.append([i, j])
    return pairs, used


def _drop_debris(
    groups: list[list[int]],
    units: list[Unit],
    scale: Scale,
    settings: SegmentSettings,
    shape: tuple[int, ...],
    first_piece: int,
) -> list[list[int]]:
    """Leave out objects much smaller than the typical one (a pair counts as one object).

    Nothing under a stroke's square is a chromosome, except at the image's edge: there a
    chromosome may show only its end, and only the share of the typical object applies
    (with half a stroke's square for a floor, the most that mere specks reach); and except a
    whole object (one found as such, not a piece cut off by `_split_touching`: labels from
    `first_piece` on) down to `DEBRIS_STROKES` of a stroke's square that is as dark as
    chromosome cores (`DEBRIS_DARK`): a small chromosome in a blurred or zoomed-out image.
    Dark stain crystals of that size pass too; they are rarer than small chromosomes.
    Whatever its size, an object paler than `PALE_CORE` of the typical core is left out.
    """
    stroke_area = scale.stroke * scale.stroke
    areas = [sum(units[i].area for i in g) for g in groups]
    darkest = [max(units[i].darkest for i in g) for g in groups]
    plausible = [a for a in areas if a >= 2 * stroke_area]
    typical = float(np.median(plausible)) if plausible else 2 * stroke_area
    min_area = max(settings.min_area_fraction * typical, stroke_area)
    min_cut = max(settings.min_area_fraction * typical, 0.5 * stroke_area)
    height, width = shape[:2]

    def at_edge(u: Unit) -> bool:
        return u.x == 0 or u.y == 0 or u.x + u.w >= width or u.y + u.h >= height

    def whole(g: list[int]) -> bool:
        return all(units[i].label < first_piece for i in g)

    return [
        g
        for g, a, d in zip(groups, areas, darkest, strict=True)
        if d >= PALE_CORE * scale.peak
        and (
            a >= (min_cut if any(at_edge(units[i]) for i in g) else min_area)
            or (a >= DEBRIS_STROKES * stroke_area and d >= DEBRIS_DARK * scale.peak
                and whole(g))
        )
    ]


def _gap(a: Unit, b: Unit, labels: np.ndarray) -> float:
    """Shortest distance between two components' pixels."""
    import cv2

    x0, y0 = min(a.x, b.x), min(a.y, b.y)
    x1, y1 = max(a.x + a.w, b.x + b.w), max(a.y + a.h, b.y + b.h)
    window = labels[y0:y1, x0:x1]
    not_a = (window != a.label).astype(np.uint8)
    dist = cv2.distanceTransform(not_a, cv2.DIST_L2, 3)
    return float(dist[window == b.label].min()) - 1.0


def _pair_chromatids(
    units: list[Unit], labels: np.ndarray, scale: Scale, settings: SegmentSettings
) -> list[list[int]]:
    """Group separated sister chromatids two by two; every other unit stays alone.

    Sisters are each other's nearest neighbour, each at most `SISTER_MAX_WIDTH` strokes thick
    (one chromatid, whatever the profile or geometry says), and score as sisters
    (`_sister_score`: alike in size, close for their thickness, parallel side by side); best
    pairs are taken first. A pair that only geometry pairs must be no wider across than
    `SPAN_REL` times the spread's usual candidate pair.
    Two tiny units (under half the typical object, hardly longer than wide, thinner than the
    spread's stroke: one short chromatid each) have no axis to compare, so their angle is
    not tested: a short pair splayed or lying end to end stays one object, not two specks.
    """
    thin = _thin_limit(units, scale)
    small = 0.5 * _typical_area(units, scale)
    reach = settings.pair_max_gap * scale.stroke
    candidates: list[tuple[float, int, int]] = []
    spans: list[tuple[float, bool]] = []  # per candidate: span across, paired by geometry alone
    gaps: dict[tuple[int, int], float] = {}
    nearest: dict[int, tuple[float, int]] = {}
    for i, a in enumerate(units):
        for j in range(i + 1, len(units)):
            b = units[j]
            if (
                b.x > a.x + a.w + reach
                or a.x > b.x + b.w + reach
                or b.y > a.y + a.h + reach
                or a.y > b.y + b.h + reach
            ):
                continue
            gap = _gap(a, b, labels)
            gaps[(i, j)] = gap
            if gap < nearest.get(i, (math.inf, -1))[0]:
                nearest[i] = (gap, j)
            if gap < nearest.get(j, (math.inf, -1))[0]:
                nearest[j] = (gap, i)
    for (i, j), gap in gaps.items():
        if nearest[i][1] != j or nearest[j][1] != i:
            continue
        tiny = all(
            u.area < small
            and u.elongation < COMPACT_ELONGATION
            and u.thickness < CHROMATID_WIDTH * scale.stroke
            for u in (units[i], units[j])
        )
        a, b = units[i], units[j]
        if max(a.thickness, b.thickness) > SISTER_MAX_WIDTH * scale.stroke:
            continue  # a whole chromosome, two chromatids wide, is nobody's sister
        score = _sister_score(a, b, gap, thin, settings, tiny, span=PAIR_SPAN * scale.stroke)
        if score is None:
            continue
        if not tiny and not _alongside_or_meeting(a, b, gap, labels, settings):
            continue
        candidates.append((score, i, j))
        chromatids = _chromatid_like(a, thin, settings) and _chromatid_like(b, thin, settings)
        spans.append((a.thickness + b.thickness + max(gap, 0.0), not chromatids))
    if len(spans) >= 3:
        usual = float(np.median([span for span, _ in spans]))
        candidates = [
            c
            for c, (span, geometry_only) in zip(candidates, spans, strict=True)
            if not (geometry_only and span > SPAN_REL * usual)
        ]
    groups, used = _best_pairs(candidates)
    groups.extend([i] for i in range(len(units)) if i not in used)
    return groups


def _alongside_or_meeting(
    a: Unit, b: Unit, gap: float, labels: np.ndarray, settings: SegmentSettings
) -> bool:
    """Whether two separate units lie like sisters: along each other's whole length, or
    nearly meeting at one point (sisters splayed from the centromere).

    Two chromatids with a peaked profile are taken as they are. Units that pass for
    chromatids only by being thin may be two thin whole chromosomes (in a spread of mostly
    class A, the thin mode is theirs): they must keep within a thickness of their closest
    approach along `ALONGSIDE` of each one's length, unless that approach is under
    `MEETING_GAP` thicknesses.
    """
    import cv2

    if a.flatness <= settings.chromatid_flatness and b.flatness <= settings.chromatid_flatness:
        return True
    thickness = max((a.thickness + b.thickness) / 2, 1.0)
    if max(gap, 0.0) <= MEETING_GAP * thickness:
        return True
    x0, y0 = min(a.x, b.x), min(a.y, b.y)
    x1, y1 = max(a.x + a.w, b.x + b.w), max(a.y + a.h, b.y + b.h)
    window = labels[y0:y1, x0:x1]
    nearest = []
    for u, v in ((a, b), (b, a)):
        dist = cv2.distanceTransform((window != v.label).astype(np.uint8), cv2.DIST_L2, 3)
        ys, xs = np.nonzero(window == u.label)
        along = (xs + x0 - u.cx) * math.cos(u.angle) + (ys + y0 - u.cy) * math.sin(u.angle)
        bins = max(4, int(u.length / 3))
        span = max(float(along.max() - along.min()), 1e-6)
        index = np.minimum(((along - along.min()) / span * bins).astype(np.intp), bins - 1)
        per_bin = np.full(bins, np.inf)
        np.minimum.at(per_bin, index, dist[ys, xs])
        nearest.append(per_bin)
    closest = min(float(m.min()) for m in nearest)
    return all(float(np.mean(m <= closest + thickness)) >= ALONGSIDE for m in nearest)


def _thin_limit(units: list[Unit], scale: Scale) -> float:
    """Thickness up to which an object is one chromatid, when the spread shows two kinds.

    Where thicknesses are clearly bimodal (single chromatids next to whole chromosomes), the
    thin mode is the chromatids'; otherwise 0 and only the profile's flatness decides.
    """
    thick = [u.thickness for u in units if u.area >= scale.stroke * scale.stroke]
    if len(thick) < 8:
        return 0.0
    low, high = np.percentile(thick, [15, 85])
    return 1.3 * float(low) if high >= 1.7 * low else 0.0


def _chromatid_like(unit: Unit, thin: float, settings: SegmentSettings) -> bool:
    return unit.flatness <= settings.chromatid_flatness or unit.thickness <= thin


def _sister_score(
    a: Unit,
    b: Unit,
    gap: float | None,
    thin: float,
    settings: SegmentSettings,
    tiny: bool = False,
    any_profile: bool = False,
    span: float = math.inf,
) -> float | None:
    """How unlike two sister chromatids a and b are (lower is likelier); None: not sisters.

    Sisters are copies of one chromatid: nearly the same area and length, close (`gap`
    measured in their own thickness; None: the two touch), roughly parallel and side by side
    rather than end to end, or, two apart, splayed from a point where they nearly meet (at any
    angle, if chromatid-like and alike: `SPLAYED_ALIKE`). Both must look like one chromatid
    (a peaked profile, or as thin as the spread's thin mode), unless, for two apart, the
    geometry alone is unmistakable: parallel, fully side by side, of the same size, close,
    and no wider across (both thicknesses and the gap) than `span` px, which two whole rods
    lying parallel are (`PAIR_SPAN`). (Two touching pieces that are not chromatid-like are
    rather two whole chromosomes pressed together.)
    """
    thickness = max((a.thickness + b.thickness) / 2, 1.0)
    rel_gap = max(gap, 0.0) / thickness if gap is not None else 0.0
    if rel_gap > settings.pair_max_gap:
        return None
    ratio = min(a.length, b.length) / max(a.length, b.length)
    area_ratio = min(a.area, b.area) / max(a.area, b.area)
    if ratio < 0.65 or area_ratio < 0.6:
        return None
    diff = _axis_angle(a.angle, b.angle)
    if tiny:
        # Tiny, hardly longer than wide: their axes (so angle and side-by-side-ness) are
        # not measurable; alike, close and chromatid-like is all there is to go by.
        if _chromatid_like(a, thin, settings) and _chromatid_like(b, thin, settings):
            return rel_gap + 2.0 * (1 - area_ratio) + (1 - ratio) + 0.5
        return None
    if diff > settings.pair_max_angle:
        # Sisters splayed from one end meet at a point at any angle (a V, or an X where
        # they cross): two chromatid-like units, alike, whose gap is under MEETING_GAP.
        splayed = (
            gap is not None
            and rel_gap <= MEETING_GAP
            and area_ratio >= SPLAYED_ALIKE
            and _chromatid_like(a, thin, settings)
            and _chromatid_like(b, thin, settings)
        )
        if not splayed:
            return None
        return rel_gap + 2.0 * (1 - area_ratio) + (1 - ratio) + diff / 180.0
    mean_angle = _mean_angle(a.angle, b.angle)
    ux, uy = math.cos(mean_angle), math.sin(mean_angle)
    pa, pb = a.cx * ux + a.cy * uy, b.cx * ux + b.cy * uy
    half_a, half_b = a.length / 2, b.length / 2
    overlap = (min(pa + half_a, pb + half_b) - max(pa - half_a, pb - half_b)) / min(
        a.length, b.length
    )
    if overlap < 0.3:
        return None
    chromatids = _chromatid_like(a, thin, settings) and _chromatid_like(b, thin, settings)
    unmistakable = (
        gap is not None
        and diff <= 12.0
        and overlap >= 0.7
        and min(ratio, area_ratio) >= 0.8
        and rel_gap <= 0.8
        and a.thickness + b.thickness + gap <= span
    )
    if not (chromatids or any_profile or unmistakable):
        return None
    return rel_gap + 2.0 * (1 - area_ratio) + (1 - ratio) + diff / 180.0


def _mean_angle(a: float, b: float) -> float:
    """Mean of two axis orientations (angles modulo pi)."""
    return 0.5 * math.atan2(math.sin(2 * a) + math.sin(2 * b), math.cos(2 * a) + math.cos(2 * b))


def _split_touching(
    units: list[Unit],
    labels: np.ndarray,
    dark: np.ndarray,
    scale: Scale,
    settings: SegmentSettings,
) -> tuple[list[Unit], set[int]]:
    """Split objects much larger than typical where a higher threshold separates them.

    Touching chromosomes meet in a fainter seam: raising the threshold inside the object, in
    steps, finds the level where it falls apart into substantial pieces; a watershed from
    those pieces then shares the object's pixels out, so each piece keeps its full outline.
    A seam above `split_max_level` (up to `split_seam_level`) may be a light band of one
    chromosome or the groove between sisters; it is taken only where the two pieces meet at
    an angle (`_meet_at_angle`), before trying notch cuts.
    Objects no level separates are returned as touching (indices into the new unit list).
    `labels` is updated in place.
    """
    typical = _typical_area(units, scale)
    thin = _thin_limit(units, scale)
    next_label = int(labels.max()) + 1
    out: list[Unit] = []
    touching_labels: set[int] = set()
    queue = list(units)
    while queue:
        unit = queue.pop()
        large = unit.area > settings.split_area * typical
        if not large and (unit.area < 2 * NECK_PIECE * typical or settings.split_neck <= 0):
            out.append(unit)
            continue
        window = labels[unit.y : unit.y + unit.h, unit.x : unit.x + unit.w]
        values = dark[unit.y : unit.y + unit.h, unit.x : unit.x + unit.w]
        own = window == unit.label
        pieces: list[Unit] = []
        splits: tuple[Splitter, ...] = (
            (_watershed_split, _dark_seam_split, _concavity_split) if large else (_neck_split,)
        )
        if unit.area > settings.touching_area * typical:
            splits += (_long_cut_split,)
        splits += (_kink_split,)
        for split in splits:
            local = split(own, values, scale, typical, settings)
            pieces = _units(local, int(local.max()) + 1, values) if local is not None else []
            if len(pieces) < 2:
                pieces = []  # the splitter left one piece: nothing was split
            notched = split in (_concavity_split, _neck_split, _long_cut_split)
            # A kink cut has its own test of whole-chromosome pieces (flat profiles).
            sisters = split is not _kink_split and len(pieces) == 2
            if sisters and _touching_sisters(pieces, notched, thin, settings, large):
                pieces = []  # one class C pair whose sisters touch: keep it whole
            if split is _dark_seam_split and not _meet_at_angle(pieces, thin, settings):
                pieces = []  # one chromosome parted at a light band, or sisters
            if pieces:
                break
        if not pieces:
            if unit.area > settings.touching_area * typical:
                touching_labels.add(unit.label)
            out.append(unit)
            continue
        assert local is not None
        next_label = _install_pieces(window, own, local, pieces, unit, next_label)
        queue.extend(pieces)
    touching = {k for k, u in enumerate(out) if u.label in touching_labels}
    return out, touching


def _install_pieces(
    window: np.ndarray,
    own: np.ndarray,
    local: np.ndarray,
    pieces: list[Unit],
    unit: Unit,
    next_label: int,
) -> int:
    """Put the pieces 1..k (`local`) of `unit` in its place: in the label map (`window`, the
    unit's box of it, where `own` was the unit) as labels next_label.., and each piece's
    label, box and centroid from the box's coordinates into the image's. Returns the next
    free label: past local's largest, since a splitter may leave a number unused."""
    inside = local > 0
    window[own] = 0
    window[inside] = local[inside] + (next_label - 1)
    for piece in pieces:
        piece.label += next_label - 1
        piece.x += unit.x
        piece.y += unit.y
        piece.cx += unit.x
        piece.cy += unit.y
    return next_label + int(local.max())


def _regroup_clumps(
    units: list[Unit],
    groups: list[list[int]],
    labels: np.ndarray,
    dark: np.ndarray,
    scale: Scale,
    settings: SegmentSettings,
) -> list[list[int]]:
    """Regroup an oversized object that nothing split or paired into sister pairs and whole
    chromosomes, where it is one.

    In a dense clump a short sister pair can touch a chromosome: one object, over
    `CLUMP_AREA` typical objects, whose pieces are too small for the splits of
    `_split_touching`. Such an object is cut at the rising threshold that gives the most
    chromatid-sized seeds (`_fine_split`, at least three, below `split_max_level`); pieces
    within half a stroke of each other that score as sisters (`_sister_score`; pieces under
    half a typical object and hardly longer than wide have no axis to compare) are paired,
    best first. The new grouping is taken only when it holds a pair and every group, pair
    or single piece, is at least `CLUMP_WHOLE` typical objects (chromosome-sized: a
    chromosome's arm or band is not cut off as a pair); otherwise the object stays as it
    was. `units` (extended with the pieces) and `labels` are updated in place.
    """
    import cv2

    typical = _typical_area(units, scale)
    thin = _thin_limit(units, scale)
    next_label = int(labels.max()) + 1
    out: list[list[int]] = []
    for g in groups:
        if len(g) != 1 or units[g[0]].area < CLUMP_AREA * typical:
            out.append(g)
            continue
        unit = units[g[0]]
        window = labels[unit.y : unit.y + unit.h, unit.x : unit.x + unit.w]
        values = dark[unit.y : unit.y + unit.h, unit.x : unit.x + unit.w]
        own = window == unit.label
        local = _fine_split(own, values, scale, CLUMP_PIECE * typical, settings)
        if local is None:
            out.append(g)
            continue
        pieces = _units(local, int(local.max()) + 1, values)
        reach = 2 * round(0.5 * scale.stroke) + 1
        grow = np.ones((reach, reach), np.uint8)
        near = [cv2.dilate((local == p.label).astype(np.uint8), grow) > 0 for p in pieces]
        small = 0.5 * typical
        cands: list[tuple[float, int, int]] = []
        for i, a in enumerate(pieces):
            for j in range(i + 1, len(pieces)):
                b = pieces[j]
                if not (near[i] & (local == b.label)).any():
                    continue
                tiny = all(u.area < small and u.elongation < COMPACT_ELONGATION for u in (a, b))
                score = _sister_score(a, b, None, thin, settings, tiny)
                if score is not None:
                    cands.append((score, i, j))
        pairs, used = _best_pairs(cands)
        rest = [i for i in range(len(pieces)) if i not in used]
        whole = CLUMP_WHOLE * typical
        if (
            not pairs
            or any(pieces[i].area + pieces[j].area < whole for i, j in pairs)
            or any(pieces[i].area < whole for i in rest)
        ):
            out.append(g)
            continue
        next_label = _install_pieces(window, own, local, pieces, unit, next_label)
        base = len(units)
        units.extend(pieces)
        out.extend([[base + i, base + j] for i, j in pairs])
        out.extend([[base + i] for i in rest])
    return out


def _join_fragments(
    units: list[Unit], groups: list[list[int]], labels: np.ndarray, scale: Scale
) -> list[list[int]]:
    """Join a lone chromatid cut off by the splits to the single piece it continues.

    The watershed of a dense clump can cut one chromatid of a sister pair away from the
    rest of the pair: a piece left alone, under `CLUMP_WHOLE` typical objects (no whole
    chromosome) and as thin as one chromatid (`_thin_limit`), still touching the piece it
    was cut from. It joins the single piece (not a pair: pairs are whole; not one over
    `CLUMP_AREA` typical objects: that is a clump, not the rest of a pair) it touches with
    both ends: the contact lies in the outer half of each piece's axis (`JOIN_END`), as
    where a chromatid continues. Where it touches several such pieces, the longest contact
    wins.
    """
    import cv2

    typical = _typical_area(units, scale)
    thin = _thin_limit(units, scale)
    group_of = {i: k for k, g in enumerate(groups) for i in g}
    by_label = {u.label: i for i, u in enumerate(units)}
    height, width = labels.shape[:2]
    cross = np.ones((3, 3), np.uint8)
    joined: dict[int, int] = {}
    for k, g in enumerate(groups):
        a = units[g[0]]
        if len(g) != 1 or k in joined or a.area >= CLUMP_WHOLE * typical or a.thickness > thin:
            continue
        y0, x0 = max(a.y - 1, 0), max(a.x - 1, 0)
        window = labels[y0 : min(a.y + a.h + 1, height), x0 : min(a.x + a.w + 1, width)]
        ring = cv2.dilate((window == a.label).astype(np.uint8), cross) > 0
        best: tuple[int, int] | None = None
        for other in np.unique(window[ring & (window != a.label) & (window > 0)]):
            j = by_label[int(other)]
            kb = group_of[j]
            if len(groups[kb]) != 1 or kb in joined or kb == k:
                continue
            if units[j].area >= CLUMP_AREA * typical:
                continue
            ys, xs = np.nonzero(ring & (window == other))
            px, py = float(xs.mean()) + x0, float(ys.mean()) + y0
            if all(
                abs((px - u.cx) * math.cos(u.angle) + (py - u.cy) * math.sin(u.angle))
                >= JOIN_END * u.length
                for u in (a, units[j])
            ) and (best is None or len(xs) > best[0]):
                best = (len(xs), kb)
        if best is not None:
            joined[k] = best[1]
    if not joined:
        return groups
    out: list[list[int]] = []
    for k, g in enumerate(groups):
        if k not in joined:
            out.append(g + [groups[m][0] for m, t in joined.items() if t == k])
    return out


def _fine_split(
    own: np.ndarray, values: np.ndarray, scale: Scale, min_piece: float, settings: SegmentSettings
) -> np.ndarray | None:
    """Pieces 1..k (k >= 3) of one object from the rising-threshold level below
    `split_max_level` that leaves the most seeds of `min_piece` pixels, or None."""
    best: tuple[np.ndarray, list[int]] | None = None
    for seed_labels, big in _rising_seeds(own, values, scale, min_piece,
                                          settings.split_max_level):
        if len(big) >= 3 and (best is None or len(big) > len(best[1])):
            best = (seed_labels, big)
    if best is None:
        return None
    return _seeded_watershed(own, values, *best)


def _touching_sisters(
    pieces: list[Unit], at_notches: bool, thin: float, settings: SegmentSettings, large: bool
) -> bool:
    """Whether two touching pieces of one object are rather one pair of sister chromatids.

    Side by side like sisters (`_sister_score`), or, for pieces cut at notches, two equal
    chromatid-like pieces meeting at a point: sisters splayed apart from one end. An object
    of ordinary size (not `large`) cut at a neck into two pieces side by side is one
    chromosome whose sisters meet at the centromere (class B), whatever their profile.
    """
    a, b = pieces
    if _sister_score(a, b, None, thin, settings, any_profile=not large) is not None:
        return True
    return (
        at_notches
        and _chromatid_like(a, thin, settings)
        and _chromatid_like(b, thin, settings)
        and min(a.area, b.area) >= 0.8 * max(a.area, b.area)
    )


def _dark_seam_split(
    own: np.ndarray,
    values: np.ndarray,
    scale: Scale,
    typical: float,
    settings: SegmentSettings,
) -> np.ndarray | None:
    """Pieces of one object parted by a seam darker than `split_max_level` but no darker
    than `split_seam_level` of the typical peak, or None (also when that is off)."""
    if settings.split_seam_level <= settings.split_max_level:
        return None
    level = settings.split_seam_level
    return _watershed_split(own, values, scale, typical, settings, max_level=level)


def _meet_at_angle(pieces: list[Unit], thin: float, settings: SegmentSettings) -> bool:
    """Whether two pieces are two chromosomes that touch or cross at an angle.

    A seam nearly as dark as the chromosomes also parts one chromosome at a light band
    (the pieces then lie in line) and a pair of sisters along their groove (side by side,
    or splayed from the centromere at a narrow angle); two chromosomes that touch end to
    side or cross meet at a wider one: at least `split_seam_angle` degrees between axes.
    """
    if len(pieces) != 2:
        return False
    a, b = pieces
    if _sister_score(a, b, None, thin, settings, any_profile=True) is not None:
        return False
    return _axis_angle(a.angle, b.angle) >= settings.split_seam_angle


def _neck_split(
    own: np.ndarray,
    values: np.ndarray,
    scale: Scale,
    typical: float,
    settings: SegmentSettings,
) -> np.ndarray | None:
    """Two pieces of an object of ordinary size joined by a narrow neck, or None.

    Chromosomes vary several-fold in size, so two small ones touching (or a small one
    touching a large one) make an object no larger than a typical one. What gives them away
    is where they meet: a neck narrower than `split_neck` strokes, where a chromosome's own
    waist (its centromere) is about as wide as the chromosome. The neck is found by a rising
    threshold (watershed pieces, the neck being the widest point of the line between them)
    or between two notches of the outline (the chord). Each piece must be at least
    `NECK_PIECE` typical objects: a speck or a chromatid's tip is not cut off.
    """
    import cv2

    widest = settings.split_neck * scale.stroke
    min_piece = NECK_PIECE * typical
    # Seeds may be smaller than a piece: the watershed gives each its flanks back.
    local = _watershed_split(own, values, scale, typical, settings, 0.5 * min_piece)
    if local is not None and int(local.max()) == 2:
        dist = cv2.distanceTransform(own.astype(np.uint8), cv2.DIST_L2, 3)
        grow = np.ones((3, 3), np.uint8)
        near_1 = cv2.dilate((local == 1).astype(np.uint8), grow) > 0
        near_2 = cv2.dilate((local == 2).astype(np.uint8), grow) > 0
        seam = own & (local == 0) & near_1 & near_2
        sizes = [int(np.count_nonzero(local == k)) for k in (1, 2)]
        if seam.any() and 2.0 * float(dist[seam].max()) <= widest and min(sizes) >= min_piece:
            return local
    return _concavity_split(own, values, scale, typical, settings, neck=widest)


def _kink_split(
    own: np.ndarray,
    values: np.ndarray,
    scale: Scale,
    typical: float,
    settings: SegmentSettings,
) -> np.ndarray | None:
    """Two rods pressed end to end at an angle, cut across from the deep notch inside the
    bend to the shallow one where their rounded ends meet (or between two deep notches,
    a rod's end pressed against another's side), or None.

    Pressed together the two leave no fainter seam, and a notch as shallow as their ends
    make is everywhere on a B chromosome's outline; what tells them apart is what the cut
    leaves (the `KINK_*` limits): two long single rods, each with a whole chromosome's flat
    profile (a class C pair splayed from one end leaves two peaked chromatids), meeting
    at a clear angle (a bent chromosome's halves lie nearly in line). The pieces are what
    the cut line leaves, as for the long cut: its 2 px stay background, so the two do not
    touch afterwards (handing those pixels to the nearest piece gave 25 more false positives
    over synthetic seeds 0-11, same recall; not traced further).
    """
    found = _notches(own, KINK_SHALLOW * scale.stroke)
    if found is None:
        return None
    _, notches = found
    deep = settings.split_notch_depth * scale.stroke
    best: tuple[float, np.ndarray] | None = None
    for i, (p, dp, _) in enumerate(notches):
        for q, dq, _ in notches[i + 1 :]:
            length = float(np.hypot(*(p - q)))
            if max(dp, dq) < deep or length > KINK_CHORD * scale.stroke:
                continue
            if best is not None and length / (dp + dq) >= best[0]:
                continue
            cut = _chord_cut(own, p, q, KINK_PIECE * typical)
            if cut is None or len(cut[1]) != 2:
                continue
            markers = _markers(cut[0], cut[1])
            a, b = _units(markers, 3, values)
            if (
                min(a.elongation, b.elongation) >= KINK_ELONG
                and min(a.flatness, b.flatness) > settings.chromatid_flatness
                and _axis_angle(a.angle, b.angle) >= KINK_ANGLE
                and _rod_like(markers == 1)
                and _rod_like(markers == 2)
            ):
                best = (length / (dp + dq), markers)
    return None if best is None else best[1]


def _axis_angle(a: float, b: float) -> float:
    """Degrees (0-90) between two axis orientations (radians modulo pi)."""
    diff = abs(a - b) % math.pi
    return math.degrees(min(diff, math.pi - diff))


def _long_cut_split(
    own: np.ndarray,
    values: np.ndarray,
    scale: Scale,
    typical: float,
    settings: SegmentSettings,
) -> np.ndarray | None:
    """For an object too large for one chromosome that no seam nor short cut parted: two
    chromosomes touching along more than a short chord (an arm's end against another's
    side), cut between notches up to `split_touching_cut` strokes apart; None when off."""
    if settings.split_touching_cut <= settings.split_max_cut:
        return None
    long_cut = settings.split_touching_cut
    return _concavity_split(own, values, scale, typical, settings, long_cut=long_cut)


def _watershed_split(
    own: np.ndarray,
    values: np.ndarray,
    scale: Scale,
    typical: float,
    settings: SegmentSettings,
    min_piece: float | None = None,
    max_level: float | None = None,
) -> np.ndarray | None:
    """Pieces 1..k of one object (`own`), or None when no rising threshold below
    `max_level` (share of the typical peak; default `split_max_level`) separates it."""
    if min_piece is None:
        min_piece = 0.3 * typical
    if max_level is None:
        max_level = settings.split_max_level
    for seed_labels, big in _rising_seeds(own, values, scale, min_piece, max_level):
        if len(big) >= 2:
            return _seeded_watershed(own, values, seed_labels, big)
    return None


def _rising_seeds(
    own: np.ndarray, values: np.ndarray, scale: Scale, min_piece: float, max_level: float
) -> Iterator[tuple[np.ndarray, list[int]]]:
    """At each threshold from just above the spread's own up to `max_level` of the typical
    peak (steps of 5%), the object's parts above it: their label map and the labels of
    those of at least `min_piece` pixels. Stops where none is left."""
    import cv2

    step = 0.05 * scale.peak
    level = scale.threshold + step
    while level < max_level * scale.peak:
        seeds = ((values > level) & own).astype(np.uint8)
        n, seed_labels, stats, _ = cv2.connectedComponentsWithStats(seeds, connectivity=8)
        big = [i for i in range(1, n) if stats[i, cv2.CC_STAT_AREA] >= min_piece]
        if not big:
            return
        yield seed_labels, big
        level += step


def _seeded_watershed(own: np.ndarray, values: np.ndarray, seed_labels: np.ndarray,
                      seeds: list[int]) -> np.ndarray:
    """Pieces 1..k of `own`, grown by a watershed of its darkness from these seed
    components (their labels in `seed_labels`), fragments dropped."""
    import cv2

    markers = _markers(seed_labels, seeds)
    # No marker outside the object: it would claim the object's faint rim first.
    relief = cv2.cvtColor(255 - values, cv2.COLOR_GRAY2BGR)
    cv2.watershed(relief, markers)
    markers[~own | (markers < 0)] = 0
    return _drop_fragments(markers, len(seeds))


def _markers(seed_labels: np.ndarray, seeds: list[int]) -> np.ndarray:
    """The components `seeds` of `seed_labels` renumbered 1..k (int32, 0 elsewhere)."""
    markers = np.zeros(seed_labels.shape, np.int32)
    for k, i in enumerate(seeds, start=1):
        markers[seed_labels == i] = k
    return markers


def _concavity_split(
    own: np.ndarray,
    values: np.ndarray,
    scale: Scale,
    typical: float,
    settings: SegmentSettings,
    neck: float = 0.0,
    long_cut: float = 0.0,
) -> np.ndarray | None:
    """Pieces of one object cut along its best neck, or None when it has none.

    Where no fainter seam separates two touching chromosomes, their joint outline still has
    notches (concavities at least `split_notch_depth` strokes deep). The cut joins two
    notches along a chord that is short for their depth, at most `split_max_cut` strokes
    long and inside the object, and must leave pieces of a whole chromosome's size (each at
    least 0.6 typical objects, the smaller at least half the larger): cutting an arm off
    one chromosome (a class B cross, say) leaves an arm, much smaller than the rest. Only
    where no cut does, the smaller may be down to `UNEQUAL_CUT` of the larger if neither
    piece has a chromatid's peaked profile (without that test a class C pair on ddx11 was
    cut off-centre into its two chromatids). A `neck` cut (any sizes) is refused on that
    profile test too (without it: 3 more false positives over synthetic seeds 0-47, no
    chromosome more found).
    One of the two notches may be shallow (`SHALLOW_NOTCH`) when the depths add up to two
    deep ones and both pieces are single rods (`_rod_like`): two rods touching in a V or end
    to side, not the arms of one cross.
    With `long_cut` (strokes; for an object too large for one chromosome that nothing else
    split) the chord may be that long, each piece must be `LONG_CUT_PIECE` typical objects,
    and the pieces are what the cut line leaves (no watershed: in a contact as dark as the
    chromosomes it would hand one piece the other's end).
    """
    share = NECK_PIECE if neck else LONG_CUT_PIECE if long_cut else 0.6
    min_piece = share * typical
    min_depth = settings.split_notch_depth * scale.stroke
    found = _notches(own, SHALLOW_NOTCH * min_depth)
    if found is None:
        return None
    perimeter, notches = found
    max_cut = neck or max(long_cut, settings.split_max_cut) * scale.stroke
    cuts = []
    for i, (p, dp, fp) in enumerate(notches):
        for q, dq, fq in notches[i + 1 :]:
            length = float(np.hypot(*(p - q)))
            if length > max_cut or min(abs(fp - fq), perimeter - abs(fp - fq)) < length:
                continue
            if dp + dq < 2 * min_depth:
                continue
            cuts.append((length / (dp + dq), p, q, min(dp, dq) < min_depth))
    cuts.sort(key=lambda c: (c[0], tuple(c[1]), tuple(c[2]), c[3]))
    unequal: list[tuple[tuple[np.ndarray, list[int], list[int]], bool]] = []
    for _, p, q, shallow in cuts[:4]:
        cut = _chord_cut(own, p, q, min_piece)
        if cut is None or len(cut[1]) < 2:
            continue  # the chord leaves the object (no neck), or leaves one piece
        balance = min(cut[2]) / max(cut[2])
        if not neck and balance < 0.5:
            if balance >= UNEQUAL_CUT:
                unequal.append((cut, shallow))  # tried once no cut is balanced
            continue
        markers = _cut_pieces(own, values, cut, shallow, long_cut)
        if markers is not None and not (neck and _chromatid_profile(markers, values, settings)):
            return markers
    for cut, shallow in unequal:
        markers = _cut_pieces(own, values, cut, shallow, long_cut)
        if markers is not None and not _chromatid_profile(markers, values, settings):
            return markers
    return None


def _cut_pieces(
    own: np.ndarray,
    values: np.ndarray,
    cut: tuple[np.ndarray, list[int], list[int]],
    shallow: bool,
    long_cut: float,
) -> np.ndarray | None:
    """The pieces 1..k of `own` from a chord cut (`_chord_cut`), or None when a `shallow`
    notch's cut leaves a piece that is not one rod."""
    seed_labels, big, _ = cut
    if long_cut:  # a long cut's own line parts the pieces best
        markers = _markers(seed_labels, big)
    else:
        markers = _seeded_watershed(own, values, seed_labels, big)
    if shallow and not all(_rod_like(markers == k) for k in range(1, len(big) + 1)):
        return None
    return markers


def _chromatid_profile(markers: np.ndarray, values: np.ndarray, settings: SegmentSettings) -> bool:
    """Whether any of the pieces 1..k has one chromatid's peaked profile."""
    pieces = _units(markers, int(markers.max()) + 1, values)
    return min(u.flatness for u in pieces) <= settings.chromatid_flatness


def _notches(
    own: np.ndarray, min_depth: float
) -> tuple[int, list[tuple[np.ndarray, float, int]]] | None:
    """The outline's length and its concavities at least `min_depth` px deep: (point (x, y)
    in the object's box, depth px, index along the outline); None without two of them."""
    import cv2

    padded = cv2.copyMakeBorder(own.astype(np.uint8), 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    contours, _ = cv2.findContours(padded, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if not contours:
        return None
    contour = max(contours, key=len)
    if len(contour) < 8:
        return None
    try:
        hull = cv2.convexHull(contour, returnPoints=False)
        defects = cv2.convexityDefects(contour, hull)
    except cv2.error:
        return None
    if defects is None:
        return None
    notches = [
        (contour[f][0] - 1, d / 256.0, int(f))
        for _, _, f, d in defects.reshape(-1, 4)
        if d / 256.0 >= min_depth
    ]
    return (len(contour), notches) if len(notches) >= 2 else None


def _chord_cut(
    own: np.ndarray, p: np.ndarray, q: np.ndarray, min_piece: float
) -> tuple[np.ndarray, list[int], list[int]] | None:
    """The object cut along the chord p-q: the parts' label map, the labels of those of at
    least `min_piece` pixels and their areas; None when the chord leaves the object (no neck
    there)."""
    import cv2

    steps = max(2, int(math.hypot(*(p - q))) + 1)
    xs = np.linspace(p[0], q[0], steps).round().astype(int)
    ys = np.linspace(p[1], q[1], steps).round().astype(int)
    if own[ys, xs].mean() < 0.8:
        return None
    cut = own.astype(np.uint8)
    cv2.line(cut, (int(p[0]), int(p[1])), (int(q[0]), int(q[1])), 0, 2)
    n, seed_labels, stats, _ = cv2.connectedComponentsWithStats(cut, connectivity=4)
    big = [k for k in range(1, n) if stats[k, cv2.CC_STAT_AREA] >= min_piece]
    return seed_labels, big, [int(stats[k, cv2.CC_STAT_AREA]) for k in big]


def _rod_like(piece: np.ndarray) -> bool:
    """Whether a piece is one rod: at least twice as long as wide, and its mean width (area
    over axis length) no more than about its ridge width; a V or an X is wider on average
    than along its ridge, a blob is short."""
    import cv2

    mask = piece.astype(np.uint8)
    area = int(mask.sum())
    if area == 0:
        return False
    ys, xs = np.nonzero(mask)
    cov = np.cov(np.vstack([xs, ys]).astype(np.float64)) if area > 2 else np.eye(2)
    length = max(math.sqrt(12.0 * float(np.linalg.eigvalsh(cov)[-1])), 1.0)
    dist = cv2.distanceTransform(mask, cv2.DIST_L2, 3)
    ridge = (dist >= cv2.dilate(dist, np.ones((3, 3), np.uint8))) & (dist >= 1.0)
    if not ridge.any():
        return False
    width = 2.0 * float(np.median(dist[ridge]))
    return length >= 2.0 * width and area / length <= ROD_WIDTH * width


def _drop_fragments(markers: np.ndarray, count: int) -> np.ndarray:
    """Keep only the largest connected part of each watershed piece 1..count.

    A watershed can leave a piece a few stray pixels cut off from its body (across another
    piece's rim); kept, they would stretch that piece's box far beyond the chromosome.
    """
    import cv2

    for k in range(1, count + 1):
        piece = (markers == k).astype(np.uint8)
        n, parts, stats, _ = cv2.connectedComponentsWithStats(piece, connectivity=8)
        if n > 2:
            body = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
            markers[(parts > 0) & (parts != body)] = 0
    return markers


def _metaphases(
    groups: list[list[int]], units: list[Unit], settings: SegmentSettings
) -> tuple[list[int], int]:
    """Cluster objects (single linkage) and number the clusters big enough to be metaphases.

    Objects of too small a cluster join the nearest metaphase: stray chromosomes of a spread
    belong to its cell. With no metaphase at all, nothing is returned.
    """
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    centres = np.array([_group_centre(g, units) for g in groups])
    lengths = [max(units[i].length for i in g) for g in groups]
    link = settings.metaphase_link * float(np.median(lengths))
    tree = cKDTree(centres)
    graph = tree.sparse_distance_matrix(tree, link, output_type="coo_matrix")
    n_clusters, cluster = connected_components(graph, directed=False)
    sizes = np.bincount(cluster, minlength=n_clusters)
    big = [c for c in range(n_clusters) if sizes[c] >= settings.metaphase_min_chromosomes]
    if not big:
        return [-1] * len(groups), 0
    # Number metaphases left to right by their centre.
    order = sorted(big, key=lambda c: float(centres[cluster == c, 0].mean()))
    number = {c: k for k, c in enumerate(order)}
    members = np.array([c in number for c in cluster])
    out = []
    big_tree = cKDTree(centres[members])
    big_index = np.flatnonzero(members)
    for k, c in enumerate(cluster):
        if c in number:
            out.append(number[c])
        else:
            _, nearest = big_tree.query(centres[k])
            out.append(number[int(cluster[big_index[int(nearest)]])])
    return out, len(order)


def _group_centre(group: list[int], units: list[Unit]) -> tuple[float, float]:
    area = sum(units[i].area for i in group)
    cx = sum(units[i].cx * units[i].area for i in group) / area
    cy = sum(units[i].cy * units[i].area for i in group) / area
    return cx, cy


def _crops(
    rgb: np.ndarray,
    labels: np.ndarray,
    groups: list[list[int]],
    units: list[Unit],
    metaphase_of: list[int],
    flags: dict[int, frozenset[str]],
    pad: int,
) -> tuple[Crop, ...]:
    height, width = labels.shape
    items = []
    for k, group in enumerate(groups):
        x0 = min(units[i].x for i in group)
        y0 = min(units[i].y for i in group)
        x1 = max(units[i].x + units[i].w for i in group)
        y1 = max(units[i].y + units[i].h for i in group)
        x0, y0 = max(0, x0 - pad), max(0, y0 - pad)
        x1, y1 = min(width, x1 + pad), min(height, y1 + pad)
        items.append((metaphase_of[k], y0, x0, x1, y1, k))
    items.sort()
    crops = []
    for index, (meta, y0, x0, x1, y1, k) in enumerate(items):
        window = labels[y0:y1, x0:x1]
        mask = np.isin(window, [units[i].label for i in groups[k]])
        crops.append(
            Crop(
                index=index,
                bbox=BBox(x0, y0, x1 - x0, y1 - y0),
                rgb=rgb[y0:y1, x0:x1].copy(),
                mask=mask,
                metaphase=meta,
                flags=flags.get(k, frozenset()),
            )
        )
    return tuple(crops)


def draw_overlay(
    rgb: np.ndarray, seg: Segmentation, labels: Mapping[int, str] | None = None
) -> np.ndarray:
    """The spread with each crop's box and metaphase number; class colours when labels given.

    Flagged crops (touching, overlapping) are magenta so a reviewer finds them at a glance.
    """
    import cv2

    out = np.ascontiguousarray(rgb.copy())
    if out.ndim == 2:
        out = np.repeat(out[:, :, None], 3, axis=2)
    thickness = max(1, round(max(out.shape[:2]) / 1000))
    font_scale = 0.35 * thickness
    for crop in seg.crops:
        label = labels.get(crop.index) if labels else None
        if label in CLASS_COLOURS:
            colour = CLASS_COLOURS[label]
        elif crop.flags:
            colour = FLAGGED_COLOUR
        else:
            colour = UNLABELLED_COLOUR
        b = crop.bbox
        cv2.rectangle(out, (b.x, b.y), (b.x + b.w - 1, b.y + b.h - 1), colour, thickness)
        text = f"m{crop.metaphase + 1}" if crop.metaphase >= 0 else "m-"
        if label:
            text = f"{label} {text}"
        if crop.flags:
            text += " ?"
        cv2.putText(
            out,
            text,
            (b.x, max(8, b.y - 2)),
            cv2.FONT_HERSHEY_SIMPLEX,
            font_scale,
            colour,
            1,
            cv2.LINE_AA,
        )
    return out
