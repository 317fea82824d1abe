"""Separated sister chromatids: when two units are one class C pair (`sister_score`), and
the pairing of a spread's units two by two (`pair_chromatids`)."""

from __future__ import annotations

import math

import cv2
import numpy as np

from chromowatch.segmentation.foreground import Unit
from chromowatch.segmentation.yardstick import Yardstick
from chromowatch.settings import SegmentSettings

#: A unit whose length is under this many of its thicknesses has no measurable axis.
COMPACT_ELONGATION = 2.0
#: A unit thinner than this share of the spread's stroke width is one chromatid at most.
CHROMATID_WIDTH = 0.95
#: Sisters that are chromatid-like only by thinness keep close along this share of their
#: length (`_alongside_or_meeting`) ...
ALONGSIDE = 0.8
#: ... unless they come this many thicknesses close (splayed from the centromere).
MEETING_GAP = 0.35
#: Two separate chromatid-like units meeting at a point (gap under MEETING_GAP) at more
#: than pair_max_angle are splayed sisters when their areas agree to this ratio.
SPLAYED_ALIKE = 0.85
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


def best_pairs(candidates: list[tuple[float, int, int]]) -> tuple[list[list[int]], set[int]]:
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


def _gap(a: Unit, b: Unit, labels: np.ndarray) -> float:
    """Shortest distance between two components' pixels."""
    x0, y0 = min(a.x, b.x), min(a.y, b.y)
    x1, y1 = max(a.x + a.w, b.x + b.w), max(a.y + a.h, b.y + b.h)
    window = labels[y0:y1, x0:x1]
    not_a = (window != a.label).astype(np.uint8)
    dist = cv2.distanceTransform(not_a, cv2.DIST_L2, 3)
    return float(dist[window == b.label].min()) - 1.0


def pair_chromatids(
    units: list[Unit], labels: np.ndarray, yard: Yardstick, settings: SegmentSettings
) -> list[list[int]]:
    """Group separated sister chromatids two by two; every other unit stays alone.

    Sisters are each other's nearest neighbour, each at most `SISTER_MAX_WIDTH` strokes thick
    (one chromatid, whatever the profile or geometry says), and score as sisters
    (`sister_score`: alike in size, close for their thickness, parallel side by side); best
    pairs are taken first. A pair that only geometry pairs must be no wider across than
    `SPAN_REL` times the spread's usual candidate pair.
    Two tiny units (under half the typical object, hardly longer than wide, thinner than the
    spread's stroke: one short chromatid each) have no axis to compare, so their angle is
    not tested: a short pair splayed or lying end to end stays one object, not two specks.
    """
    gaps = _mutual_nearest(units, labels, settings.pair_max_gap * yard.stroke)
    limit = PAIR_SPAN * yard.stroke  # span across of a pair by geometry alone (`sister_score`)
    found: list[tuple[float, int, int, bool]] = []  # score, i, j, tiny
    for (i, j), gap in gaps.items():
        scored = _pair_score(units[i], units[j], gap, labels, yard, settings, limit)
        if scored is not None:
            found.append((scored[0], i, j, scored[1]))
    if len(found) >= 3:
        found = _within_usual_span(found, units, gaps, yard.thin, settings, limit)
    groups, used = best_pairs([(score, i, j) for score, i, j, _ in found])
    groups.extend([i] for i in range(len(units)) if i not in used)
    return groups


def _mutual_nearest(
    units: list[Unit], labels: np.ndarray, reach: float
) -> dict[tuple[int, int], float]:
    """The gaps between units that are each other's nearest neighbour, keyed (i, j) with
    i < j, among those whose boxes come within `reach` px of each other."""
    gaps: dict[tuple[int, int], float] = {}
    nearest: dict[int, tuple[float, int]] = {}
    for i, a in enumerate(units):
        for j in range(i + 1, len(units)):
            b = units[j]
            if not _boxes_within(a, b, reach):
                continue
            gap = _gap(a, b, labels)
            gaps[(i, j)] = gap
            if gap < nearest.get(i, (math.inf, -1))[0]:
                nearest[i] = (gap, j)
            if gap < nearest.get(j, (math.inf, -1))[0]:
                nearest[j] = (gap, i)
    return {
        (i, j): gap
        for (i, j), gap in gaps.items()
        if nearest[i][1] == j and nearest[j][1] == i
    }


