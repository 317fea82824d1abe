"""Confirmed labels in and out: crop folders, YOLO-boxed spreads, CSV.

Every way in ends in the store's labels table (crop, class, source, who, when); relabelling
a crop supersedes its label and keeps the old one as history, and a crop already confirmed
as the same class is left alone. Imported crops are stored like the pipeline's own: an
image row (content sha256, so the same file imported twice, under any name, is one crop),
crop rows with boxes, and the enhanced crop as PNG under `<data_dir>/crops/`.
"""

from __future__ import annotations

import csv
import getpass
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

import numpy as np

from chromowatch import ingest
from chromowatch.enhance import enhance_whole
from chromowatch.errors import InputImageError, UsageError
from chromowatch.files import crop_dir, pixels_sha256, write_crop_png
from chromowatch.records import CLASS_NAMES, BBox, Spread
from chromowatch.settings import Settings
from chromowatch.store import ImageCrop, ImageRow, Store

log = logging.getLogger(__name__)

YOLO_CLASSES = {0: "A", 1: "B", 2: "C"}


def default_who() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user name in a container: still a usable record
        return "unknown"


@dataclass
class ImportSummary:
    """What an import did: new crops, first labels of stored crops, labels changed,
    unchanged, skipped files."""

    added: int = 0
    recorded: int = 0
    changed: int = 0
    unchanged: int = 0
    skipped: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CLASS_NAMES, 0))

    def line(self) -> str:
        per_class = ", ".join(f"{c} {n}" for c, n in self.counts.items())
        skipped = f", {len(self.skipped)} file(s) skipped" if self.skipped else ""
        return (f"{self.added} new labelled crops, {self.recorded} labels recorded (first "
                f"labels), {self.changed} labels changed, "
                f"{self.unchanged} unchanged ({per_class}){skipped}")


def _class_of_folder(name: str) -> str | None:
    upper = name.strip().upper()
    return upper if upper in CLASS_NAMES else None


def read_or_skip(path: Path, settings: Settings, skipped: list[str]) -> Spread | None:
    """The image, or None with a warning and the file listed in `skipped` (a bad file never
    stops an import)."""
    try:
        return ingest.read_spread(path, settings.ingest)
    except InputImageError as exc:
        log.warning("skipped %s", exc)
        skipped.append(str(path))
        return None


def _relabel(store: Store, items: list[tuple[int, str]], summary: ImportSummary, *,
             source: str, who: str) -> None:
    first, changed = store.set_labels(items, source=source, who=who) if items else (0, 0)
    summary.recorded += first
    summary.changed += changed
    summary.unchanged += len(items) - first - changed


def hash_stored_crops(store: Store, settings: Settings) -> int:
    """Fill in the content hash of every stored crop that has none yet (crops stored before
    the hash existed, or by `process` and the daemon), from its file: each file is read
    once, ever. A file that cannot be read gets "" and is not matched. Returns how many."""
    missing = store.crops_without_pixel_hash()
    if not missing:
        return 0
    log.info("hashing the content of %d stored crop(s), once", len(missing))
    hashes = []
    for crop_id, file in missing:
        try:
            hashes.append((crop_id, pixels_sha256(ingest.read_spread(file, settings.ingest).rgb)))
        except InputImageError as exc:
            log.warning("stored crop %d cannot be read, so it cannot be matched: %s",
                        crop_id, exc.problem)
            hashes.append((crop_id, ""))
    store.set_pixel_hashes(hashes)
    return len(hashes)


@dataclass(frozen=True)
class _FolderImport:
    """One import-folder run: where the crops go, and who and what it records."""

    store: Store
    settings: Settings
    enhanced: bool
    sample: str
    source: str
    who: str


