"""A spread with its crops' boxes drawn on it (`chromowatch segment --overlay`), in the class
palette the reports use (`chromowatch.records.CLASS_COLOURS`), so a class looks the same in
the picture and in the charts."""

from __future__ import annotations

from collections.abc import Mapping

import cv2
import numpy as np

from chromowatch.records import (
    CLASS_COLOURS,
    FLAGGED_COLOUR,
    UNLABELLED_COLOUR,
    Crop,
    Segmentation,
    hex_to_rgb,
)


def draw_overlay(
    rgb: np.ndarray, seg: Segmentation, labels: Mapping[int, str] | None = None
) -> np.ndarray:
    """The spread with each crop's box and metaphase number; class colours when labels given.

    Flagged crops (touching, overlapping) take the flagged colour (magenta) so a reviewer
    finds them at a glance. The input picture is not drawn on.
    """
    out = np.ascontiguousarray(rgb.copy())
    if out.ndim == 2:
        out = np.repeat(out[:, :, None], 3, axis=2)
    thickness = max(1, round(max(out.shape[:2]) / 1000))
    font_scale = 0.35 * thickness
    for crop in seg.crops:
        label = labels.get(crop.index) if labels else None
        colour = box_colour(crop, label)
        b = crop.bbox
        cv2.rectangle(out, (b.x, b.y), (b.x + b.w - 1, b.y + b.h - 1), colour, thickness)
        cv2.putText(
            out,
            _caption(crop, label),
            (b.x, max(8, b.y - 2)),
            cv2.FONT_HERSHEY_SIMPLEX,
            font_scale,
            colour,
            1,
            cv2.LINE_AA,
        )
    return out


def box_colour(crop: Crop, label: str | None) -> tuple[int, int, int]:
    """A crop's box colour (RGB): its class's, else flagged or unlabelled."""
    if label is not None and label in CLASS_COLOURS:
        return hex_to_rgb(CLASS_COLOURS[label])
    return hex_to_rgb(FLAGGED_COLOUR if crop.flags else UNLABELLED_COLOUR)


def _caption(crop: Crop, label: str | None) -> str:
    """The text by a box: class (when known), metaphase number, and '?' when flagged."""
    text = f"m{crop.metaphase + 1}" if crop.metaphase >= 0 else "m-"
    if label:
        text = f"{label} {text}"
    if crop.flags:
        text += " ?"
    return text
