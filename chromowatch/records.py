"""Plain data passed between the pipeline stages.

Images are numpy arrays, always RGB (or grey) uint8 unless said otherwise; the OpenCV
BGR order never leaves ingest/store. No torch or cv2 import here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

CLASS_NAMES: tuple[str, str, str] = ("A", "B", "C")

#: The one palette for classes wherever they are drawn (report charts, spread overlays):
#: Okabe-Ito colours, distinguishable with the common colour-vision deficiencies.
CLASS_COLOURS: dict[str, str] = {"A": "#0072B2", "B": "#E69F00", "C": "#D55E00", "B+C": "#CC79A7"}
UNLABELLED_COLOUR = "#8a8a8a"  # a crop without a class (yet)
FLAGGED_COLOUR = "#CC00CC"  # a crop held back for review

#: Ensembles (and so their versions, NAME-HASH) whose name starts so are demonstrations:
#: trained on generated spreads, their numbers are labelled so wherever they are read.
DEMO_PREFIX = "demo-"


def is_demonstration(name_or_version: str) -> bool:
    """True for a demonstration ensemble's name or one of its prediction versions."""
    return name_or_version.startswith(DEMO_PREFIX)


def hex_to_rgb(colour: str) -> tuple[int, int, int]:
    """'#RRGGBB' as an (r, g, b) tuple, for drawing with OpenCV (reverse it for BGR)."""
    value = colour.lstrip("#")
    return int(value[0:2], 16), int(value[2:4], 16), int(value[4:6], 16)


@dataclass(frozen=True)
class BBox:
    """An axis-aligned box in the spread's pixels: x, y of the top-left corner, width, height."""

    x: int
    y: int
    w: int
    h: int

    def as_list(self) -> list[int]:
        return [self.x, self.y, self.w, self.h]

    @property
    def area(self) -> int:
        return self.w * self.h

    def iou(self, other: BBox) -> float:
        ix = max(0, min(self.x + self.w, other.x + other.w) - max(self.x, other.x))
        iy = max(0, min(self.y + self.h, other.y + other.h) - max(self.y, other.y))
        inter = ix * iy
        union = self.area + other.area - inter
        return inter / union if union else 0.0


@dataclass(frozen=True)
class Spread:
    """A decoded metaphase spread, normalised to 8-bit RGB."""

    path: str
    rgb: np.ndarray  # HxWx3 uint8, RGB
    sha256: str
    size_bytes: int
    source_bit_depth: int
    source_channels: int
    chroma_subsampled: bool = False  # a JPEG with colour at lower resolution (4:2:0, 4:2:2)

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])


@dataclass(frozen=True)
class Crop:
    """One chromosome (or one separated sister pair) cut from a spread.

    `rgb` is the raw crop (the spread's pixels inside `bbox`), `mask` the object's own
    pixels (True) so enhancement can blank out neighbours. `metaphase` is the index of
    the cluster of chromosomes it belongs to (-1: none). `flags` name reasons a person
    should look at it (e.g. "touching", "overlap"); flagged crops stay out of statistics
    until confirmed.
    """

    index: int
    bbox: BBox
    rgb: np.ndarray
    mask: np.ndarray | None = None
    metaphase: int = -1
    flags: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True)
class Segmentation:
    crops: tuple[Crop, ...]
    metaphases: int
    note: str | None = None  # why there are no crops, when there are none


@dataclass(frozen=True)
class Prediction:
    """The ensemble's verdict on one crop, with each member's probabilities kept."""

    label: str
    probs: dict[str, float]
    member_probs: dict[str, list[float]]
    model_version: str

    @property
    def confidence(self) -> float:
        return max(self.probs.values())
