"""Step 2 of Matsumoto et al. 2025: make a raw crop look like the crops the models learnt from.

Raw crops have a grey background and low contrast; the published models were trained on crops
with a white background and stretched contrast. The steps, each a function of its own so it
can be checked alone: neighbours outside the crop's mask are painted with the crop's
background (so the statistics and the model see one object), the stain's hue set to the one
of the published crops (optional), pixel mean/std set to 90/16,
`dst = 3.0*src + 30` (saturating), gamma 3.0, and small objects touching the crop's edge
erased to white.

The crop style of the published crops (issue 17): besides their look after the paper's steps,
they have a framing, a mean margin around the chromosome of about 0.16 of its box's longer
side, off-centre as a hand-drawn box leaves it, and they are JPEGs (quality 95). A crop cut
from a spread with a box padded by a few pixels has less margin, and since the mean/std step
sees the whole crop, its chromosome also came out about 25 grey levels lighter. So the crop
is first framed to the published mean margin on its own background (`frame_margin`; every
side moved by the same amount, so where the box put the chromosome is kept), enhanced, framed
again on white (the paper's steps move the edge of what is dark), and passed once through
JPEG (`jpeg_quality`).
"""

from __future__ import annotations

import logging

import numpy as np

from chromowatch.records import BBox, Crop
from chromowatch.settings import EnhanceSettings

log = logging.getLogger(__name__)

#: The name of this enhancement (the paper's step 2, white background). A model records the
#: enhancement its training crops had; the pipeline feeds only models that expect this one.
ENHANCEMENT = "ikemoto2023"
WHITE = 255


def restain(image: np.ndarray, stain: tuple[float, float, float]) -> np.ndarray:
    """Recolour the crop as if stained with another hue: how dark each pixel is (averaged
    over channels, against the crop's glass) is kept, and shared out over R, G, B by `stain`.

    Giemsa's hue differs between labs and cameras; the published models saw one hue, and
    after the paper's steps a bluer stain comes out saturated blue rather than their purple.
    """
    if image.ndim != 3:
        return image.copy()
    values = image.astype(np.float64)
    glass = np.percentile(values.reshape(-1, 3), 90, axis=0)
    darkness = np.clip(glass - values, 0, None).mean(axis=2, keepdims=True)
    weights = np.asarray(stain, dtype=np.float64)
    out = float(glass.mean()) - darkness * (weights / weights.mean())
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def normalise_mean_std(image: np.ndarray, mean: float, std: float) -> np.ndarray:
    """Shift and scale all pixels (channels together, so hue survives) to a given mean/std.

    A flat image (std 0) becomes the target mean everywhere. Rounded and clipped to uint8.
    """
    values = image.astype(np.float64)
    current_std = float(values.std())
    if current_std < 1e-9:
        out = np.full_like(values, mean)
    else:
        out = (values - float(values.mean())) / current_std * std + mean
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def linear(image: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    """`dst = |alpha*src + beta|`, saturated to 0..255 (OpenCV's convertScaleAbs)."""
    import cv2

    return cv2.convertScaleAbs(image, alpha=alpha, beta=beta)


def gamma(image: np.ndarray, value: float) -> np.ndarray:
    """`y = (x/255)^gamma * 255` through a lookup table; gamma > 1 darkens the mid-tones."""
    import cv2

    table = np.clip(np.rint((np.arange(256) / 255.0) ** value * 255.0), 0, 255).astype(np.uint8)
    return cv2.LUT(image, table)


def erase_edge_objects(image: np.ndarray, fraction: float) -> np.ndarray:
    """Fill white every object that touches the crop's edge and covers less than `fraction`
    of the crop's area: bits of neighbours cut by the box, not the chromosome itself.

    Objects are the dark regions of an Otsu threshold of the grey image, as the paper's
    second `findContours` pass finds them.
    """
    import cv2

    out = image.copy()
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
    if int(grey.min()) == int(grey.max()):
        return out
    _, dark = cv2.threshold(grey, 0, 1, cv2.THRESH_BINARY_INV + cv2.THRESH_OTSU)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(dark, connectivity=8)
    h, w = grey.shape
    limit = fraction * h * w
    for i in range(1, n):
        x, y, bw, bh, area = (int(v) for v in stats[i])
        touches = x == 0 or y == 0 or x + bw == w or y + bh == h
        if touches and area < limit:
            out[labels == i] = WHITE
    return out


def paint_outside_mask(image: np.ndarray, mask: np.ndarray, margin: int) -> np.ndarray:
    """Paint pixels farther than `margin` px from the mask with the crop's background level.

    The background level is the median of the pixels outside the widened mask, so a
    neighbour's arm becomes plain glass and the mean/std step sees one object on its glass.
    """
    import cv2

    if mask.shape != image.shape[:2]:
        raise ValueError(f"mask {mask.shape} does not match crop {image.shape[:2]}")
    keep: np.ndarray = mask.astype(np.uint8)
    if margin > 0:
        size = 2 * margin + 1
        keep = cv2.dilate(keep, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size)))
    outside = keep == 0
    if not outside.any() or not keep.any():
        return image.copy()
    out = image.copy()
    out[outside] = np.median(image[outside], axis=0).astype(image.dtype)
    return out


