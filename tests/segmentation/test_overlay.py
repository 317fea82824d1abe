"""The overlay draws boxes in the reports' class palette (chromowatch.records)."""

from __future__ import annotations

import numpy as np

from chromowatch.records import (
    CLASS_COLOURS,
    FLAGGED_COLOUR,
    UNLABELLED_COLOUR,
    BBox,
    Crop,
    Segmentation,
    hex_to_rgb,
)
from chromowatch.segmentation.overlay import box_colour, draw_overlay


def _crop(index: int, x: int, flags: frozenset[str] = frozenset()) -> Crop:
    return Crop(index=index, bbox=BBox(x, 40, 30, 30), rgb=np.zeros((30, 30, 3), np.uint8),
                metaphase=0, flags=flags)


def test_boxes_take_the_report_colours() -> None:
    """A class's box is the colour its bars have in the report; unlabelled and flagged crops
    the palette's own colours."""
    rgb = np.full((100, 200, 3), 255, np.uint8)
    crops = (_crop(0, 10), _crop(1, 60), _crop(2, 110, frozenset({"touching"})))
    seg = Segmentation(crops=crops, metaphases=1)
    plain = draw_overlay(rgb, seg)
    assert tuple(plain[55, 10]) == hex_to_rgb(UNLABELLED_COLOUR)
    assert tuple(plain[55, 110]) == hex_to_rgb(FLAGGED_COLOUR)
    labelled = draw_overlay(rgb, seg, {0: "A", 1: "B"})
    assert tuple(labelled[55, 10]) == hex_to_rgb(CLASS_COLOURS["A"])
    assert tuple(labelled[55, 60]) == hex_to_rgb(CLASS_COLOURS["B"])
    assert (rgb == 255).all()  # the input is not drawn on


def test_a_class_wins_over_the_flag() -> None:
    flagged = _crop(0, 10, frozenset({"touching"}))
    assert box_colour(flagged, "C") == hex_to_rgb(CLASS_COLOURS["C"])
    assert box_colour(flagged, None) == hex_to_rgb(FLAGGED_COLOUR)
