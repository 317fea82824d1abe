"""Make docs/enhance-side-by-side.png: raw crop, enhanced crop, published crop, per class.

Rows A, B, C. The raw crops are cut by chromowatch.segmentation from ../shared/data/ddx11 spreads
(the crop whose box best matches a labelled chromosome of that class), enhanced by
chromowatch.enhance; the third column is an expert-labelled crop of the same class from
../shared/data/ikemoto2023/crops/wt (already enhanced by the paper's authors).

    .venv/bin/python scripts/enhance_side_by_side.py [--out docs/enhance-side-by-side.png]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from chromowatch.enhance import enhance_crop  # noqa: E402
from chromowatch.ingest import read_spread  # noqa: E402
from chromowatch.records import CLASS_NAMES, BBox, Crop  # noqa: E402
from chromowatch.segmentation.segment import segment  # noqa: E402
from chromowatch.settings import EnhanceSettings, IngestSettings, SegmentSettings  # noqa: E402

TILE = 180
PUBLISHED = {"A": "a001.jpg", "B": "b145.jpg", "C": "c021.jpg"}
# (spread, label line) chosen by eye as clear examples of each class in ddx11.
EXAMPLES = {"A": ("3", 12), "B": ("5", 3), "C": ("2", 1)}


def label_box(line: str, width: int, height: int) -> BBox:
    """A YOLO label line (class cx cy w h, normalised) as a box in the spread's pixels."""
    _, cx, cy, w, h = (float(v) for v in line.split())
    x0, y0 = round((cx - w / 2) * width), round((cy - h / 2) * height)
    return BBox(x0, y0, round((cx + w / 2) * width) - x0, round((cy + h / 2) * height) - y0)


def crop_for(data: Path, cls: str) -> Crop:
    """The segmenter's crop best matching the chosen labelled chromosome of class `cls`."""
    stem, wanted = EXAMPLES[cls]
    spread = read_spread(data / "ddx11" / "images" / f"{stem}.png", IngestSettings())
    lines = (data / "ddx11" / "labels" / f"{stem}.txt").read_text().splitlines()
    of_class = [ln for ln in lines if ln.split() and CLASS_NAMES[int(ln.split()[0])] == cls]
    box = label_box(of_class[wanted % len(of_class)], spread.width, spread.height)
    seg = segment(spread.rgb, SegmentSettings())
    return max(seg.crops, key=lambda c: c.bbox.iou(box))


def tile(rgb: np.ndarray, background: int) -> np.ndarray:
    """The picture scaled to fit TILE x TILE (nearest, so pixels stay visible), centred."""
    h, w = rgb.shape[:2]
    scale = min((TILE - 10) / h, (TILE - 10) / w)
    small = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), cv2.INTER_NEAREST)
    out = np.full((TILE, TILE, 3), background, np.uint8)
    y0, x0 = (TILE - small.shape[0]) // 2, (TILE - small.shape[1]) // 2
    out[y0 : y0 + small.shape[0], x0 : x0 + small.shape[1]] = small
    return out


def main() -> int:
    """Write the side-by-side picture: a row per class, raw, enhanced and published crop."""
    data = Path(os.environ.get("CHROMOWATCH_REAL_DATA", REPO.parent / "shared" / "data"))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "enhance-side-by-side.png")
    args = parser.parse_args()

    head = 30
    rows = []
    for cls in CLASS_NAMES:
        crop = crop_for(data, cls)
        enhanced = enhance_crop(crop, EnhanceSettings())
        published_bgr = cv2.imread(
            str(data / "ikemoto2023" / "crops" / "wt" / cls.lower() / PUBLISHED[cls])
        )
        published = cv2.cvtColor(published_bgr, cv2.COLOR_BGR2RGB)
        row = np.hstack([tile(crop.rgb, 128), tile(enhanced, 255), tile(published, 255)])
        label = np.full((TILE, 40, 3), 255, np.uint8)
        cv2.putText(label, cls, (8, TILE // 2 + 10), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (0, 0, 0), 2)
        rows.append(np.hstack([label, row]))
    grid = np.vstack(rows)
    header = np.full((head, grid.shape[1], 3), 255, np.uint8)
    for k, title in enumerate(("raw crop (ddx11)", "enhanced (chromowatch)", "published (wt)")):
        cv2.putText(
            header, title, (40 + k * TILE + 8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1
        )
    picture = np.vstack([header, grid])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.out), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