def object_box(grey: np.ndarray, mask: np.ndarray | None) -> tuple[int, int, int, int] | None:
    """x0, y0, x1, y1 of the chromosome: the mask's pixels, or without a mask the dark side of
    an Otsu threshold of the grey crop; None when there is none."""
    import cv2

    if mask is None:
        if int(grey.min()) == int(grey.max()):
            return None
        _, dark = cv2.threshold(grey, 0, 1, cv2.THRESH_BINARY_INV + cv2.THRESH_OTSU)
        mask = dark > 0
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def frame(image: np.ndarray, box: tuple[int, int, int, int], margin: float,
          fill: np.ndarray | int) -> np.ndarray:
    """The crop cut or widened so that its mean margin around `box` is `margin` (a share of
    the box's longer side), every side moved by the same amount: where the cropper placed
    the chromosome (off-centre, for a hand-drawn box) is kept. Pixels beyond the original
    crop are `fill`."""
    x0, y0, x1, y1 = box
    h, w = image.shape[:2]
    sides = np.array([x0, y0, w - x1, h - y1], np.float64)
    shift = margin * max(x1 - x0, y1 - y0) - sides.mean()
    left, top, right, bottom = (int(v) for v in np.maximum(0, np.rint(sides + shift)))
    out = np.empty((y1 - y0 + top + bottom, x1 - x0 + left + right, *image.shape[2:]),
                   image.dtype)
    out[...] = fill
    sx0, sy0 = max(0, x0 - left), max(0, y0 - top)
    sx1, sy1 = min(w, x1 + right), min(h, y1 + bottom)
    dx, dy = sx0 - (x0 - left), sy0 - (y0 - top)
    out[dy:dy + sy1 - sy0, dx:dx + sx1 - sx0] = image[sy0:sy1, sx0:sx1]
    return out


def frame_on_background(rgb: np.ndarray, mask: np.ndarray | None, margin: float) -> np.ndarray:
    """A raw crop framed to a mean `margin` around its chromosome, widened with its own background
    (the median of the pixels outside the chromosome)."""
    import cv2

    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    box = object_box(grey, mask)
    if box is None:
        return rgb
    inside = np.zeros(grey.shape, bool)
    inside[box[1]:box[3], box[0]:box[2]] = True
    outside = rgb[~inside] if (~inside).any() else rgb.reshape(-1, 3)
    return frame(rgb, box, margin, np.median(outside, axis=0).astype(np.uint8))


def frame_on_white(image: np.ndarray, margin: float, dark: int = 225) -> np.ndarray:
    """An enhanced crop framed to a mean `margin` around its pixels darker than `dark`, on
    white."""
    import cv2

    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
    box = object_box(grey, grey < dark)
    return image if box is None else frame(image, box, margin, WHITE)


def jpeg_roundtrip(image: np.ndarray, quality: int) -> np.ndarray:
    """The image as a JPEG of this quality decodes (4:4:4, like the published crops)."""
    import cv2

    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    params = [cv2.IMWRITE_JPEG_QUALITY, quality, cv2.IMWRITE_JPEG_SAMPLING_FACTOR,
              cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]
    ok, data = cv2.imencode(".jpg", bgr, params)
    decoded = cv2.imdecode(data, cv2.IMREAD_COLOR) if ok else None
    if decoded is None:
        raise ValueError("JPEG round trip failed")
    return cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)


def enhance_crop(crop: Crop, settings: EnhanceSettings) -> np.ndarray:
    """The crop as the model sees it before resizing: RGB uint8, white background."""
    rgb = crop.rgb
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[:, :, None], 3, axis=2)
    if rgb.dtype != np.uint8:
        raise ValueError(f"enhance expects a uint8 crop, got {rgb.dtype}")
    if crop.mask is not None:
        rgb = paint_outside_mask(rgb, crop.mask, settings.mask_margin)
    if settings.frame_margin is not None:
        rgb = frame_on_background(rgb, crop.mask, settings.frame_margin)
    if settings.stain is not None:
        rgb = restain(rgb, settings.stain)
    out = normalise_mean_std(rgb, settings.mean, settings.std)
    out = linear(out, settings.alpha, settings.beta)
    out = gamma(out, settings.gamma)
    out = erase_edge_objects(out, settings.edge_object_fraction)
    if settings.frame_margin is not None:
        out = frame_on_white(out, settings.frame_margin)
    if settings.jpeg_quality is not None:
        out = jpeg_roundtrip(out, settings.jpeg_quality)
    return out


def enhance_whole(rgb: np.ndarray, settings: EnhanceSettings) -> np.ndarray:
    """A whole image taken as one crop (a single-chromosome picture, not a spread)."""
    h, w = rgb.shape[:2]
    return enhance_crop(Crop(index=0, bbox=BBox(0, 0, w, h), rgb=rgb), settings)
