"""Segmentation benchmark: recall per class and precision at IoU >= 0.5, and spreads per second.

Measures chromowatch.segmentation.segment.segment against a plain Otsu + findContours cropper
(the baseline) in the same run, on folders laid out like ../shared/data/ddx11: images/*.png and
labels/*.txt
(YOLO `class cx cy w h`, normalised; 0=A 1=B 2=C; one box per chromosome, a class C box around
both separated chromatids). A folder whose subfolders have that layout (what
chromowatch.demo.synth.write_dataset writes) is read too. `--synth N` writes N synthetic spreads
with chromowatch.demo.synth into a temporary folder and measures them as well.

`--perturb [NAME ...]` measures instead how well the segmenter generalises: every spread and its
truth boxes are changed the same way (rotated, mirrored, rescaled, re-exposed, tinted, unevenly
lit, noisy, blurred, JPEG-compressed) before both segmenters run, because unseen spreads come from
other cameras, exposures and lamps than the labelled ones. The changes come in two groups (GROUPS):
`mild`, a camera or lamp a little different from the labelled one's (`none` included, to read
the other rows against), is what segment defaults are chosen on; `harsh` shows where the segmenter
breaks. Each group's rows end with a pooled TOTAL row (misses and false positives summed, recall
and precision pooled). Without names it runs mild then harsh; a group's name or single
perturbations (mixable) select; rows keep the fixed order of PERTURBATIONS.

    .venv/bin/python benchmarks/segmentation.py                 # ../shared/data/ddx11
    .venv/bin/python benchmarks/segmentation.py DIR [DIR ...] --synth 20
    .venv/bin/python benchmarks/segmentation.py [DIR ...] --perturb             # mild, harsh
    .venv/bin/python benchmarks/segmentation.py [DIR ...] --perturb mild        # to pick defaults
    .venv/bin/python benchmarks/segmentation.py [DIR ...] --perturb harsh
    .venv/bin/python benchmarks/segmentation.py [DIR ...] --perturb flip noise2 # single ones

Timing uses one OpenCV thread and no torch, as the target (< 100 ms per 1440x1024 spread on one
core) is stated.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from multiprocessing import Pool
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from chromowatch.demo import synth  # noqa: E402
from chromowatch.ingest import jpeg_chroma_subsampled  # noqa: E402
from chromowatch.ingest import read_spread as ingest_spread  # noqa: E402
from chromowatch.records import CLASS_NAMES, BBox  # noqa: E402
from chromowatch.segmentation.segment import segment  # noqa: E402
from chromowatch.settings import IngestSettings, SegmentSettings  # noqa: E402

IOU_MIN = 0.5
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


@dataclass(frozen=True)
class Truth:
    cls: int
    box: BBox
    touching: bool = False  # drawn pressed against another (synthetic truth.json says so)


@dataclass(frozen=True)
class Sample:
    """One labelled spread as the segmenter gets it; `subsampled`: a JPEG whose colour is at
    lower resolution (what ingest reports as Spread.chroma_subsampled)."""

    rgb: np.ndarray
    truth: list[Truth]
    subsampled: bool = False


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
    # Of those, the chromosomes drawn touching another (synthetic truth only; else zeros).
    touching_truth: list[int] = field(default_factory=lambda: [0, 0, 0])
    touching_found: list[int] = field(default_factory=lambda: [0, 0, 0])

    def recall(self, cls: int) -> float:
        return self.found[cls] / self.truth[cls] if self.truth[cls] else float("nan")

    def missed(self, cls: int) -> int:
        return self.truth[cls] - self.found[cls]

    def touching_recall(self, cls: int) -> float:
        """Recall among chromosomes drawn touching another; `recall` counts them too."""
        t = self.touching_truth[cls]
        return self.touching_found[cls] / t if t else float("nan")

    def free_recall(self, cls: int) -> float:
        """Recall among the chromosomes that touch nothing."""
        t = self.truth[cls] - self.touching_truth[cls]
        return (self.found[cls] - self.touching_found[cls]) / t if t else float("nan")

    @property
    def false_positives(self) -> int:
        return self.crops - self.matched_crops

    @property
    def precision(self) -> float:
        return self.matched_crops / self.crops if self.crops else float("nan")

    @property
    def ms_per_spread(self) -> float:
        return 1000.0 * float(np.median(self.seconds)) if self.seconds else float("nan")

    def as_dict(self, timing: bool = True) -> dict[str, object]:
        """Counts and rates; timing=False leaves out speed (perturb mode times one unwarmed run)."""
        out: dict[str, object] = {
            "recall": {CLASS_NAMES[c]: round(self.recall(c), 4) for c in range(3)},
            "labelled": dict(zip(CLASS_NAMES, self.truth, strict=True)),
            "missed": {CLASS_NAMES[c]: self.missed(c) for c in range(3)},
            "precision": round(self.precision, 4),
            "crops": self.crops,
            "false_positives": self.false_positives,
            "flagged": self.flagged,
        }
        if any(self.touching_truth):
            out["touching"] = {
                "labelled": dict(zip(CLASS_NAMES, self.touching_truth, strict=True)),
                "recall": {CLASS_NAMES[c]: round(self.touching_recall(c), 4) for c in range(3)},
                "recall_free": {CLASS_NAMES[c]: round(self.free_recall(c), 4) for c in range(3)},
            }
        if timing:
            out["ms_per_spread_median"] = round(self.ms_per_spread, 1)
            out["spreads_per_s"] = round(1000.0 / self.ms_per_spread, 2)
        return out


def pooled(name: str, tallies: Sequence[Tally]) -> Tally:
    """Counts summed over runs (perturbations): recall and precision pooled, not averaged."""
    total = Tally(name)
    for t in tallies:
        for c in range(3):
            total.truth[c] += t.truth[c]
            total.found[c] += t.found[c]
        total.crops += t.crops
        total.matched_crops += t.matched_crops
        total.flagged += t.flagged
        for c in range(3):
            total.touching_truth[c] += t.touching_truth[c]
            total.touching_found[c] += t.touching_found[c]
    return total


def read_spread(path: Path) -> Sample:
    """Decode a labelled spread as ingest does (same 16-bit scaling, same JPEG mark)."""
    spread = ingest_spread(path, IngestSettings())
    return Sample(spread.rgb, [], spread.chroma_subsampled)


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


def mark_touching(truth: list[Truth], label_path: Path) -> list[Truth]:
    """The truth with `touching` set from a synthetic sample's truth.json (objects in the
    label file's order), when there is one; ddx11 and other folders have none."""
    meta = label_path.parent.parent / "truth.json"
    if not meta.exists():
        return truth
    objects = _truth_objects(meta).get(f"images/{label_path.stem}")
    if objects is None:
        return truth
    if len(objects) != len(truth):
        raise SystemExit(f"{meta}: {len(objects)} objects for {len(truth)} labels")
    pairs = zip(truth, objects, strict=True)
    return [replace(t, touching=bool(o["touching"])) for t, o in pairs]


