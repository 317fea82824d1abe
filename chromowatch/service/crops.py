"""`chromowatch crops import`: single-chromosome crops cut elsewhere, stored as a sample's crops
and classified with the current model (no labels: for labs that crop with other tools, and
for tests).

The crops are stored like `labels import-folder` stores them (training/labels.py): one image
row per file (its content sha256, so the same file imported again, under any name, is one
crop), one crop row with the whole image as its box, the stored image as PNG under
`<data_dir>/crops/` and its pixels' sha256. Every file is read and classified first; then all
new crops and their predictions are written in one transaction, so a failure leaves nothing
half-written.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from chromowatch import ingest
from chromowatch.errors import UsageError
from chromowatch.files import pixels_sha256, remove_files
from chromowatch.pipeline import check_model_fits
from chromowatch.records import CLASS_NAMES, Prediction, Spread
from chromowatch.settings import Settings
from chromowatch.store import ImageRow, Store, StoredCrop
from chromowatch.training import labels

if TYPE_CHECKING:
    from chromowatch.classify.ensemble import Ensemble

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImportedCrop:
    """One imported file as a stored crop: new, or the crop it already was."""

    crop_id: int
    source: str
    prediction: Prediction
    new: bool

    def as_dict(self) -> dict[str, object]:
        return {"crop_id": self.crop_id, "source": self.source,
                "label": self.prediction.label,
                "probs": {k: round(v, 6) for k, v in self.prediction.probs.items()},
                "new": self.new}


@dataclass
class CropImport:
    """What `crops import` did: the crops (in file order), files skipped as unreadable, files
    that were not single crops (a stored spread)."""

    sample: str
    model: str
    crops: list[ImportedCrop] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    @property
    def added(self) -> int:
        return sum(c.new for c in self.crops)

    def line(self) -> str:
        counts = dict.fromkeys(CLASS_NAMES, 0)
        for c in self.crops:
            counts[c.prediction.label] += 1
        per_class = ", ".join(f"{k} {n}" for k, n in counts.items())
        skipped = f", {len(self.skipped)} file(s) skipped" if self.skipped else ""
        return (f"sample {self.sample}: {self.added} new crop(s), "
                f"{len(self.crops) - self.added} already stored{skipped}; "
                f"model {self.model}: {per_class}")


@dataclass
class _Plan:
    """The files read: new crops and stored ones, each (file, its decoded image, the stored
    crop ids or None for a new crop, the image as the model sees it)."""

    files: list[tuple[Path, Spread, list[int] | None, np.ndarray]] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)  # content hashes of the new crops


def _image_files(folder: Path, settings: Settings) -> list[Path]:
    if not folder.is_dir():
        raise UsageError(f"{folder} is not a folder",
                         hint="give a folder of single-chromosome crop images")
    files = ingest.list_images([folder], settings.ingest)
    if not files:
        raise UsageError(f"no crop images in {folder}",
                         hint="give a folder with crop images (" +
                         ", ".join(settings.ingest.extensions) + "), at any depth")
    return files


def _model_view(store: Store, settings: Settings, crop: Spread, *, enhanced: bool,
                matched: bool) -> np.ndarray:
    """The image the model classifies: the stored crop's image. A file matched by its pixels
    (a stored crop file copied) already is that image."""
    if matched and store.find_image(crop.sha256) is None:
        return crop.rgb
    return labels.stored_crop_image(settings, crop, enhanced=enhanced)


def _plan(store: Store, settings: Settings, files: list[Path], *, enhanced: bool,
          skipped: list[str]) -> _Plan:
    """Read every file: a bad one is skipped (listed), one already stored is matched."""
    plan = _Plan()
    for path in files:
        crop = labels.read_or_skip(path, settings, skipped)
        if crop is None:
            continue
        matches = labels.stored_matches(store, path, crop)
        if matches == []:
            skipped.append(str(path))
            continue
        keys = {crop.sha256, pixels_sha256(crop.rgb)}
        if matches is None and keys & plan.seen:
            log.info("%s: the same content as another file of this import; stored once", path)
            continue
        plan.seen |= keys if matches is None else set()
        image = _model_view(store, settings, crop, enhanced=enhanced,
                            matched=matches is not None)
        plan.files.append((path, crop, matches, image))
    return plan


def import_crops(store: Store, settings: Settings, ensemble: Ensemble, folder: Path, *,
                 sample: str, enhanced: bool) -> CropImport:
    """Store the crop images found below `folder` (at any depth) as crops of `sample`
    (created when new) and classify them with `ensemble`.

    A file already stored (the same file, by its bytes, or a stored crop's pixels) is not
    added again: it is reported with its crop id and `new` false, and its prediction by this
    model is stored too. A file that is not a readable image is skipped with a warning naming
    it; the others are imported. Nothing is written before every file is classified; then
    all of it in one transaction.
    """
    check_model_fits(ensemble)
    files = _image_files(Path(folder), settings)
    result = CropImport(sample=sample, model=ensemble.version)
    labels.hash_stored_crops(store, settings)
    plan = _plan(store, settings, files, enhanced=enhanced, skipped=result.skipped)
    predictions = ensemble.predict([image for *_, image in plan.files]) if plan.files else []
    new: list[tuple[ImageRow, list[StoredCrop]]] = []
    known: dict[int, Prediction] = {}
    for (path, crop, matches, image), prediction in zip(plan.files, predictions, strict=True):
        if matches is None:
            image_row, bbox, file = labels.write_crop_file(settings, path, crop, image, sample)
            new.append((image_row, [StoredCrop(0, bbox, -1, frozenset(), file, prediction,
                                               pixels_sha256(image))]))
        else:
            known.update(dict.fromkeys(matches, prediction))
    try:
        image_ids = iter(store.save_images(new, list(known.items())))
    except BaseException:  # nothing was stored: the new crop files go too
        remove_files([crops[0].file for _, crops in new], settings.paths.crops)
        raise
    for (path, _, matches, _), prediction in zip(plan.files, predictions, strict=True):
        ids = matches if matches is not None else [store.crops_of_image(next(image_ids))[0].id]
        result.crops.extend(ImportedCrop(crop_id, str(path), prediction, new=matches is None)
                            for crop_id in ids)
    log.info("%s", result.line())
    return result