def stored_matches(store: Store, path: Path, crop: Spread) -> list[int] | None:
    """The stored crops this file is: the same file (by its bytes) imported before, or a
    crop file of the store copied or re-saved (by its pixels). None: a new crop; []: a
    spread stored with several crops (not a crop: the caller skips it)."""
    known = store.find_image(crop.sha256)
    if known is not None:
        crops = store.crops_of_image(known.id)
        if len(crops) == 1:
            return [crops[0].id]
        log.warning("%s: already stored as a spread with %d crops; not imported",
                    path, len(crops))
        return []
    matches = store.crops_with_pixels(pixels_sha256(crop.rgb))
    if matches:
        log.info("%s: the content of stored crop(s) %s: not added again", path,
                 ", ".join(map(str, matches)))
        return matches
    return None


def stored_crop_image(settings: Settings, crop: Spread, *, enhanced: bool) -> np.ndarray:
    """A crop file's image as it is stored and classified: as it is when `enhanced` (the
    published style), else through the pipeline's own enhancement as one whole crop."""
    return crop.rgb if enhanced else enhance_whole(crop.rgb, settings.enhance)


def write_crop_file(settings: Settings, path: Path, crop: Spread, image: np.ndarray,
                    sample: str) -> tuple[ImageRow, BBox, str]:
    """Write an imported crop's stored image under crops/: the image row the crop file
    becomes (its content hash: the same file imported again is recognised), the crop's box
    (the whole image) and the written file."""
    file = write_crop_png(crop_dir(settings.paths.crops, crop.sha256), 0, image)
    h, w = crop.rgb.shape[:2]
    row = ImageRow(path=str(path.resolve()), sample=sample, sha256=crop.sha256,
                   size=crop.size_bytes, width=w, height=h)
    return row, BBox(0, 0, w, h), file


def _add_crop(run: _FolderImport, path: Path, crop: Spread, cls: str) -> None:
    """Store a new crop image with its label (and its content hash, so it matches later)."""
    image = stored_crop_image(run.settings, crop, enhanced=run.enhanced)
    image_row, bbox, file = write_crop_file(run.settings, path, crop, image, run.sample)
    ids = run.store.save_labelled_image(image_row, [(bbox, file, cls)],
                                        source=run.source, who=run.who)
    run.store.set_pixel_hashes([(ids[0], pixels_sha256(image))])


def import_folder(
    store: Store, settings: Settings, folder: Path, *, enhanced: bool, sample: str | None = None,
    who: str | None = None,
) -> ImportSummary:
    """Crops sorted into class folders (a/A, b/B, c/C, any depth below them).

    `enhanced`: the crops already went through the paper's enhancement (white background,
    like the published crops) and are stored as they are; otherwise they are enhanced here
    by the pipeline's own step. The sample defaults to the folder's name. A file that is a
    stored crop (the same file imported before, or a crop file of the store copied into a
    class folder, matched by its pixels) labels that crop instead of adding one.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(f"{folder} is not a folder", hint="give a folder with a/, b/, c/ inside")
    classes = {p: c for p in sorted(folder.iterdir()) if p.is_dir()
               and (c := _class_of_folder(p.name)) is not None}
    if not classes:
        raise UsageError(f"{folder} has no class folders",
                         hint="put the crops of each class in a/ (or A/), b/ and c/")
    run = _FolderImport(store, settings, enhanced, sample or folder.resolve().name,
                        f"import-folder:{folder.resolve()}", who or default_who())
    hash_stored_crops(store, settings)
    summary = ImportSummary()
    relabel: list[tuple[int, str]] = []
    for class_dir, cls in classes.items():
        for path in ingest.list_images([class_dir], settings.ingest):
            crop = read_or_skip(path, settings, summary.skipped)
            if crop is None:
                continue
            summary.counts[cls] += 1
            matches = stored_matches(run.store, path, crop)
            if matches is None:
                _add_crop(run, path, crop, cls)
                summary.added += 1
            elif matches:
                relabel.extend((crop_id, cls) for crop_id in matches)
            else:
                summary.skipped.append(str(path))
    _relabel(store, relabel, summary, source=run.source, who=run.who)
    return summary


def parse_yolo(text: str, width: int, height: int, *, pad: int = 0,
               origin: str = "") -> list[tuple[BBox, str]]:
    """YOLO lines `class cx cy w h` (normalised) -> boxes in pixels (clipped, padded)."""
    out = []
    for number, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        try:
            cls_index = int(float(parts[0]))
            cx, cy, bw, bh = (float(v) for v in parts[1:5])
            cls = YOLO_CLASSES[cls_index]
        except (ValueError, KeyError, IndexError):
            raise UsageError(f"{origin}:{number}: not a YOLO box line: {line.strip()!r}",
                             hint="expected `class cx cy w h` with class 0 (A), 1 (B) or 2 (C)"
                             ) from None
        x0 = max(0, round((cx - bw / 2) * width) - pad)
        y0 = max(0, round((cy - bh / 2) * height) - pad)
        x1 = min(width, round((cx + bw / 2) * width) + pad)
        y1 = min(height, round((cy + bh / 2) * height) + pad)
        if x1 - x0 < 2 or y1 - y0 < 2:
            log.warning("%s:%d: box too small, skipped", origin, number)
            continue
        out.append((BBox(x0, y0, x1 - x0, y1 - y0), cls))
    return out


@dataclass(frozen=True)
class _BoxPlan:
    """What to do with one spread's YOLO boxes: relabel stored crops, add new ones."""

    relabel: list[tuple[int, str]]
    new: list[tuple[BBox, str]]
    first_index: int  # the index of the first new crop