@functools.cache
def _truth_objects(meta: Path) -> dict[str, list[dict[str, object]]]:
    """A truth.json's objects by image path without suffix (read once per sample)."""
    records = json.loads(meta.read_text())["spreads"]
    return {Path(r["image"]).with_suffix("").as_posix(): r["objects"] for r in records}


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


# A change of the spread and, consistently, of its truth boxes (what another microscope does).
Perturbation = Callable[[Sample], Sample]
Segmenter = Callable[[np.ndarray, bool], tuple[list[BBox], int]]


def evaluate(
    root: Path,
    segmenters: dict[str, Segmenter],
    repeat: int,
    perturb: Perturbation | None = None,
) -> dict[str, Tally]:
    tallies = {name: Tally(name) for name in segmenters}
    for img_path, label_path in iter_spreads(root):
        sample = read_spread(img_path)
        width, height = sample.rgb.shape[1], sample.rgb.shape[0]
        truth = mark_touching(read_labels(label_path, width, height), label_path)
        sample = replace(sample, truth=truth)
        if perturb is not None:
            sample = perturb(sample)
        rgb, truth = sample.rgb, sample.truth
        for name, fn in segmenters.items():
            tally = tallies[name]
            times = []
            for _ in range(repeat):
                t0 = time.perf_counter()
                boxes, flagged = fn(rgb, sample.subsampled)
                times.append(time.perf_counter() - t0)
            tally.seconds.append(min(times))
            pairs = match(boxes, truth)
            tally.crops += len(boxes)
            tally.flagged += flagged
            tally.matched_crops += len(pairs)
            for t in truth:
                tally.truth[t.cls] += 1
                tally.touching_truth[t.cls] += t.touching
            for _, j in pairs:
                tally.found[truth[j].cls] += 1
                tally.touching_found[truth[j].cls] += truth[j].touching
    return tallies


