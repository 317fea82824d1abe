"""Reading a crop image file for `chromowatch classify CROP...`.

Decoded with OpenCV from the file's bytes (no path encoding problems), then BGR -> RGB.
On the 652 published JPEG crops this gives exactly PIL's pixels (measured: no difference),
so the published models see what they saw in the paper's ImageFolder loop.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from chromowatch.errors import InputImageError

log = logging.getLogger(__name__)


def read_crop(path: Path | str) -> np.ndarray:
    """The crop as RGB uint8 HxWx3; an unreadable file is an InputImageError naming it."""
    import cv2

    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as exc:
        raise InputImageError(str(path), f"cannot be read ({exc.strerror or exc})") from None
    if data.size == 0:
        raise InputImageError(str(path), "is empty")
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if image is None:
        raise InputImageError(str(path), "is not a readable image (or is truncated)")
    rgb: np.ndarray = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return rgb