def _boxes_within(a: Unit, b: Unit, reach: float) -> bool:
    """Whether two units' boxes come within `reach` px of each other on both axes."""
    return not (
        b.x > a.x + a.w + reach
        or a.x > b.x + b.w + reach
        or b.y > a.y + a.h + reach
        or a.y > b.y + b.h + reach
    )


def _pair_score(
    a: Unit,
    b: Unit,
    gap: float,
    labels: np.ndarray,
    yard: Yardstick,
    settings: SegmentSettings,
    span: float,
) -> tuple[float, bool] | None:
    """Two mutually nearest units' sister score and whether both are tiny (no axis to
    compare); None when they are not sisters."""
    small = 0.5 * yard.typical
    tiny = all(
        u.area < small
        and u.elongation < COMPACT_ELONGATION
        and u.thickness < CHROMATID_WIDTH * yard.stroke
        for u in (a, b)
    )
    if max(a.thickness, b.thickness) > SISTER_MAX_WIDTH * yard.stroke:
        return None  # a whole chromosome, two chromatids wide, is nobody's sister
    score = sister_score(a, b, gap, yard.thin, settings, tiny, span=span)
    if score is None:
        return None
    if not tiny and not _alongside_or_meeting(a, b, gap, labels, settings):
        return None
    return score, tiny


def _within_usual_span(
    found: list[tuple[float, int, int, bool]],
    units: list[Unit],
    gaps: dict[tuple[int, int], float],
    thin: float,
    settings: SegmentSettings,
    span: float,
) -> list[tuple[float, int, int, bool]]:
    """The candidate pairs (score, i, j, tiny) that still score as sisters once the spread's
    usual pair tightens the span limit; only pairs by geometry alone feel it."""
    spans = [units[i].thickness + units[j].thickness + gaps[(i, j)] for _, i, j, _ in found]
    limit = min(span, SPAN_REL * float(np.median(spans)))
    return [
        (score, i, j, tiny)
        for score, i, j, tiny in found
        if sister_score(units[i], units[j], gaps[(i, j)], thin, settings, tiny, span=limit)
        is not None
    ]


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


def chromatid_like(unit: Unit, thin: float, settings: SegmentSettings) -> bool:
    """Whether a unit looks like one chromatid: a peaked profile, or the spread's thin mode."""
    return unit.flatness <= settings.chromatid_flatness or unit.thickness <= thin


def sister_score(
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
    diff = axis_angle(a.angle, b.angle)
    if tiny:
        # Tiny, hardly longer than wide: their axes (so angle and side-by-side-ness) are
        # not measurable; alike, close and chromatid-like is all there is to go by.
        if chromatid_like(a, thin, settings) and chromatid_like(b, thin, settings):
            return rel_gap + 2.0 * (1 - area_ratio) + (1 - ratio) + 0.5
        return None
    if diff > settings.pair_max_angle:
        # Sisters splayed from one end meet at a point at any angle (a V, or an X where
        # they cross): two chromatid-like units, alike, whose gap is under MEETING_GAP.
        splayed = (
            gap is not None
            and rel_gap <= MEETING_GAP
            and area_ratio >= SPLAYED_ALIKE
            and chromatid_like(a, thin, settings)
            and chromatid_like(b, thin, settings)
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
    chromatids = chromatid_like(a, thin, settings) and chromatid_like(b, thin, settings)
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


def axis_angle(a: float, b: float) -> float:
    """Degrees (0-90) between two axis orientations (radians modulo pi)."""
    diff = abs(a - b) % math.pi
    return math.degrees(min(diff, math.pi - diff))