def _to_u8(values: np.ndarray) -> np.ndarray:
    """Clip back to 8 bits, as a camera's output saturates, and truncate.

    Truncating (not rounding) keeps these numbers comparable with those already quoted from the
    prototype; rounding instead moves single rows by up to 0.02 on ddx11.
    """
    return np.clip(values, 0, 255).astype(np.uint8)


def _photometric(change: Callable[[np.ndarray], np.ndarray]) -> Perturbation:
    """A change of pixel values only: the boxes stay where they are."""

    def apply(sample: Sample) -> Sample:
        return replace(sample, rgb=np.ascontiguousarray(change(sample.rgb)))

    return apply


def _rot90(sample: Sample) -> Sample:
    """A quarter turn anticlockwise (np.rot90): pixel (x, y) goes to (y, width - 1 - x)."""
    width = sample.rgb.shape[1]
    turned = [
        replace(t, box=BBox(t.box.y, width - t.box.x - t.box.w, t.box.h, t.box.w))
        for t in sample.truth
    ]
    return replace(sample, rgb=np.ascontiguousarray(np.rot90(sample.rgb)), truth=turned)


def _flip(sample: Sample) -> Sample:
    """A horizontal mirror: pixel (x, y) goes to (width - 1 - x, y)."""
    width = sample.rgb.shape[1]
    mirrored = [
        replace(t, box=BBox(width - t.box.x - t.box.w, t.box.y, t.box.w, t.box.h))
        for t in sample.truth
    ]
    return replace(sample, rgb=np.ascontiguousarray(sample.rgb[:, ::-1]), truth=mirrored)


def _scale(factor: float) -> Perturbation:
    """Another magnification or pixel pitch: INTER_AREA shrinking, INTER_CUBIC enlarging."""

    def apply(sample: Sample) -> Sample:
        rgb = sample.rgb
        height, width = rgb.shape[:2]
        size = (round(width * factor), round(height * factor))
        interpolation = cv2.INTER_AREA if factor < 1 else cv2.INTER_CUBIC
        out = cv2.resize(rgb, size, interpolation=interpolation)
        scaled = []
        for t in sample.truth:
            # Scale the edges, not the size, so neighbouring boxes keep their shared edges.
            x0, y0 = round(t.box.x * factor), round(t.box.y * factor)
            x1 = round((t.box.x + t.box.w) * factor)
            y1 = round((t.box.y + t.box.h) * factor)
            scaled.append(replace(t, box=BBox(x0, y0, max(1, x1 - x0), max(1, y1 - y0))))
        return replace(sample, rgb=out, truth=scaled)

    return apply


def _gamma(g: float) -> Perturbation:
    """Another tone curve: 255 * (v / 255) ** g."""
    lut = _to_u8(255.0 * (np.arange(256) / 255.0) ** g)
    return _photometric(lambda rgb: lut[rgb])


