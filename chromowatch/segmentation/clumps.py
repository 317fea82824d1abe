"""Second looks at what splitting and pairing left: a clump of a chromosome and a sister
pair regrouped (`regroup_clumps`), a lone chromatid joined back to its pair (`join_fragments`)."""

from __future__ import annotations

import math
from collections.abc import Iterator

import cv2
import numpy as np

from chromowatch.segmentation.foreground import Unit, find_units
from chromowatch.segmentation.sisters import COMPACT_ELONGATION, best_pairs, sister_score
from chromowatch.segmentation.split import fine_split, install_pieces
from chromowatch.segmentation.yardstick import Yardstick
from chromowatch.settings import SegmentSettings

#: An object paired with nothing and over this many typical objects may be a clump of a
#: chromosome and a sister pair (`regroup_clumps`) ...
CLUMP_AREA = 1.2
#: ... whose chromatid-sized pieces (seeds of at least this many typical objects) ...
CLUMP_PIECE = 0.12
#: ... regroup into pairs and single pieces of at least this many typical objects each.
CLUMP_WHOLE = 0.5
#: A lone chromatid joins the piece it touches where the contact is at least this share of
#: each piece's length from its centre (the outer halves: end to end) (`join_fragments`).
JOIN_END = 0.25


def regroup_clumps(
    units: list[Unit],
    groups: list[list[int]],
    labels: np.ndarray,
    dark: np.ndarray,
    yard: Yardstick,
    settings: SegmentSettings,
) -> list[list[int]]:
    """Regroup an oversized object that nothing split or paired into sister pairs and whole
    chromosomes, where it is one.

    In a dense clump a short sister pair can touch a chromosome: one object, over
    `CLUMP_AREA` typical objects, whose pieces are too small for the splits of
    `split_touching`. Such an object is cut at the rising threshold that gives the most
    chromatid-sized seeds (`fine_split`, at least three, below `split_max_level`); pieces
    within half a stroke of each other that score as sisters (`sister_score`; pieces under
    half a typical object and hardly longer than wide have no axis to compare) are paired,
    best first. The new grouping is taken only when it holds a pair and every group, pair
    or single piece, is at least `CLUMP_WHOLE` typical objects (chromosome-sized: a
    chromosome's arm or band is not cut off as a pair); otherwise the object stays as it
    was. `units` (extended with the pieces) and `labels` are updated in place.
    """
    typical = yard.typical
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
        local = fine_split(own, values, yard, CLUMP_PIECE * typical, settings)
        if local is None:
            out.append(g)
            continue
        pieces = find_units(local, int(local.max()) + 1, values)
        pairs, used = _sister_pieces(local, pieces, yard, settings)
        rest = [i for i in range(len(pieces)) if i not in used]
        whole = CLUMP_WHOLE * typical
        if (
            not pairs
            or any(pieces[i].area + pieces[j].area < whole for i, j in pairs)
            or any(pieces[i].area < whole for i in rest)
        ):
            out.append(g)
            continue
        next_label = install_pieces(window, own, local, pieces, unit, next_label)
        base = len(units)
        units.extend(pieces)
        out.extend([[base + i, base + j] for i, j in pairs])
        out.extend([[base + i] for i in rest])
    return out


def _sister_pieces(
    local: np.ndarray, pieces: list[Unit], yard: Yardstick, settings: SegmentSettings
) -> tuple[list[list[int]], set[int]]:
    """A clump's pieces (`local`, 1..k) paired as sisters, best first: within half a stroke of
    each other and scoring as sisters (`sister_score`); also the indices paired."""
    reach = 2 * round(0.5 * yard.stroke) + 1
    grow = np.ones((reach, reach), np.uint8)
    near = [cv2.dilate((local == p.label).astype(np.uint8), grow) > 0 for p in pieces]
    small = 0.5 * yard.typical
    cands: list[tuple[float, int, int]] = []
    for i, a in enumerate(pieces):
        for j in range(i + 1, len(pieces)):
            b = pieces[j]
            if not (near[i] & (local == b.label)).any():
                continue
            tiny = all(u.area < small and u.elongation < COMPACT_ELONGATION for u in (a, b))
            score = sister_score(a, b, None, yard.thin, settings, tiny)
            if score is not None:
                cands.append((score, i, j))
    return best_pairs(cands)


