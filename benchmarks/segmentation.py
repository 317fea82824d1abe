"""Segmentation benchmark: recall per class and precision at IoU >= 0.5, and spreads per second.

Measures chromowatch.segment.segment against a plain Otsu + findContours cropper (the baseline)
in the same run, on folders laid out like ../shared/data/ddx11: images/*.png and labels/*.txt
(YOLO `class cx cy w h`, normalised; 0=A 1=B 2=C; one box per chromosome, a class C box around
both separated chromatids). A folder whose subfolders have that layout (what
chromowatch.synth.write_dataset writes) is read too. `--synth N` writes N synthetic spreads with
chromowatch.synth into a temporary folder and measures them as well.

    .venv/bin/python benchmarks/segmentation.py                 # ../shared/data/ddx11
    .venv/bin/python benchmarks/segmentation.py DIR [DIR ...] --synth 20

Timing uses one OpenCV thread and no torch, as the target (< 100 ms per 1440x1024 spread on one
core) is stated.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from chromowatch.records import CLASS_NAMES, BBox  # noqa: E402
from chromowatch.settings import SegmentSettings  # noqa: E402

IOU_MIN = 0.5
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


@dataclass(frozen=True)
class Truth:
    cls: int
    box: BBox


@dataclass
class Tally:
    """Counts over a dataset for one segmenter."""

    name: str
    truth: list[int] = field(default_factory=lambda: [0, 0, 0])
    found: list[int] = field(default_factory=lambda: [0, 0, 0])
    crops: int = 0
    matched_crops: int = 0
    flagged: int = 0
    seconds: list[float] = field(default_factory=list)

    def recall(self, cls: int) -> float:
        return self.found[cls] / self.truth[cls] if self.truth[cls] else float("nan")

    @property
    def precision(self) -> float:
        return self.matched_crops / self.crops if self.crops else float("nan")

    @property
    def ms_per_spread(self) -> float:
        return 1000.0 * float(np.median(self.seconds)) if self.seconds else float("nan")

    def as_dict(self) -> dict[str, object]:
        return {
            "recall": {CLASS_NAMES[c]: round(self.recall(c), 4) for c in range(3)},
            "labelled": dict(zip(CLASS_NAMES, self.truth, strict=True)),
            "precision": round(self.precision, 4),
            "crops": self.crops,
            "flagged": self.flagged,
            "ms_per_spread_median": round(self.ms_per_spread, 1),
            "spreads_per_s": round(1000.0 / self.ms_per_spread, 2),
        }


def read_rgb(path: Path) -> np.ndarray:
    """Decode an image to 8-bit RGB the way ingest does (16-bit scaled, grey replicated)."""
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise SystemExit(f"cannot read {path}")
    if img.dtype == np.uint16:
        img = (img / 257.0).round().astype(np.uint8)
    if img.ndim == 2:
        return np.ascontiguousarray(np.repeat(img[:, :, None], 3, axis=2))
    if img.shape[2] == 4:
        img = img[:, :, :3]
    return np.ascontiguousarray(img[:, :, ::-1])


def read_labels(path: Path, width: int, height: int) -> list[Truth]:
    """YOLO lines `class cx cy w h` (normalised) to boxes in pixels."""
    out: list[Truth] = []
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) != 5:
            continue
        cls = int(parts[0])
        cx, cy, w, h = (float(v) for v in parts[1:])
        x0 = round((cx - w / 2) * width)
        y0 = round((cy - h / 2) * height)
        x1 = round((cx + w / 2) * width)
        y1 = round((cy + h / 2) * height)
        out.append(Truth(cls, BBox(x0, y0, max(1, x1 - x0), max(1, y1 - y0))))
    return out


def match(pred: Sequence[BBox], truth: Sequence[Truth]) -> list[tuple[int, int]]:
    """Greedy one-to-one matching by IoU, best pairs first, IoU >= 0.5 only."""
    pairs = []
    for i, p in enumerate(pred):
        for j, t in enumerate(truth):
            iou = p.iou(t.box)
            if iou >= IOU_MIN:
                pairs.append((iou, i, j))
    pairs.sort(reverse=True)
    used_p: set[int] = set()
    used_t: set[int] = set()
    out = []
    for _, i, j in pairs:
        if i in used_p or j in used_t:
            continue
        used_p.add(i)
        used_t.add(j)
        out.append((i, j))
    return out


def otsu_baseline(rgb: np.ndarray, min_area: int = 20) -> list[BBox]:
    """The plain cropper: grey, Otsu, external contours, bounding rectangles."""
    import cv2

    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    _, binary = cv2.threshold(grey, 0, 255, cv2.THRESH_BINARY_INV + cv2.THRESH_OTSU)
    contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return [
        BBox(*(int(v) for v in cv2.boundingRect(c)))
        for c in contours
        if cv2.contourArea(c) >= min_area
    ]


def iter_spreads(root: Path) -> Iterator[tuple[Path, Path]]:
    """(image, label file) pairs of root/images or of every root/*/images."""
    folders = (
        [root] if (root / "images").is_dir() else sorted(p for p in root.iterdir() if p.is_dir())
    )
    for folder in folders:
        images = folder / "images"
        if not images.is_dir():
            continue
        for img in sorted(images.iterdir()):
            if img.suffix.lower() in IMAGE_SUFFIXES:
                yield img, folder / "labels" / (img.stem + ".txt")


def evaluate(
    root: Path, segmenters: dict[str, Callable[[np.ndarray], tuple[list[BBox], int]]], repeat: int
) -> dict[str, Tally]:
    tallies = {name: Tally(name) for name in segmenters}
    for img_path, label_path in iter_spreads(root):
        rgb = read_rgb(img_path)
        truth = read_labels(label_path, rgb.shape[1], rgb.shape[0])
        for name, fn in segmenters.items():
            tally = tallies[name]
            times = []
            for _ in range(repeat):
                t0 = time.perf_counter()
                boxes, flagged = fn(rgb)
                times.append(time.perf_counter() - t0)
            tally.seconds.append(min(times))
            pairs = match(boxes, truth)
            tally.crops += len(boxes)
            tally.flagged += flagged
            tally.matched_crops += len(pairs)
            for t in truth:
                tally.truth[t.cls] += 1
            for _, j in pairs:
                tally.found[truth[j].cls] += 1
    return tallies


def make_segmenters() -> dict[str, Callable[[np.ndarray], tuple[list[BBox], int]]]:
    from chromowatch.segment import segment

    settings = SegmentSettings()

    def ours(rgb: np.ndarray) -> tuple[list[BBox], int]:
        seg = segment(rgb, settings)
        return [c.bbox for c in seg.crops], sum(1 for c in seg.crops if c.flags)

    def baseline(rgb: np.ndarray) -> tuple[list[BBox], int]:
        return otsu_baseline(rgb), 0

    return {"chromowatch": ours, "otsu-baseline": baseline}


def synth_dataset(out: Path, spreads: int, seed: int) -> Path | None:
    """Write synthetic spreads (three samples of `spreads` each) when chromowatch.synth exists."""
    try:
        from chromowatch import synth
    except ImportError:
        print("chromowatch.synth not available; synthetic spreads skipped", file=sys.stderr)
        return None
    synth.write_dataset(out, samples=3, spreads=spreads, seed=seed)
    return out


def report(name: str, tallies: dict[str, Tally]) -> str:
    ours, base = tallies["chromowatch"], tallies["otsu-baseline"]
    lines = [
        f"### {name}",
        "",
        "| segmenter | recall A | recall B | recall C | precision | crops (flagged) | ms/spread |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for t in (ours, base):
        lines.append(
            f"| {t.name} | {t.recall(0):.3f} | {t.recall(1):.3f} | {t.recall(2):.3f} "
            f"| {t.precision:.3f} | {t.crops} ({t.flagged}) | {t.ms_per_spread:.1f} |"
        )
    lines.append("")
    lines.append(
        f"labelled: A {ours.truth[0]}, B {ours.truth[1]}, C {ours.truth[2]}; "
        f"speed ratio (baseline ms / ours ms): {base.ms_per_spread / ours.ms_per_spread:.2f}"
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    import cv2

    default = (
        Path(os.environ.get("CHROMOWATCH_REAL_DATA", REPO.parent / "shared" / "data")) / "ddx11"
    )
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("datasets", nargs="*", type=Path, help=f"folders (default {default})")
    parser.add_argument(
        "--synth", type=int, default=0, help="also 3 synthetic samples of N spreads each"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=3, help="timing: best of N runs per spread")
    parser.add_argument("--json", action="store_true", help="print JSON instead of markdown")
    args = parser.parse_args(argv)

    cv2.setNumThreads(1)
    datasets: list[tuple[str, Path]] = [(str(p), p) for p in (args.datasets or [default])]
    with tempfile.TemporaryDirectory() as tmp:
        if args.synth:
            synth_root = synth_dataset(Path(tmp) / "synth", args.synth, args.seed)
            if synth_root is not None:
                datasets.append(
                    (f"synthetic (3 x {args.synth} spreads, seed {args.seed})", synth_root)
                )
        results = {name: evaluate(root, make_segmenters(), args.repeat) for name, root in datasets}
    if args.json:
        print(
            json.dumps(
                {n: {k: t.as_dict() for k, t in r.items()} for n, r in results.items()}, indent=2
            )
        )
        return 0
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"python {platform.python_version()}, opencv {cv2.__version__}, 1 OpenCV thread; "
        f"date {time.strftime('%Y-%m-%d')}"
    )
    for name, tallies in results.items():
        print()
        print(report(name, tallies))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