def _gains(*gains: float) -> Perturbation:
    """Another exposure (one gain) or white balance (one gain per RGB channel), clipped.

    In float32, as the prototype: in float64 100 * 1.15 is 114.99999999999999 and truncates to
    114 (values 100, 180, 200, 220 under gain 1.15; ddx11 B misses 3 -> 5). 0.8, 0.85, 1.2 and
    the warm gains give the same bytes either way for every 8-bit value.
    """
    factors = np.array(gains, dtype=np.float32)
    return _photometric(lambda rgb: _to_u8(rgb.astype(np.float32) * factors))


def _vignette(rgb: np.ndarray) -> np.ndarray:
    """Uneven illumination: brightness ramps from 0.75 at the left edge to 1.1 at the right."""
    ramp = np.linspace(0.75, 1.1, rgb.shape[1])[None, :, None]
    return _to_u8(rgb * ramp)


def _vignette_mild(rgb: np.ndarray) -> np.ndarray:
    """Slightly uneven illumination: from 0.88 at the top row to 1.05 at the bottom row."""
    ramp = np.linspace(0.88, 1.05, rgb.shape[0])[:, None, None]
    return _to_u8(rgb * ramp)


def _noise(sigma: float) -> Perturbation:
    """Sensor noise, Gaussian; seed 0 for every spread so runs and workers agree."""

    def change(rgb: np.ndarray) -> np.ndarray:
        rng = np.random.default_rng(0)
        return _to_u8(rgb + rng.normal(0.0, sigma, rgb.shape))

    return _photometric(change)


def _blur(sigma: float) -> Perturbation:
    """Softer optics or focus."""
    return _photometric(lambda rgb: cv2.GaussianBlur(rgb, (0, 0), sigma))


def _jpeg(quality: int) -> Perturbation:
    """A lossy export: cv2's JPEG (4:2:0 chroma subsampling by default), marked as ingest
    marks such a file, from the encoded frame header."""
    def apply(sample: Sample) -> Sample:
        bgr = cv2.cvtColor(sample.rgb, cv2.COLOR_RGB2BGR)
        ok, encoded = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise RuntimeError("JPEG encoding failed")
        decoded = cv2.imdecode(encoded, cv2.IMREAD_COLOR)
        if decoded is None:
            raise RuntimeError("JPEG decoding failed")
        rgb = np.ascontiguousarray(cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB))
        return replace(sample, rgb=rgb, subsampled=jpeg_chroma_subsampled(encoded.tobytes()))

    return apply


# The fixed order rows print in: the mild group first, then the harsh one.
PERTURBATIONS: dict[str, Perturbation] = {
    "none": _photometric(lambda rgb: rgb),
    "rot90": _rot90,
    "flip": _flip,
    "gain0.85": _gains(0.85),
    "gain1.15": _gains(1.15),
    "gamma0.9": _gamma(0.9),
    "gamma1.1": _gamma(1.1),
    "warm": _gains(1.08, 0.97, 0.85),
    "noise2": _noise(2.0),
    "vignette-mild": _photometric(_vignette_mild),
    "scale0.9": _scale(0.9),
    "scale1.1": _scale(1.1),
    "scale0.75": _scale(0.75),
    "scale1.33": _scale(1.33),
    "gamma0.8": _gamma(0.8),
    "gamma1.25": _gamma(1.25),
    "gain0.8": _gains(0.8),
    "gain1.2": _gains(1.2),
    "vignette": _photometric(_vignette),
    "noise4": _noise(4.0),
    "blur1": _blur(1.0),
    "jpeg75": _jpeg(75),
}

# Unseen spreads come from other cameras, exposures and lamps. `mild`: a camera or lamp a little
# different from the labelled one's, what segment defaults are chosen on (with `none` to read the
# other rows against); `harsh`: where the segmenter breaks.
GROUPS: dict[str, tuple[str, ...]] = {
    "mild": (
        "none",
        "rot90",
        "flip",
        "gain0.85",
        "gain1.15",
        "gamma0.9",
        "gamma1.1",
        "warm",
        "noise2",
        "vignette-mild",
        "scale0.9",
        "scale1.1",
    ),
    "harsh": (
        "scale0.75",
        "scale1.33",
        "gamma0.8",
        "gamma1.25",
        "gain0.8",
        "gain1.2",
        "vignette",
        "noise4",
        "blur1",
        "jpeg75",
    ),
}