def _plan_boxes(existing: list[ImageCrop], boxes: list[tuple[BBox, str]]) -> _BoxPlan:
    """A box matching a stored crop (IoU >= 0.5) labels that crop; the others are new."""
    first_index = max((r.index for r in existing), default=-1) + 1
    stored = [(r.id, r.bbox) for r in existing]
    relabel: list[tuple[int, str]] = []
    new: list[tuple[BBox, str]] = []
    for bbox, cls in boxes:
        best = max(stored, default=None, key=lambda s, b=bbox: b.iou(s[1]))  # type: ignore[misc]
        if best is not None and bbox.iou(best[1]) >= 0.5:
            relabel.append((best[0], cls))
        else:
            new.append((bbox, cls))
    return _BoxPlan(relabel, new, first_index)


def _write_box_crops(spread: Spread, plan: _BoxPlan, settings: Settings
                     ) -> list[tuple[BBox, str, str]]:
    """Cut, enhance and write the new boxes' crops: (bbox, file, class) each."""
    directory = crop_dir(settings.paths.crops, spread.sha256)
    rows = []
    for offset, (bbox, cls) in enumerate(plan.new):
        raw = spread.rgb[bbox.y:bbox.y + bbox.h, bbox.x:bbox.x + bbox.w]
        image = enhance_whole(np.ascontiguousarray(raw), settings.enhance)
        rows.append((bbox, write_crop_png(directory, plan.first_index + offset, image), cls))
    return rows


def _import_spread(store: Store, settings: Settings, path: Path, spread: Spread,
                   boxes: list[tuple[BBox, str]], *, sample: str, source: str, who: str,
                   summary: ImportSummary) -> None:
    """Store one spread's boxes as labelled crops (new ones cut, matching ones relabelled)."""
    known = store.find_image(spread.sha256)
    if known is not None:
        plan = _plan_boxes(store.crops_of_image(known.id), boxes)
    else:
        plan = _BoxPlan([], boxes, 0)
    rows = _write_box_crops(spread, plan, settings)
    if known is None:
        image_row = ImageRow(path=str(path.resolve()), sample=sample, sha256=spread.sha256,
                             size=spread.size_bytes, width=spread.width,
                             height=spread.height)
        store.save_labelled_image(image_row, rows, source=source, who=who)
    elif rows:
        store.add_labelled_crops(known.id, rows, source=source, who=who)
    summary.added += len(rows)
    _relabel(store, plan.relabel, summary, source=source, who=who)
    log.info("%s: %d boxes (%d new crops, %d matched stored crops)", path.name, len(boxes),
             len(rows), len(plan.relabel))


