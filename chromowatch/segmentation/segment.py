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

This module runs the steps in order; the work is in `foreground` (darkness, nuclei, units),
`yardstick` (the spread's measures every step reads), `split` (touching chromosomes), `sisters`
(pairing chromatids) and `clumps` (second looks at what those left). `overlay` draws the
result.
"""
from __future__ import annotations

import logging

import cv2
import numpy as np
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from chromowatch.records import BBox, Crop, Segmentation
from chromowatch.segmentation.clumps import join_fragments, regroup_clumps
from chromowatch.segmentation.foreground import (
    Unit,
    find_units,
    measure_darkness,
    measure_scale,
    remove_nuclei,
)
from chromowatch.segmentation.sisters import pair_chromatids
from chromowatch.segmentation.split import split_touching
from chromowatch.segmentation.yardstick import Yardstick
from chromowatch.settings import SegmentSettings

log = logging.getLogger(__name__)

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


def segment(
    rgb: np.ndarray, settings: SegmentSettings, *, chroma_subsampled: bool = False
) -> Segmentation:
    """Find the chromosomes of a spread, one crop each, grouped into metaphases.

    `chroma_subsampled`: the image came from a JPEG with colour at a lower resolution
    (`Spread.chroma_subsampled`); darkness is then read from brightness.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"segment expects HxWx3 uint8 RGB, got {rgb.dtype} {rgb.shape}")
    dark, sigma = measure_darkness(rgb, luma=chroma_subsampled)
    scale = measure_scale(dark, sigma, settings)
    if scale is None:
        return _empty("no metaphase found: nothing darker than the background")
    mask = (dark > scale.threshold).astype(np.uint8)
    mask, nuclei = remove_nuclei(mask, scale, settings)
    n, labels = cv2.connectedComponents(mask, connectivity=8, ltype=cv2.CV_32S)
    speck = 0.25 * scale.stroke * scale.stroke
    units = [u for u in find_units(labels, n, dark) if u.area >= speck]
    if not units:
        reason = "only nuclei" if nuclei else "only debris"
        return _empty(f"no metaphase found: {reason}")
    yard = Yardstick.measure(scale, units)
    units, touching = split_touching(units, labels, dark, yard, settings)
    # The split's pieces are objects from here on: the typical object and the thin mode are
    # measured again, on them (the splits were sized by the whole objects).
    yard = yard.remeasured(units)
    groups = pair_chromatids(units, labels, yard, settings)
    groups = regroup_clumps(units, groups, labels, dark, yard, settings)
    # regroup_clumps adds a clump's pieces to `units` (the clump stays in it too), and
    # join_fragments has always measured the typical object and the thin mode with them.
    yard = yard.remeasured(units)
    groups = join_fragments(units, groups, labels, yard)
    groups = _drop_debris(groups, units, yard, settings, labels.shape, n)
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
    """No crops, and why (logged, and kept as the segmentation's note for the user)."""
    log.info("%s", note)
    return Segmentation(crops=(), metaphases=0, note=note)


def _drop_debris(
    groups: list[list[int]],
    units: list[Unit],
    yard: Yardstick,
    settings: SegmentSettings,
    shape: tuple[int, ...],
    first_piece: int,
) -> list[list[int]]:
    """Leave out objects much smaller than the typical one (a pair counts as one object).

    Nothing under a stroke's square is a chromosome, except at the image's edge: there a
    chromosome may show only its end, and only the share of the typical object applies
    (with half a stroke's square for a floor, the most that mere specks reach); and except a
    whole object (one found as such, not a piece cut off by `split_touching`: labels from
    `first_piece` on) down to `DEBRIS_STROKES` of a stroke's square that is as dark as
    chromosome cores (`DEBRIS_DARK`): a small chromosome in a blurred or zoomed-out image.
    Dark stain crystals of that size pass too; they are rarer than small chromosomes.
    Whatever its size, an object paler than `PALE_CORE` of the typical core is left out.
    """
    stroke_area = yard.stroke_area
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
        if d >= PALE_CORE * yard.peak
        and (
            a >= (min_cut if any(at_edge(units[i]) for i in g) else min_area)
            or (a >= DEBRIS_STROKES * stroke_area and d >= DEBRIS_DARK * yard.peak
                and whole(g))
        )
    ]


def _metaphases(
    groups: list[list[int]], units: list[Unit], settings: SegmentSettings
) -> tuple[list[int], int]:
    """Cluster objects (single linkage) and number the clusters big enough to be metaphases.

    Objects of too small a cluster join the nearest metaphase: stray chromosomes of a spread
    belong to its cell. With no metaphase at all, nothing is returned.
    """
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
    """The area-weighted centre (x, y) of an object's units."""
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
    """One crop per object: its box padded by `pad` px (within the image), its pixels and
    mask, numbered by metaphase, then top to bottom and left to right."""
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