def select_perturbations(selected: Sequence[str]) -> list[tuple[str, list[str]]]:
    """(section, perturbations) to run and pool: the named groups (all of them when nothing is
    named) in GROUPS order, then the single names not in one of those, in PERTURBATIONS order."""
    groups = [g for g in GROUPS if not selected or g in selected]
    sections = [(g, list(GROUPS[g])) for g in groups]
    taken = {n for g in groups for n in GROUPS[g]}
    single = [n for n in PERTURBATIONS if n in selected and n not in taken]
    if single:
        sections.append(("selected", single))
    return sections


def _one_thread() -> None:
    """Pool initializer: each worker keeps to one OpenCV thread, as the main process does."""
    cv2.setNumThreads(1)


def _evaluate_perturbed(job: tuple[Path, str]) -> dict[str, Tally]:
    """One (dataset, perturbation) in a worker; segmenters are closures, so built here."""
    root, name = job
    return evaluate(root, make_segmenters(), 1, PERTURBATIONS[name])


def evaluate_perturbed(
    datasets: Sequence[tuple[str, Path]], names: Sequence[str]
) -> dict[str, dict[str, dict[str, Tally]]]:
    """dataset -> perturbation -> segmenter -> Tally, one process per core."""
    labelled = [(label, root, name) for label, root in datasets for name in names]
    with Pool(min(os.cpu_count() or 1, len(labelled)), initializer=_one_thread) as pool:
        tallies = pool.map(_evaluate_perturbed, [(root, name) for _, root, name in labelled])
    results: dict[str, dict[str, dict[str, Tally]]] = {label: {} for label, _ in datasets}
    for (label, _, name), tally in zip(labelled, tallies, strict=True):
        results[label][name] = tally
    return results


def make_segmenters() -> dict[str, Segmenter]:
    settings = SegmentSettings()

    def ours(rgb: np.ndarray, subsampled: bool) -> tuple[list[BBox], int]:
        seg = segment(rgb, settings, chroma_subsampled=subsampled)
        return [c.bbox for c in seg.crops], sum(1 for c in seg.crops if c.flags)

    def baseline(rgb: np.ndarray, subsampled: bool) -> tuple[list[BBox], int]:
        return otsu_baseline(rgb), 0

    return {"chromowatch": ours, "otsu-baseline": baseline}


def synth_dataset(out: Path, spreads: int, seed: int) -> Path:
    """Write synthetic spreads (three samples of `spreads` each) with chromowatch.demo.synth."""
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
    if any(ours.touching_truth):
        lines.append("")
        lines.append(
            "chromosomes drawn touching another (truth.json), chromowatch recall: "
            + ", ".join(f"{CLASS_NAMES[c]} {ours.touching_recall(c):.3f} of "
                        f"{ours.touching_truth[c]}" for c in range(3))
            + "; the rest: "
            + ", ".join(f"{CLASS_NAMES[c]} {ours.free_recall(c):.3f}" for c in range(3))
        )
    return "\n".join(lines)


def perturb_report(
    name: str, runs: dict[str, dict[str, Tally]], sections: Sequence[tuple[str, list[str]]]
) -> str:
    """Per segmenter one table per section, one row per perturbation (to read against `none`),
    then the section's pooled TOTAL row."""
    lines = [f"### {name}, perturbed"]
    for segmenter in next(iter(runs.values())):
        for section, names in sections:
            lines += [
                "",
                f"{segmenter}, {section}:",
                "",
                "| perturbation | recall A | recall B | recall C | precision "
                "| missed A | missed B | missed C | false positives |",
                "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
            ]
            rows = [runs[n][segmenter] for n in names]
            for perturbation, t in [*zip(names, rows, strict=True), ("TOTAL", pooled("", rows))]:
                lines.append(
                    f"| {perturbation} | {t.recall(0):.3f} | {t.recall(1):.3f} "
                    f"| {t.recall(2):.3f} | {t.precision:.3f} | {t.missed(0)} | {t.missed(1)} "
                    f"| {t.missed(2)} | {t.false_positives} |"
                )
    first = next(iter(next(iter(runs.values())).values()))
    lines += [
        "",
        f"labelled per perturbation: A {first.truth[0]}, B {first.truth[1]}, C {first.truth[2]}",
    ]
    return "\n".join(lines)