def import_yolo(
    store: Store, settings: Settings, images_dir: Path, labels_dir: Path, *, sample: str,
    who: str | None = None,
) -> ImportSummary:
    """Spreads with YOLO box files of the same stem: each box is cut from the spread (with
    the segmenter's padding) and enhanced by the pipeline's own step.

    A spread already stored (processed before, or imported) keeps its crops: a box that
    matches one of them (IoU >= 0.5) labels that crop, the others are added as new crops.
    """
    images_dir, labels_dir = Path(images_dir), Path(labels_dir)
    for d in (images_dir, labels_dir):
        if not d.is_dir():
            raise UsageError(f"{d} is not a folder")
    who = who or default_who()
    source = f"import-yolo:{labels_dir.resolve()}"
    summary = ImportSummary()
    for path in ingest.list_images([images_dir], settings.ingest):
        label_file = labels_dir / f"{path.stem}.txt"
        if not label_file.is_file():
            log.info("%s: no %s, skipped", path, label_file.name)
            continue
        spread = read_or_skip(path, settings, summary.skipped)
        if spread is None:
            continue
        boxes = parse_yolo(label_file.read_text(encoding="utf-8"), spread.width, spread.height,
                           pad=settings.segment.pad, origin=str(label_file))
        for _, cls in boxes:
            summary.counts[cls] += 1
        _import_spread(store, settings, path, spread, boxes, sample=sample, source=source,
                       who=who, summary=summary)
    return summary


CSV_FIELDS = ("crop_id", "class", "sample", "file", "source", "who", "labelled_at")


def export_csv(store: Store, out: TextIO) -> int:
    """Every confirmed label, one row per crop; returns how many rows."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    rows = store.current_labels()
    for r in rows:
        when = datetime.fromtimestamp(r.created_at, UTC).isoformat(timespec="seconds")
        writer.writerow([r.crop_id, r.cls, r.sample, r.file, r.source, r.who, when])
    return len(rows)


def read_csv_labels(lines: Iterable[str], origin: str) -> list[tuple[int, str]]:
    """(crop id, class) pairs from a CSV with a header naming `crop_id` (or `crop`, `id`)
    and `class` (or `label`); other columns are ignored."""
    reader = csv.DictReader(lines)
    fields = {f.strip().lower(): f for f in reader.fieldnames or []}
    id_col = next((fields[k] for k in ("crop_id", "crop", "id") if k in fields), None)
    cls_col = next((fields[k] for k in ("class", "label") if k in fields), None)
    if id_col is None or cls_col is None:
        raise UsageError(f"{origin}: needs a header with crop_id and class columns",
                         hint="as written by `chromowatch labels export-csv`")
    out = []
    for number, row in enumerate(reader, 2):
        try:
            crop_id = int(str(row[id_col]).strip())
        except (TypeError, ValueError):
            raise UsageError(f"{origin}:{number}: crop id {row[id_col]!r} is not a number"
                             ) from None
        cls = str(row[cls_col] or "").strip().upper()
        if cls not in CLASS_NAMES:
            raise UsageError(f"{origin}:{number}: class {row[cls_col]!r} is not A, B or C")
        out.append((crop_id, cls))
    return out


def import_csv(store: Store, path: Path, *, who: str | None = None) -> ImportSummary:
    """Labels from a review done elsewhere: all rows are applied, or none (a bad row or an
    unknown crop id stops the import before anything is written)."""
    with open(path, encoding="utf-8-sig", newline="") as fh:
        items = read_csv_labels(fh, str(path))
    summary = ImportSummary()
    for _, cls in items:
        summary.counts[cls] += 1
    _relabel(store, items, summary, source=f"import-csv:{Path(path).resolve()}",
             who=who or default_who())
    return summary