def join_fragments(
    units: list[Unit], groups: list[list[int]], labels: np.ndarray, yard: Yardstick
) -> list[list[int]]:
    """Join a lone chromatid cut off by the splits to the single piece it continues.

    The watershed of a dense clump can cut one chromatid of a sister pair away from the
    rest of the pair: a piece left alone, under `CLUMP_WHOLE` typical objects (no whole
    chromosome) and as thin as one chromatid (`Yardstick.thin`), still touching the piece it
    was cut from. It joins the single piece (not a pair: pairs are whole; not one over
    `CLUMP_AREA` typical objects: that is a clump, not the rest of a pair) it touches with
    both ends: the contact lies in the outer half of each piece's axis (`JOIN_END`), as
    where a chromatid continues. Where it touches several such pieces, the longest contact
    wins.
    """
    joined = _joins(units, groups, labels, yard)
    if not joined:
        return groups
    out: list[list[int]] = []
    for k, g in enumerate(groups):
        if k not in joined:
            out.append(g + [groups[m][0] for m, t in joined.items() if t == k])
    return out


def _joins(
    units: list[Unit], groups: list[list[int]], labels: np.ndarray, yard: Yardstick
) -> dict[int, int]:
    """Which lone chromatid joins which piece (`join_fragments`): group index -> group index,
    groups taken in order, neither side of a join joined again."""
    group_of = {i: k for k, g in enumerate(groups) for i in g}
    by_label = {u.label: i for i, u in enumerate(units)}
    joined: dict[int, int] = {}
    for k, g in enumerate(groups):
        a = units[g[0]]
        lone = len(g) == 1 and a.area < CLUMP_WHOLE * yard.typical and a.thickness <= yard.thin
        if not lone or k in joined:
            continue
        best: tuple[int, int] | None = None  # contact length, group
        for other, contact, (px, py) in _contacts(a, labels):
            j = by_label[other]
            kb = group_of[j]
            if len(groups[kb]) != 1 or kb in joined or kb == k:
                continue
            if units[j].area >= CLUMP_AREA * yard.typical:
                continue
            if _end_to_end(px, py, a, units[j]) and (best is None or contact > best[0]):
                best = (contact, kb)
        if best is not None:
            joined[k] = best[1]
    return joined


def _contacts(a: Unit, labels: np.ndarray) -> Iterator[tuple[int, int, tuple[float, float]]]:
    """The other units that `a` touches: each one's label, the length of the contact (pixels
    of `a`'s outer ring on it) and the contact's centre (x, y), in label order."""
    height, width = labels.shape[:2]
    y0, x0 = max(a.y - 1, 0), max(a.x - 1, 0)
    window = labels[y0 : min(a.y + a.h + 1, height), x0 : min(a.x + a.w + 1, width)]
    ring = cv2.dilate((window == a.label).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    for other in np.unique(window[ring & (window != a.label) & (window > 0)]):
        ys, xs = np.nonzero(ring & (window == other))
        yield int(other), len(xs), (float(xs.mean()) + x0, float(ys.mean()) + y0)


def _end_to_end(px: float, py: float, a: Unit, b: Unit) -> bool:
    """Whether a contact at (px, py) lies in the outer half of both units' axes (`JOIN_END`):
    one continues the other, rather than touching its side."""
    return all(
        abs((px - u.cx) * math.cos(u.angle) + (py - u.cy) * math.sin(u.angle))
        >= JOIN_END * u.length
        for u in (a, b)
    )
