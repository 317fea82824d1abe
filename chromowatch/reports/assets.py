"""The pictures a report carries in its own assets/ folder: crop galleries and spread
thumbnails with each crop's box in its class colour, numbered as in the galleries.

Copied into the report's folder so the HTML can be opened or moved as is, and so the PDF
renderer needs nothing from outside that folder.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from chromowatch.records import CLASS_COLOURS, CLASS_NAMES, UNLABELLED_COLOUR, hex_to_rgb
from chromowatch.reports.data import CropView, SampleData
from chromowatch.settings import Settings
from chromowatch.store import SampleImage

log = logging.getLogger(__name__)


def _bgr(colour: str) -> tuple[int, int, int]:
    r, g, b = hex_to_rgb(colour)
    return b, g, r


#: The class palette in OpenCV's BGR order, for the boxes on spread thumbnails.
BOX_COLOURS_BGR: dict[str | None, tuple[int, int, int]] = {
    **{c: _bgr(CLASS_COLOURS[c]) for c in CLASS_NAMES},
    None: _bgr(UNLABELLED_COLOUR),
}
OVERLAY_WIDTH = 640  # pixels of a spread thumbnail, at most
OVERLAY_HEIGHT = 480
OVERLAY_MARGIN = 40  # spread pixels around the chromosomes' region
LABEL_SCALE = 0.38  # OpenCV font scale of the crop numbers on thumbnails (about 9 px high)


def _copy_crop(view: CropView, assets: Path) -> str | None:
    source = Path(view.file)
    target = assets / f"crop-{view.crop_id}{source.suffix.lower() or '.png'}"
    try:
        shutil.copyfile(source, target)
    except OSError as exc:
        log.warning("crop %d: its image %s cannot be read (%s)", view.crop_id, source, exc)
        return None
    return f"assets/{target.name}"


def gallery(data: SampleData, settings: Settings, assets: Path) -> dict[str, Any]:
    """Example crops per class (confirmed first, then the most confident) and the least
    confident crops, copied into the report's folder."""

    def item(v: CropView) -> dict[str, Any]:
        return {
            "src": _copy_crop(v, assets),
            "id": v.crop_id,
            "label": v.counted_as or v.predicted or "?",
            "confirmed": v.confirmed,
            "excluded": v.excluded,
            "probs": dict(zip(CLASS_NAMES, v.probs, strict=True)),
            "confidence": v.confidence,
        }

    per_class: dict[str, list[dict[str, Any]]] = {}
    n = settings.report.gallery_per_class
    for c in CLASS_NAMES:
        chosen = sorted((v for v in data.crops if v.counted_as == c),
                        key=lambda v: (v.confirmed is None, -v.confidence, v.crop_id))[:n]
        per_class[c] = [item(v) for v in chosen]
    uncertain = sorted((v for v in data.crops if v.predicted and not v.confirmed),
                       key=lambda v: (v.confidence, v.crop_id))[: settings.report.gallery_uncertain]
    return {"per_class": per_class, "uncertain": [item(v) for v in uncertain]}


def _region(views: list[CropView], width: int, height: int) -> tuple[int, int, int, int]:
    """The part of the spread holding its crops, with a margin (the whole spread without
    crops)."""
    if not views:
        return 0, 0, width, height
    margin = OVERLAY_MARGIN
    x0 = max(0, min(v.bbox[0] for v in views) - margin)
    y0 = max(0, min(v.bbox[1] for v in views) - margin)
    x1 = min(width, max(v.bbox[0] + v.bbox[2] for v in views) + margin)
    y1 = min(height, max(v.bbox[1] + v.bbox[3] for v in views) + margin)
    return x0, y0, x1, y1


def _thumbnail(picture: np.ndarray, views: list[CropView],
               region: tuple[int, int, int, int]) -> np.ndarray:
    """The region scaled to fit OVERLAY_WIDTH x OVERLAY_HEIGHT, each crop's box drawn."""
    import cv2

    x0, y0, x1, y1 = region
    cut = picture[y0:y1, x0:x1]
    scale = min(OVERLAY_WIDTH / cut.shape[1], OVERLAY_HEIGHT / cut.shape[0])
    thumb = cv2.resize(cut, (max(1, round(cut.shape[1] * scale)),
                             max(1, round(cut.shape[0] * scale))),
                       interpolation=cv2.INTER_AREA)
    for v in views:
        x, y, w, h = v.bbox
        p1 = (int((x - x0) * scale), int((y - y0) * scale))
        p2 = (int((x + w - x0) * scale), int((y + h - y0) * scale))
        colour = BOX_COLOURS_BGR.get(v.counted_as, BOX_COLOURS_BGR[None])
        cv2.rectangle(thumb, p1, p2, colour, 2)
    for v in views:  # numbers after every box, so no box hides one
        x, y, _, _ = v.bbox
        _number(thumb, str(v.crop_id), (int((x - x0) * scale), int((y - y0) * scale)))
    return thumb


def _number(thumb: np.ndarray, text: str, corner: tuple[int, int]) -> None:
    """The crop's number (its #N in the galleries) just above its box's top-left corner,
    dark on a white halo so it reads on the spread and on the background alike."""
    import cv2

    font, size = cv2.FONT_HERSHEY_SIMPLEX, LABEL_SCALE
    (_, height), _ = cv2.getTextSize(text, font, size, 1)
    x = max(0, corner[0])
    y = corner[1] - 3 if corner[1] - 3 >= height else corner[1] + height + 3
    cv2.putText(thumb, text, (x, y), font, size, (255, 255, 255), 3, cv2.LINE_AA)
    cv2.putText(thumb, text, (x, y), font, size, (20, 20, 20), 1, cv2.LINE_AA)


def _overlay(im: SampleImage, views: list[CropView], assets: Path) -> dict[str, Any]:
    import cv2

    name = Path(str(im.path)).name
    picture = cv2.imread(str(im.path), cv2.IMREAD_COLOR)
    if picture is None:
        return {"name": name, "src": None, "crops": im.crops,
                "note": "the spread's file is no longer readable"}
    height, width = picture.shape[:2]
    region = _region(views, width, height)
    thumb = _thumbnail(picture, views, region)
    # JPEG: weasyprint embeds it as is, where a PNG is decoded and compressed again.
    target = assets / f"spread-{im.id}.jpg"
    cv2.imwrite(str(target), thumb, [cv2.IMWRITE_JPEG_QUALITY, 88])
    shown = "" if region == (0, 0, width, height) else " (the chromosomes' region)"
    return {"name": name + shown, "src": f"assets/{target.name}", "crops": im.crops,
            "note": None}


def overlays(data: SampleData, settings: Settings, assets: Path) -> list[dict[str, Any]]:
    """Thumbnails of the spreads, cut to the region holding chromosomes (so they are big
    enough to see), with each crop's box in its class colour."""
    by_image: dict[int, list[CropView]] = {}
    for v in data.crops:
        by_image.setdefault(v.image_id, []).append(v)
    done = [im for im in data.images if im.status == "done"]
    return [_overlay(im, by_image.get(im.id, []), assets)
            for im in done[: settings.report.max_overlays]]
