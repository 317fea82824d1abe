"""Splitting objects that are two or more chromosomes touching: a rising threshold's seam, or
a cut between notches of the outline (`split_touching`), keeping touching sisters whole."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import cv2
import numpy as np

from chromowatch.segmentation.foreground import Unit, find_units
from chromowatch.segmentation.sisters import axis_angle, chromatid_like, sister_score
from chromowatch.segmentation.yardstick import Yardstick
from chromowatch.settings import SegmentSettings

#: Notches this share of `split_notch_depth` deep may end a cut (with a deep one opposite)
#: when both pieces are single rods (`ROD_WIDTH`): two rods touching end to side or in a V.
SHALLOW_NOTCH = 0.4
#: Pieces cut at a narrow neck (`_neck_split`) are at least this many typical objects.
NECK_PIECE = 0.3
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

#: A way to split one object: (own mask, darkness, the spread's yardstick, settings) -> its
#: pieces 1..k in the object's box, or None.
Splitter = Callable[[np.ndarray, np.ndarray, Yardstick, SegmentSettings], "np.ndarray | None"]
#: A cut between two notches: its length over their depths (lower is better), the notches
#: (x, y) in the object's box, and whether one of them is shallow.
Chord = tuple[float, np.ndarray, np.ndarray, bool]
#: What a chord cut leaves (`_chord_cut`): the parts' label map, the labels of those big
#: enough, and their areas.
ChordCut = tuple[np.ndarray, list[int], list[int]]


def split_touching(
    units: list[Unit],
    labels: np.ndarray,
    dark: np.ndarray,
    yard: Yardstick,
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
    `labels` is updated in place. `yard` is measured on `units`: pieces are sized by the
    whole objects, however many are cut.
    """
    typical = yard.typical
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
        found = _split_one(own, values, unit, large, yard, settings)
        if found is None:
            if unit.area > settings.touching_area * typical:
                touching_labels.add(unit.label)
            out.append(unit)
            continue
        local, pieces = found
        next_label = install_pieces(window, own, local, pieces, unit, next_label)
        queue.extend(pieces)
    touching = {k for k, u in enumerate(out) if u.label in touching_labels}
    return out, touching


def _splitters(
    unit: Unit, large: bool, yard: Yardstick, settings: SegmentSettings
) -> tuple[Splitter, ...]:
    """The ways to split `unit` to try, in order: seams and notch cuts for a `large` one, a
    neck for one of ordinary size; a long cut for one too large for one chromosome; last, a
    kink cut."""
    splits: tuple[Splitter, ...] = (
        (_watershed_split, _dark_seam_split, _concavity_split) if large else (_neck_split,)
    )
    if unit.area > settings.touching_area * yard.typical:
        splits += (_long_cut_split,)
    return (*splits, _kink_split)


def _split_one(
    own: np.ndarray,
    values: np.ndarray,
    unit: Unit,
    large: bool,
    yard: Yardstick,
    settings: SegmentSettings,
) -> tuple[np.ndarray, list[Unit]] | None:
    """The first split of `unit` that `_splitters` offer and `_accepted` takes: its pieces
    1..k in the unit's box and the pieces measured there; None when none is."""
    for split in _splitters(unit, large, yard, settings):
        local = split(own, values, yard, settings)
        if local is None:
            continue
        pieces = find_units(local, int(local.max()) + 1, values)
        if _accepted(split, pieces, large, yard.thin, settings):
            return local, pieces
    return None


def _accepted(
    split: Splitter, pieces: list[Unit], large: bool, thin: float, settings: SegmentSettings
) -> bool:
    """Whether the pieces a splitter left are two or more chromosomes, not one pair of
    touching sisters nor, for a dark seam, one chromosome parted at a light band."""
    if len(pieces) < 2:
        return False  # the splitter left one piece: nothing was split
    notched = split in (_concavity_split, _neck_split, _long_cut_split)
    # A kink cut has its own test of whole-chromosome pieces (flat profiles).
    sisters = split is not _kink_split and len(pieces) == 2
    if sisters and _touching_sisters(pieces, notched, thin, settings, large):
        return False  # one class C pair whose sisters touch: keep it whole
    # A dark seam's pieces that do not meet at an angle are one chromosome parted at a light
    # band, or sisters.
    return split is not _dark_seam_split or _meet_at_angle(pieces, thin, settings)


