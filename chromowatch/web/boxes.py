"""A chromosome the segmenter missed, drawn on the spread page: the box is cut from the
spread, enhanced by the pipeline's own step, stored as a crop of that image and labelled by
the person who drew it (source "web"). It has no prediction until the next
`chromowatch reclassify`; its confirmed label counts at once."""

from __future__ import annotations

import logging

import numpy as np

from chromowatch import ingest
from chromowatch.enhance import enhance_whole
from chromowatch.errors import InputImageError, UsageError
from chromowatch.files import crop_dir, write_crop_png
from chromowatch.records import CLASS_NAMES, BBox
from chromowatch.settings import Settings
from chromowatch.store import Store

log = logging.getLogger(__name__)
MIN_SIDE = 4  # pixels: a smaller box is a slip of the mouse


def check_box(bbox: BBox, width: int, height: int) -> None:
    if bbox.w < MIN_SIDE or bbox.h < MIN_SIDE:
        raise UsageError(f"the box is smaller than {MIN_SIDE} pixels", hint="draw it larger")
    if bbox.x < 0 or bbox.y < 0 or bbox.x + bbox.w > width or bbox.y + bbox.h > height:
        raise UsageError("the box reaches outside the spread", hint="draw it inside")


def add_box(settings: Settings, store: Store, image_id: int, bbox: BBox, cls: str, *,
            who: str) -> int:
    """Cut, enhance, store and label a drawn box; returns the new crop's id."""
    if cls not in CLASS_NAMES:
        raise UsageError(f"unknown class {cls!r}", hint="use A, B or C")
    place = store.image_place(image_id)
    if place is None:
        raise UsageError(f"no finished image with id {image_id}", hint="reload the page")
    check_box(bbox, place[2], place[3])
    try:
        spread = ingest.read_spread(place[1], settings.ingest)
    except InputImageError as exc:
        raise UsageError(f"cannot read the spread: {exc.problem}",
                         hint="the file was moved or changed since it was processed") from None
    raw = spread.rgb[bbox.y:bbox.y + bbox.h, bbox.x:bbox.x + bbox.w]
    image = enhance_whole(np.ascontiguousarray(raw), settings.enhance)
    index = store.next_crop_index(image_id)
    file = write_crop_png(crop_dir(settings.paths.crops, spread.sha256), index, image)
    [crop_id] = store.add_labelled_crops(image_id, [(bbox, file, cls)], source="web", who=who)
    log.info("%s drew crop %d (%s) on image %d", who, crop_id, cls, image_id)
    return crop_id