def _parser(default: Path) -> argparse.ArgumentParser:
    """The command line: dataset folders, synthetic spreads, timing or perturbations, JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("datasets", nargs="*", type=Path, help=f"folders (default {default})")
    parser.add_argument(
        "--synth", type=int, default=0, help="also 3 synthetic samples of N spreads each"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=3, help="timing: best of N runs per spread")
    parser.add_argument("--json", action="store_true", help="print JSON instead of markdown")
    parser.add_argument(
        "--perturb",
        nargs="*",
        choices=[*GROUPS, *PERTURBATIONS],
        metavar="NAME",
        help="measure on changed spreads instead of timing: groups "
        + "; ".join(f"{g} ({', '.join(names)})" for g, names in GROUPS.items())
        + ", both when no name is given, or single perturbations; dataset folders go before it",
    )
    return parser


def perturbed_json(
    perturbed: dict[str, dict[str, dict[str, Tally]]], sections: Sequence[tuple[str, list[str]]]
) -> dict[str, dict[str, dict[str, object]]]:
    """dataset -> segmenter -> perturbation, as the tables are laid out; "TOTAL <section>"
    holds the section's pooled counts and the perturbations pooled."""
    out: dict[str, dict[str, dict[str, object]]] = {}
    for n, r in perturbed.items():
        out[n] = {}
        for segmenter in next(iter(r.values())):
            rows: dict[str, object] = {
                p: t[segmenter].as_dict(timing=False) for p, t in r.items()
            }
            for section, names in sections:
                total = pooled("", [r[p][segmenter] for p in names])
                rows[f"TOTAL {section}"] = {
                    **total.as_dict(timing=False),
                    "perturbations": names,
                }
            out[n][segmenter] = rows
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Measure, then print JSON or the markdown tables (with the machine's line)."""
    default = (
        Path(os.environ.get("CHROMOWATCH_REAL_DATA", REPO.parent / "shared" / "data")) / "ddx11"
    )
    args = _parser(default).parse_args(argv)
    sections = None if args.perturb is None else select_perturbations(args.perturb)
    perturbations = (
        None
        if sections is None
        else [n for n in PERTURBATIONS if any(n in names for _, names in sections)]
    )

    cv2.setNumThreads(1)
    datasets: list[tuple[str, Path]] = [(str(p), p) for p in (args.datasets or [default])]
    with tempfile.TemporaryDirectory() as tmp:
        if args.synth:
            synth_root = synth_dataset(Path(tmp) / "synth", args.synth, args.seed)
            datasets.append((f"synthetic (3 x {args.synth} spreads, seed {args.seed})", synth_root))
        if perturbations is not None:
            perturbed = evaluate_perturbed(datasets, perturbations)
        else:
            results = {
                name: evaluate(root, make_segmenters(), args.repeat) for name, root in datasets
            }
    if args.json:
        if perturbations is not None and sections is not None:
            out = perturbed_json(perturbed, sections)
        else:
            out = {n: {k: t.as_dict() for k, t in r.items()} for n, r in results.items()}
        print(json.dumps(out, indent=2))
        return 0
    # The OpenCV version matters in perturb mode too: resize and JPEG change with it.
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"python {platform.python_version()}, opencv {cv2.__version__}, 1 OpenCV thread; "
        f"date {time.strftime('%Y-%m-%d')}"
    )
    if sections is not None:
        for name, runs in perturbed.items():
            print()
            print(perturb_report(name, runs, sections))
        return 0
    for name, tallies in results.items():
        print()
        print(report(name, tallies))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