def install_pieces(
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


def fine_split(
    own: np.ndarray, values: np.ndarray, yard: Yardstick, min_piece: float,
    settings: SegmentSettings,
) -> np.ndarray | None:
    """Pieces 1..k (k >= 3) of one object from the rising-threshold level below
    `split_max_level` that leaves the most seeds of `min_piece` pixels, or None."""
    best: tuple[np.ndarray, list[int]] | None = None
    for seed_labels, big in _rising_seeds(own, values, yard, min_piece, settings.split_max_level):
        if len(big) >= 3 and (best is None or len(big) > len(best[1])):
            best = (seed_labels, big)
    if best is None:
        return None
    return _seeded_watershed(own, values, *best)


def _touching_sisters(
    pieces: list[Unit], at_notches: bool, thin: float, settings: SegmentSettings, large: bool
) -> bool:
    """Whether two touching pieces of one object are rather one pair of sister chromatids.

    Side by side like sisters (`sister_score`), or, for pieces cut at notches, two equal
    chromatid-like pieces meeting at a point: sisters splayed apart from one end. An object
    of ordinary size (not `large`) cut at a neck into two pieces side by side is one
    chromosome whose sisters meet at the centromere (class B), whatever their profile.
    """
    a, b = pieces
    if sister_score(a, b, None, thin, settings, any_profile=not large) is not None:
        return True
    return (
        at_notches
        and chromatid_like(a, thin, settings)
        and chromatid_like(b, thin, settings)
        and min(a.area, b.area) >= 0.8 * max(a.area, b.area)
    )


def _dark_seam_split(
    own: np.ndarray,
    values: np.ndarray,
    yard: Yardstick,
    settings: SegmentSettings,
) -> np.ndarray | None:
    """Pieces of one object parted by a seam darker than `split_max_level` but no darker
    than `split_seam_level` of the typical peak, or None (also when that is off)."""
    if settings.split_seam_level <= settings.split_max_level:
        return None
    level = settings.split_seam_level
    return _watershed_split(own, values, yard, settings, max_level=level)


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
    if sister_score(a, b, None, thin, settings, any_profile=True) is not None:
        return False
    return axis_angle(a.angle, b.angle) >= settings.split_seam_angle


def _neck_split(
    own: np.ndarray,
    values: np.ndarray,
    yard: Yardstick,
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
    widest = settings.split_neck * yard.stroke
    min_piece = NECK_PIECE * yard.typical
    # Seeds may be smaller than a piece: the watershed gives each its flanks back.
    local = _watershed_split(own, values, yard, settings, 0.5 * min_piece)
    if local is not None and int(local.max()) == 2:
        dist = cv2.distanceTransform(own.astype(np.uint8), cv2.DIST_L2, 3)
        grow = np.ones((3, 3), np.uint8)
        near_1 = cv2.dilate((local == 1).astype(np.uint8), grow) > 0
        near_2 = cv2.dilate((local == 2).astype(np.uint8), grow) > 0
        seam = own & (local == 0) & near_1 & near_2
        sizes = [int(np.count_nonzero(local == k)) for k in (1, 2)]
        if seam.any() and 2.0 * float(dist[seam].max()) <= widest and min(sizes) >= min_piece:
            return local
    return _concavity_split(own, values, yard, settings, neck=widest)


def _kink_split(
    own: np.ndarray,
    values: np.ndarray,
    yard: Yardstick,
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
    found = _notches(own, KINK_SHALLOW * yard.stroke)
    if found is None:
        return None
    _, notches = found
    deep = settings.split_notch_depth * yard.stroke
    best: tuple[float, np.ndarray] | None = None
    for i, (p, dp, _) in enumerate(notches):
        for q, dq, _ in notches[i + 1 :]:
            length = float(np.hypot(*(p - q)))
            if max(dp, dq) < deep or length > KINK_CHORD * yard.stroke:
                continue
            if best is not None and length / (dp + dq) >= best[0]:
                continue
            cut = _chord_cut(own, p, q, KINK_PIECE * yard.typical)
            if cut is None or len(cut[1]) != 2:
                continue
            markers = _markers(cut[0], cut[1])
            a, b = find_units(markers, 3, values)
            if (
                min(a.elongation, b.elongation) >= KINK_ELONG
                and min(a.flatness, b.flatness) > settings.chromatid_flatness
                and axis_angle(a.angle, b.angle) >= KINK_ANGLE
                and _rod_like(markers == 1)
                and _rod_like(markers == 2)
            ):
                best = (length / (dp + dq), markers)
    return None if best is None else best[1]


def _long_cut_split(
    own: np.ndarray,
    values: np.ndarray,
    yard: Yardstick,
    settings: SegmentSettings,
) -> np.ndarray | None:
    """For an object too large for one chromosome that no seam nor short cut parted: two
    chromosomes touching along more than a short chord (an arm's end against another's
    side), cut between notches up to `split_touching_cut` strokes apart; None when off."""
    if settings.split_touching_cut <= settings.split_max_cut:
        return None
    long_cut = settings.split_touching_cut
    return _concavity_split(own, values, yard, settings, long_cut=long_cut)


def _watershed_split(
    own: np.ndarray,
    values: np.ndarray,
    yard: Yardstick,
    settings: SegmentSettings,
    min_piece: float | None = None,
    max_level: float | None = None,
) -> np.ndarray | None:
    """Pieces 1..k of one object (`own`), or None when no rising threshold below
    `max_level` (share of the typical peak; default `split_max_level`) separates it."""
    if min_piece is None:
        min_piece = 0.3 * yard.typical
    if max_level is None:
        max_level = settings.split_max_level
    for seed_labels, big in _rising_seeds(own, values, yard, min_piece, max_level):
        if len(big) >= 2:
            return _seeded_watershed(own, values, seed_labels, big)
    return None


def _rising_seeds(
    own: np.ndarray, values: np.ndarray, yard: Yardstick, min_piece: float, max_level: float
) -> Iterator[tuple[np.ndarray, list[int]]]:
    """At each threshold from just above the spread's own up to `max_level` of the typical
    peak (steps of 5%), the object's parts above it: their label map and the labels of
    those of at least `min_piece` pixels. Stops where none is left."""
    step = 0.05 * yard.peak
    level = yard.threshold + step
    while level < max_level * yard.peak:
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
    yard: Yardstick,
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
    min_piece = share * yard.typical
    min_depth = settings.split_notch_depth * yard.stroke
    found = _notches(own, SHALLOW_NOTCH * min_depth)
    if found is None:
        return None
    perimeter, notches = found
    max_cut = neck or max(long_cut, settings.split_max_cut) * yard.stroke
    chords = _chords(notches, perimeter, max_cut, min_depth)
    for cut, shallow, unequal in _cuts_to_try(own, chords[:4], min_piece, bool(neck)):
        markers = _cut_pieces(own, values, cut, shallow, long_cut)
        if markers is None:
            continue
        # Unequal pieces and a neck's pieces must both have a whole chromosome's profile.
        if not ((unequal or neck) and _chromatid_profile(markers, values, settings)):
            return markers
    return None


def _chords(
    notches: list[tuple[np.ndarray, float, int]], perimeter: int, max_cut: float,
    min_depth: float,
) -> list[Chord]:
    """The chords between two notches that may cut the object, best first: at most `max_cut`
    px long, shorter than the outline between their ends either way round, and their depths
    adding up to two notches of `min_depth` (one may be shallower)."""
    chords: list[Chord] = []
    for i, (p, dp, fp) in enumerate(notches):
        for q, dq, fq in notches[i + 1 :]:
            length = float(np.hypot(*(p - q)))
            if length > max_cut or min(abs(fp - fq), perimeter - abs(fp - fq)) < length:
                continue
            if dp + dq < 2 * min_depth:
                continue
            chords.append((length / (dp + dq), p, q, min(dp, dq) < min_depth))
    chords.sort(key=lambda c: (c[0], tuple(c[1]), tuple(c[2]), c[3]))
    return chords


def _cuts_to_try(
    own: np.ndarray, chords: list[Chord], min_piece: float, neck: bool
) -> Iterator[tuple[ChordCut, bool, bool]]:
    """The chords' cuts in the order `_concavity_split` tries them, as (cut, shallow,
    unequal): each that leaves two or more pieces of `min_piece` px with the smaller at least
    half the larger (any sizes for a `neck`), best chord first; then those as unequal as
    `UNEQUAL_CUT`, tried once no balanced cut was taken. Cuts are made as they are asked for."""
    unequal: list[tuple[ChordCut, bool]] = []
    for _, p, q, shallow in chords:
        cut = _chord_cut(own, p, q, min_piece)
        if cut is None or len(cut[1]) < 2:
            continue  # the chord leaves the object (no neck), or leaves one piece
        balance = min(cut[2]) / max(cut[2])
        if not neck and balance < 0.5:
            if balance >= UNEQUAL_CUT:
                unequal.append((cut, shallow))  # tried once no cut is balanced
            continue
        yield cut, shallow, False
    for cut, shallow in unequal:
        yield cut, shallow, True


def _cut_pieces(
    own: np.ndarray,
    values: np.ndarray,
    cut: ChordCut,
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
    pieces = find_units(markers, int(markers.max()) + 1, values)
    return min(u.flatness for u in pieces) <= settings.chromatid_flatness


def _notches(
    own: np.ndarray, min_depth: float
) -> tuple[int, list[tuple[np.ndarray, float, int]]] | None:
    """The outline's length and its concavities at least `min_depth` px deep: (point (x, y)
    in the object's box, depth px, index along the outline); None without two of them."""
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
) -> ChordCut | None:
    """The object cut along the chord p-q: the parts' label map, the labels of those of at
    least `min_piece` pixels and their areas; None when the chord leaves the object (no neck
    there)."""
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
    for k in range(1, count + 1):
        piece = (markers == k).astype(np.uint8)
        n, parts, stats, _ = cv2.connectedComponentsWithStats(piece, connectivity=8)
        if n > 2:
            body = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
            markers[(parts > 0) & (parts != body)] = 0
    return markers
